// Package recur is the arithmetic of recurring access (issue 15, item 3): a
// schedule's recurrence (standard five-field cron syntax, through
// github.com/robfig/cron/v3) in an IANA time zone, and what a schedule does
// at an instant: produce its next occurrence, skip the ones whose window
// passed, or wait. It is pure: time comes in as arguments.
//
// Time zones: a recurrence is evaluated on the zone's wall clock, so
// "0 22 * * 1-5" in Europe/Berlin is 22:00 in Berlin in winter and in
// summer. A wall-clock time that does not exist (the hour skipped in
// spring) has no occurrence that day; one that occurs twice (the hour
// repeated in autumn) has one occurrence, the first.
package recur

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Lead is how long before an occurrence's start its request is created: a
// scheduled request, so approvers can approve it before it starts (the
// requester's roles and the policy are checked again at the start).
const Lead = 15 * time.Minute

// ErrNever is a recurrence that has no occurrence (such as 30 February).
var ErrNever = errors.New("the recurrence never occurs")

// Recurrence is a parsed cron specification in a time zone.
type Recurrence struct {
	spec string
	loc  *time.Location
	s    cron.Schedule
}

// Parse reads spec (five fields: minute hour day-of-month month
// day-of-week, or a descriptor such as @daily) in the IANA zone. @every
// (intervals without a wall clock) and zone prefixes in the spec (the zone
// is its own field) are refused.
func Parse(spec, zone string) (Recurrence, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return Recurrence{}, fmt.Errorf("cron: required, such as \"0 22 * * 1-5\" (22:00 Monday to Friday)")
	case strings.HasPrefix(spec, "@every"):
		return Recurrence{}, fmt.Errorf("cron %q: @every is not supported; give minute hour day-of-month month day-of-week", spec)
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return Recurrence{}, fmt.Errorf("cron %q: give the time zone as its own field, not in the expression", spec)
	}
	if strings.TrimSpace(zone) == "" {
		return Recurrence{}, fmt.Errorf("timezone: required, an IANA name such as Europe/Berlin or UTC")
	}
	loc, err := time.LoadLocation(zone)
	if err != nil || zone == "Local" {
		return Recurrence{}, fmt.Errorf("timezone %q: not an IANA time zone name (such as Europe/Berlin or UTC)", zone)
	}
	s, err := cron.ParseStandard(spec)
	if err != nil {
		return Recurrence{}, fmt.Errorf("cron %q: %v (five fields: minute hour day-of-month month day-of-week)", spec, err)
	}
	return Recurrence{spec: spec, loc: loc, s: s}, nil
}

// Spec is the cron expression.
func (r Recurrence) Spec() string { return r.spec }

// Zone is the IANA time zone's name.
func (r Recurrence) Zone() string { return r.loc.String() }

// Next is the first occurrence strictly after after, in UTC, or zero when
// there is none (within the cron library's five-year horizon). An
// occurrence on the same wall-clock minute as after (the autumn hour that
// repeats) is not a new one.
func (r Recurrence) Next(after time.Time) time.Time {
	a := after.In(r.loc)
	n := r.s.Next(a)
	if !n.IsZero() && sameMinute(n, a) {
		n = r.s.Next(n)
	}
	if n.IsZero() {
		return time.Time{}
	}
	return n.UTC()
}

func sameMinute(a, b time.Time) bool {
	ay, am, ad := a.Date()
	by, bm, bd := b.Date()
	return ay == by && am == bm && ad == bd && a.Hour() == b.Hour() && a.Minute() == b.Minute()
}

// First is the first occurrence after now, or ErrNever.
func (r Recurrence) First(now time.Time) (time.Time, error) {
	n := r.Next(now)
	if n.IsZero() {
		return time.Time{}, fmt.Errorf("cron %q in %s: %w", r.spec, r.Zone(), ErrNever)
	}
	return n, nil
}

// Step is what a schedule does at an instant (Due).
type Step struct {
	// Produce: create the request of the occurrence starting at Start
	// (with Start + duration as its deadline: if Start is past, only what
	// remains).
	Produce bool
	Start   time.Time
	// Skipped: occurrences from SkippedFrom on passed whole, unproduced
	// (no server ran): they are not replayed.
	Skipped     bool
	SkippedFrom time.Time
	// Next is the start of the next occurrence not produced yet (zero:
	// none ever again).
	Next time.Time
}

// Due decides, at now, for a schedule whose next unproduced occurrence
// starts at next and lasts d: nothing yet (more than Lead ahead), or
// produce the occurrence — the one at next, or, when next's window passed
// while nothing ran, the first whose window still holds now (fail-closed:
// never a window in the past, a late one only for what remains). Call it
// again with Step.Next until it produces nothing.
func Due(r Recurrence, next, now time.Time, d time.Duration) Step {
	if next.IsZero() || now.Before(next.Add(-Lead)) {
		return Step{Next: next}
	}
	st := Step{Start: next}
	if !now.Before(next.Add(d)) {
		// Its window passed: the first occurrence after now - d is the
		// first whose window has not ended.
		st.Skipped, st.SkippedFrom = true, next
		st.Start = r.Next(now.Add(-d))
		if st.Start.IsZero() || now.Before(st.Start.Add(-Lead)) {
			st.Next = st.Start
			st.Start = time.Time{}
			return st
		}
	}
	st.Produce = true
	st.Next = r.Next(st.Start)
	return st
}
