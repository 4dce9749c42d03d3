package firewall

import (
	"math"
	"time"
)

// UnixNano is t as Unix nanoseconds, saturated: before 1678 it is the
// least int64 (long past), after 2262 the greatest. time.Time.UnixNano
// wraps outside that span instead (a deadline of 1600 becomes one of 2184,
// one of 9999 one of 1816), and every compact deadline (the agent's held
// entries, the Index's host entries, nft elements) is Unix nanoseconds: a
// grant that ended long ago opened until 2116 (TestDeadlinesOutOfRangeFailClosed).
func UnixNano(t time.Time) int64 {
	switch {
	case t.Before(minUnixNano):
		return math.MinInt64
	case t.After(maxUnixNano):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var minUnixNano, maxUnixNano = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)
