package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A time window says when a port rule may be granted: on which weekdays,
// from which wall-clock time to which, in which time zone. It is written
//
//	DAYS HH:MM-HH:MM ZONE
//
// for example "Mon-Fri 08:00-18:00 Europe/Berlin" or "Sat,Sun 10:00-14:00 UTC":
//
//   - DAYS is a comma-separated list of weekdays (Mon Tue Wed Thu Fri Sat
//     Sun, any case) and forward ranges of them ("Mon-Fri", "Mon-Wed,Fri");
//     a range never wraps past Sunday (write "Fri-Sun,Mon"), so a reversed
//     range is a typo, not a week.
//   - The times are wall-clock times in the zone, HH:MM from 00:00 to 23:59;
//     the end may also be 24:00 (midnight at the end of the day). An end
//     before the start is an overnight window: "Mon-Fri 22:00-06:00" opens
//     Monday 22:00 and closes Tuesday 06:00, and so on; the days name the
//     day a window opens. Start and end may not be equal.
//   - ZONE is an IANA time zone name ("Europe/Berlin") or "UTC"; it is
//     required, since a server's local zone is not something a policy should
//     depend on.
//
// Across daylight-saving changes the wall-clock times hold: a window
// "08:00-18:00" is ten hours long on most days, and a window that spans
// the change is an hour shorter (spring forward) or longer (fall back). A
// wall time that does not exist means the moment the clocks jump past it:
// 02:30 on Berlin's spring-forward day is 03:00 CEST, so a window
// "02:00-02:59" is empty that night and one ending at 02:30 ends at the
// jump (wallTime says why). A wall time that happens twice means the
// instant Go's time.Date gives it, which for Europe/Berlin is the
// standard-time one: 02:30 on the fall-back day is the second 02:30 (CET).
// TestWindowsAcrossDST pins both, so a change in Go would show.
type Window struct {
	// Days holds the weekdays the window opens on, indexed by time.Weekday.
	Days [7]bool
	// Start and End are minutes after midnight; End is in (0, 1440], and
	// End <= Start means the window ends on the next day.
	Start, End int
	// Loc is the window's time zone.
	Loc *time.Location
}

var dayNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// weekOrder lists the weekdays Monday first, the order ranges run in.
var weekOrder = [7]time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday, time.Saturday, time.Sunday}

func parseDay(s string) (int, bool) {
	for i, n := range weekOrder {
		if strings.EqualFold(s, dayNames[n]) {
			return i, true // position in weekOrder
		}
	}
	return 0, false
}

// ParseWindow reads a window written "DAYS HH:MM-HH:MM ZONE". The error
// says what is wrong in words a policy author can act on.
func ParseWindow(s string) (Window, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return Window{}, fmt.Errorf("%q: write a window as DAYS HH:MM-HH:MM ZONE, such as \"Mon-Fri 08:00-18:00 Europe/Berlin\"", s)
	}
	var w Window
	for _, part := range strings.Split(f[0], ",") {
		from, to, isRange := strings.Cut(part, "-")
		a, ok := parseDay(from)
		if !ok {
			return Window{}, fmt.Errorf("%q: %q is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", s, from)
		}
		b := a
		if isRange {
			if b, ok = parseDay(to); !ok {
				return Window{}, fmt.Errorf("%q: %q is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)", s, to)
			}
			if b < a {
				head := "Mon"
				if b > 0 {
					head += "-" + dayNames[weekOrder[b]]
				}
				return Window{}, fmt.Errorf("%q: day range %s runs backwards; ranges go from Mon towards Sun (write %s-Sun,%s)", s, part, dayNames[weekOrder[a]], head)
			}
		}
		for i := a; i <= b; i++ {
			if w.Days[weekOrder[i]] {
				return Window{}, fmt.Errorf("%q: %s is named twice", s, dayNames[weekOrder[i]])
			}
			w.Days[weekOrder[i]] = true
		}
	}
	start, end, ok := strings.Cut(f[1], "-")
	if !ok {
		return Window{}, fmt.Errorf("%q: write the times as HH:MM-HH:MM, such as 08:00-18:00", s)
	}
	var err error
	if w.Start, err = parseClock(start, false); err != nil {
		return Window{}, fmt.Errorf("%q: start %w", s, err)
	}
	if w.End, err = parseClock(end, true); err != nil {
		return Window{}, fmt.Errorf("%q: end %w", s, err)
	}
	if w.Start == w.End {
		return Window{}, fmt.Errorf("%q: the window starts and ends at the same time; an end before the start means overnight (22:00-06:00), 00:00-24:00 the whole day", s)
	}
	switch z := f[2]; {
	case z == "UTC":
		w.Loc = time.UTC
	case strings.EqualFold(z, "local") || !strings.Contains(z, "/"):
		return Window{}, fmt.Errorf("%q: time zone %q: name an IANA zone such as Europe/Berlin, or UTC", s, z)
	default:
		loc, err := time.LoadLocation(z)
		if err != nil {
			return Window{}, fmt.Errorf("%q: time zone %q is not a known IANA zone (such as Europe/Berlin), or write UTC", s, z)
		}
		w.Loc = loc
	}
	return w, nil
}

// parseClock reads HH:MM as minutes after midnight; 24:00 only as an end.
func parseClock(s string, end bool) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	// Two ASCII digits each: strconv.Atoi alone would take "+8" for 08.
	digits := func(x string) bool { return len(x) == 2 && x[0] >= '0' && x[0] <= '9' && x[1] >= '0' && x[1] <= '9' }
	if !ok || !digits(h) || !digits(m) {
		return 0, fmt.Errorf("%q is not a time HH:MM", s)
	}
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	switch {
	case err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59:
		return 0, fmt.Errorf("%q is not a time HH:MM", s)
	case hh == 24 && mm == 0 && end:
		return 1440, nil
	case hh > 23:
		return 0, fmt.Errorf("%q is not a time from 00:00 to 23:59 (24:00 only as an end)", s)
	}
	return hh*60 + mm, nil
}

// String writes the window in its canonical form: days as Monday-first
// ranges ("Mon-Fri", "Mon,Wed,Sat-Sun"), zero-padded times, the zone's name.
func (w Window) String() string {
	var parts []string
	for i := 0; i < 7; {
		if !w.Days[weekOrder[i]] {
			i++
			continue
		}
		j := i
		for j+1 < 7 && w.Days[weekOrder[j+1]] {
			j++
		}
		switch {
		case j == i:
			parts = append(parts, dayNames[weekOrder[i]])
		case j == i+1:
			parts = append(parts, dayNames[weekOrder[i]], dayNames[weekOrder[j]])
		default:
			parts = append(parts, dayNames[weekOrder[i]]+"-"+dayNames[weekOrder[j]])
		}
		i = j + 1
	}
	return fmt.Sprintf("%s %02d:%02d-%02d:%02d %s", strings.Join(parts, ","), w.Start/60, w.Start%60, w.End/60, w.End%60, w.Loc)
}

// occurrence returns the window's span that opens on the local date of day
// (any instant on that date), and whether the window opens on that weekday.
func (w Window) occurrence(y int, m time.Month, d int) (from, to time.Time, ok bool) {
	day := time.Date(y, m, d, 12, 0, 0, 0, w.Loc)
	if !w.Days[day.Weekday()] {
		return time.Time{}, time.Time{}, false
	}
	from = wallTime(y, m, d, w.Start, w.Loc)
	endDay := d
	if w.End <= w.Start {
		endDay++
	}
	to = wallTime(y, m, endDay, w.End, w.Loc)
	return from, to, to.After(from)
}

// wallTime is the instant a wall clock in loc shows minute (after midnight)
// of the given date. A time that happens twice (fall back) is Go's reading
// (time.Date; the second one for Europe/Berlin). A time that does not exist
// (skipped by a spring-forward jump) is the moment of the jump: the first
// instant the clock shows it or later. Go's time.Date would move such a
// time past the jump by the offset's change (02:30 in Berlin's gap as
// 03:30 CEST, but 03:00 as 03:00 CEST), so a window ending at 02:59 would
// stay open after one ending at 03:00 closed, and a wall-clock comparison
// of windows (windowsWiden) would call a change narrower that admits more.
// Reading gap times as the jump keeps instants in the order of the wall
// times (TestCompareWindowsAgreesWithOpenAt).
func wallTime(y int, m time.Month, d, minute int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, minute/60, minute%60, 0, 0, loc)
	want := time.Date(y, m, d, minute/60, minute%60, 0, 0, time.UTC)
	got := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	switch {
	case got.After(want):
		// Moved past the jump: the jump is where t's zone period starts.
		if start, _ := t.ZoneBounds(); !start.IsZero() {
			return start
		}
	case got.Before(want):
		// Moved before the jump: the jump is where t's zone period ends.
		if _, end := t.ZoneBounds(); !end.IsZero() {
			return end
		}
	}
	return t
}

// spans returns the window's occurrences that may contain or follow at
// within a week: those opening from the day before at's local date to
// eight days after.
func (w Window) spans(at time.Time) [][2]time.Time {
	l := at.In(w.Loc)
	var out [][2]time.Time
	for k := -1; k <= 8; k++ {
		if f, t, ok := w.occurrence(l.Year(), l.Month(), l.Day()+k); ok {
			out = append(out, [2]time.Time{f, t})
		}
	}
	return out
}

// Windows is the set of windows of a rule: a request may start while any
// one of them is open.
type Windows []Window

// ParseWindows parses each window; the error is a *FieldError naming the
// bad entry under field.
func ParseWindows(field string, ss []string) (Windows, error) {
	out := make(Windows, 0, len(ss))
	for i, s := range ss {
		w, err := ParseWindow(s)
		if err != nil {
			return nil, &FieldError{fmt.Sprintf("%s[%d]", field, i), err.Error()}
		}
		out = append(out, w)
	}
	return out, nil
}

// OpenAt reports whether at lies inside one of the windows and, if so,
// when access must end: the end of the window, followed on through any
// window that opens before (or exactly when) it closes, so that adjoining
// windows ("08:00-12:00" and "12:00-18:00") clip at 18:00, not at noon.
// An empty set of windows is always open (end is the zero time).
func (ws Windows) OpenAt(at time.Time) (open bool, end time.Time) {
	if len(ws) == 0 {
		return true, time.Time{}
	}
	var all [][2]time.Time
	for _, w := range ws {
		all = append(all, w.spans(at)...)
	}
	for _, s := range all {
		if !at.Before(s[0]) && at.Before(s[1]) && s[1].After(end) {
			open, end = true, s[1]
		}
	}
	if !open {
		return false, time.Time{}
	}
	// Follow adjoining or overlapping spans. Each pass extends end or stops;
	// spans are finite, so this ends.
	for grew := true; grew; {
		grew = false
		for _, s := range all {
			if !end.Before(s[0]) && end.Before(s[1]) {
				end, grew = s[1], true
			}
		}
	}
	return true, end.UTC()
}

// NextOpening returns the first instant after at when one of the windows
// opens (the zero time for no windows). Every window opens at least once a
// week, so one is always found.
func (ws Windows) NextOpening(at time.Time) time.Time {
	var next time.Time
	for _, w := range ws {
		for _, s := range w.spans(at) {
			if s[0].After(at) && (next.IsZero() || s[0].Before(next)) {
				next = s[0]
			}
		}
	}
	return next
}

// describeOpening writes an opening time for a refusal: in the window's
// zone and in UTC, "Mon 2026-03-30 08:00 CEST (06:00 UTC)".
func describeOpening(t time.Time, loc *time.Location) string {
	l := t.In(loc)
	return fmt.Sprintf("%s (%s UTC)", l.Format("Mon 2006-01-02 15:04 MST"), t.UTC().Format("2006-01-02 15:04"))
}

// weekMinutes marks the minutes of the week (Monday 00:00 first, in the
// window's own wall time) that w covers, into m.
func (w Window) weekMinutes(m *[7 * 1440]bool) {
	for i, d := range weekOrder {
		if !w.Days[d] {
			continue
		}
		end := w.End
		if end <= w.Start {
			end += 1440
		}
		for x := w.Start; x < end; x++ {
			m[(i*1440+x)%(7*1440)] = true
		}
	}
}

// windowsWiden reports whether the windows to admit a start time that from
// refused. No windows means always open. It is exact for windows in the
// same zone (the wall-clock minutes of the week), and calls any window in
// a zone the old set does not use wider: comparing across zones would
// depend on the date, and a policy change that might weaken the gate is
// better flagged than waved through.
func windowsWiden(from, to []string) bool {
	if len(to) == 0 {
		return len(from) > 0
	}
	if len(from) == 0 {
		return false
	}
	old, err1 := ParseWindows("", from)
	nw, err2 := ParseWindows("", to)
	if err1 != nil || err2 != nil {
		return !slices.Equal(from, to)
	}
	covered := map[string]*[7 * 1440]bool{}
	for _, w := range old {
		m := covered[w.Loc.String()]
		if m == nil {
			m = new([7 * 1440]bool)
			covered[w.Loc.String()] = m
		}
		w.weekMinutes(m)
	}
	for _, w := range nw {
		m := covered[w.Loc.String()]
		if m == nil {
			return true
		}
		var mine [7 * 1440]bool
		w.weekMinutes(&mine)
		for i, in := range mine {
			if in && !m[i] {
				return true
			}
		}
	}
	return false
}

// CheckWindows decides whether a grant of the ports asked at at may start,
// and until when the windows let it last. It returns the earliest window
// end among the ports' rules that have windows (limited false when none
// has), or a *DenyError naming the first rule whose windows are all closed,
// with the next time one opens.
func (pol Policy) CheckWindows(ports []Port, at time.Time) (end time.Time, limited bool, err error) {
	for _, p := range ports {
		r, ok := pol.Rule(p)
		if !ok || len(r.Windows) == 0 {
			continue
		}
		ws, perr := ParseWindows("windows", r.Windows)
		if perr != nil {
			return time.Time{}, false, &DenyError{Rule: p.String(), Reason: "the rule's time windows are invalid: " + perr.Error()}
		}
		open, e := ws.OpenAt(at)
		if !open {
			next := ws.NextOpening(at)
			return time.Time{}, false, &DenyError{Rule: p.String(), Reason: fmt.Sprintf("outside the rule's time windows (%s); the next opens %s",
				strings.Join(r.Windows, "; "), describeOpening(next, ws[indexOpening(ws, next)].Loc)), NextOpening: next.UTC()}
		}
		if !limited || e.Before(end) {
			end, limited = e, true
		}
	}
	return end, limited, nil
}

// indexOpening returns the index of the window that opens at t (0 if none).
func indexOpening(ws Windows, t time.Time) int {
	for i, w := range ws {
		for _, s := range w.spans(t.Add(-time.Minute)) {
			if s[0].Equal(t) {
				return i
			}
		}
	}
	return 0
}

// ClipDeadline returns the deadline of a grant of d starting at at, cut to
// end when the windows limit it, and whether it was cut.
func ClipDeadline(at time.Time, d time.Duration, end time.Time, limited bool) (time.Time, bool) {
	asked := at.Add(d).UTC()
	if limited && end.Before(asked) {
		return end.UTC(), true
	}
	return asked, false
}
