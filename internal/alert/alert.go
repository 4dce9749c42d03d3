// Package alert holds the rules that turn what enforcers observe into
// alerts: pure functions of counts and times (no I/O, now as an argument),
// which the store calls inside the transaction that records the counts.
package alert

import "time"

// BruteForceWindow is the span over which blocked attempts from one source
// on one target are added up, and the least time between two alerts about
// the same source and target.
const BruteForceWindow = time.Hour

// BruteForce reports whether attempts blocked attempts from one source on
// one target within BruteForceWindow before now raise a "possible brute
// force" alert, given the last such alert about them (zero: none). A
// threshold of 0 or less never alerts; a source is alerted about at most
// once per window, so an ongoing attack does not flood the trail.
func BruteForce(attempts, threshold int, lastAlert, now time.Time) bool {
	if threshold <= 0 || attempts < threshold {
		return false
	}
	return lastAlert.IsZero() || !lastAlert.After(now.Add(-BruteForceWindow))
}
