package api

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// failureLimiter limits failed logins per source: a token bucket per key that
// holds burst tokens and regains one every per. Each failure takes a token;
// a source with none left is over its limit until one comes back. Successes
// cost nothing and are never limited: the limiter only decides how a
// failure is answered (401 and audited, or 429 and counted), never whether
// a valid credential is accepted. It takes now as an argument, so tests
// need no clock. A nil limiter limits nothing.
//
// Each bucket is a golang.org/x/time/rate.Limiter (driven with explicit
// times: AllowN and TokensAt); this type adds what rate does not keep: one
// bucket per source, a bound on their number, and the count of refusals.
type failureLimiter struct {
	burst int
	per   time.Duration
	// maxKeys bounds memory: beyond it, full buckets (which limit nothing)
	// are dropped, and if that is not enough a tenth of the others (prune).
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim *rate.Limiter
	// refused counts the failures answered 429 (not recorded) since the
	// last recorded one.
	refused int
}

func newFailureLimiter(burst int, per time.Duration) *failureLimiter {
	return &failureLimiter{burst: burst, per: per, maxKeys: 100_000, buckets: map[string]*bucket{}}
}

// Wait returns how long key must wait before its next failure is recorded
// again; 0 means it is within its limit.
func (l *failureLimiter) Wait(key string, now time.Time) time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return 0
	}
	return l.wait(b, now)
}

// wait is the time until b holds a whole token again, rounded to the
// millisecond (rate counts tokens in floating point).
func (l *failureLimiter) wait(b *bucket, now time.Time) time.Duration {
	missing := 1 - b.lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing * float64(l.per)).Round(time.Millisecond)
}

// Fail takes a failure of key. Within its limit the failure is recorded
// (it takes a token) and Fail returns wait 0 and the number of failures
// refused since the last recorded one, for the caller to audit with it.
// Over its limit the failure is only counted, and Fail returns how long
// the source must wait: such failures take no token (a source that keeps
// failing regains one every per, and one failure in each period is
// recorded with the count of those refused before it).
func (l *failureLimiter) Fail(key string, now time.Time) (wait time.Duration, refusedBefore int) {
	if l == nil {
		return 0, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.prune(now)
		}
		b = &bucket{lim: rate.NewLimiter(rate.Every(l.per), l.burst)}
		l.buckets[key] = b
	}
	if !b.lim.AllowN(now, 1) {
		b.refused++
		return max(l.wait(b, now), time.Millisecond), 0
	}
	refusedBefore, b.refused = b.refused, 0
	return 0, refusedBefore
}

// prune drops full buckets, then (under a flood of sources) the tenth of
// the buckets that are nearest to full. Dropping a tenth at once, not the
// one nearest, keeps the cost of a flood of new sources at an amortized
// O(log n) each: otherwise, with the table full of buckets that all limit
// something, every new source would scan the whole table under the lock
// that every failed login takes.
func (l *failureLimiter) prune(now time.Time) {
	tokens := make(map[string]float64, len(l.buckets))
	for k, b := range l.buckets {
		if tokens[k] = b.lim.TokensAt(now); tokens[k] >= float64(l.burst) {
			delete(l.buckets, k)
			delete(tokens, k)
		}
	}
	if len(l.buckets) < l.maxKeys {
		return
	}
	keys := make([]string, 0, len(l.buckets))
	for k := range l.buckets {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(tokens[b], tokens[a]) })
	for _, k := range keys[:len(keys)-l.maxKeys*9/10] {
		delete(l.buckets, k)
	}
}

// sourceKey is the limiter's key for a client address: the address for
// IPv4, its /64 for IPv6 (one host commonly holds a whole /64).
func sourceKey(addr netip.Addr) string {
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
