package recur_test

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/recur"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func TestParseRefuses(t *testing.T) {
	tests := []struct{ spec, zone, says string }{
		{"", "UTC", "cron: required"},
		{"0 22 * *", "UTC", "five fields"},
		{"61 22 * * *", "UTC", "cron \"61 22 * * *\""},
		{"@every 1h", "UTC", "@every is not supported"},
		{"CRON_TZ=Europe/Berlin 0 22 * * *", "UTC", "its own field"},
		{"0 22 * * *", "", "timezone: required"},
		{"0 22 * * *", "Mars/Olympus", "not an IANA time zone"},
		{"0 22 * * *", "Local", "not an IANA time zone"},
	}
	for _, tt := range tests {
		_, err := recur.Parse(tt.spec, tt.zone)
		if err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("Parse(%q, %q) = %v, want an error saying %q", tt.spec, tt.zone, err, tt.says)
		}
	}
	r, err := recur.Parse("0 22 30 2 *", "UTC")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.First(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, recur.ErrNever) {
		t.Errorf("30 February: First = %v, want ErrNever", err)
	}
}

// TestNextAcrossDST: occurrences follow the zone's wall clock through both
// changes of 2026 in Berlin and New York; the skipped spring hour has no
// occurrence, the repeated autumn hour one.
func TestNextAcrossDST(t *testing.T) {
	berlin, ny := zone(t, "Europe/Berlin"), zone(t, "America/New_York")
	tests := []struct {
		name, spec string
		loc        *time.Location
		after      time.Time
		want       []time.Time // in loc's wall clock
	}{
		{"weekday evenings across spring forward", "0 22 * * 1-5", berlin, time.Date(2026, 3, 26, 12, 0, 0, 0, berlin), []time.Time{
			time.Date(2026, 3, 26, 22, 0, 0, 0, berlin), time.Date(2026, 3, 27, 22, 0, 0, 0, berlin),
			time.Date(2026, 3, 30, 22, 0, 0, 0, berlin), // Saturday and Sunday (the change) skipped by the expression
		}},
		{"the skipped hour", "30 2 * * *", berlin, time.Date(2026, 3, 28, 12, 0, 0, 0, berlin), []time.Time{
			time.Date(2026, 3, 30, 2, 30, 0, 0, berlin), // 29 March 02:30 does not exist
			time.Date(2026, 3, 31, 2, 30, 0, 0, berlin),
		}},
		{"the repeated hour", "30 2 * * *", berlin, time.Date(2026, 10, 24, 12, 0, 0, 0, berlin), []time.Time{
			time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC), // the first 02:30 (CEST, UTC+2) only
			time.Date(2026, 10, 26, 2, 30, 0, 0, berlin),
		}},
		{"New York in November", "0 9 * * *", ny, time.Date(2026, 10, 31, 12, 0, 0, 0, ny), []time.Time{
			time.Date(2026, 11, 1, 9, 0, 0, 0, ny), time.Date(2026, 11, 2, 9, 0, 0, 0, ny),
		}},
	}
	for _, tt := range tests {
		r, err := recur.Parse(tt.spec, tt.loc.String())
		if err != nil {
			t.Fatal(err)
		}
		at := tt.after
		for i, w := range tt.want {
			at = r.Next(at)
			if !at.Equal(w) || at.Location() != time.UTC {
				t.Errorf("%s: occurrence %d = %v (%v there), want %v", tt.name, i, at, at.In(tt.loc), w)
			}
		}
	}
	// The same expression is an hour apart in UTC across the change.
	r, _ := recur.Parse("0 22 * * *", "Europe/Berlin")
	winter, summer := r.Next(time.Date(2026, 3, 28, 0, 0, 0, 0, time.UTC)), r.Next(time.Date(2026, 3, 29, 12, 0, 0, 0, time.UTC))
	if winter.Hour() != 21 || summer.Hour() != 20 {
		t.Errorf("22:00 in Berlin: %v in winter, %v in summer (UTC); want 21:00 and 20:00", winter, summer)
	}
}

// TestDue: what a schedule does at an instant, including after downtime.
func TestDue(t *testing.T) {
	r, err := recur.Parse("0 22 * * *", "UTC")
	if err != nil {
		t.Fatal(err)
	}
	day := func(d, h, m int) time.Time { return time.Date(2026, 12, d, h, m, 0, 0, time.UTC) }
	const d = 2 * time.Hour
	tests := []struct {
		name      string
		next, now time.Time
		want      recur.Step
	}{
		{"well ahead", day(7, 22, 0), day(7, 12, 0), recur.Step{Next: day(7, 22, 0)}},
		{"within the lead: produced ahead, scheduled", day(7, 22, 0), day(7, 21, 50),
			recur.Step{Produce: true, Start: day(7, 22, 0), Next: day(8, 22, 0)}},
		{"late but in its window: produced, what remains", day(7, 22, 0), day(7, 23, 0),
			recur.Step{Produce: true, Start: day(7, 22, 0), Next: day(8, 22, 0)}},
		{"its window passed: skipped, next is ahead", day(7, 22, 0), day(8, 12, 0),
			recur.Step{Skipped: true, SkippedFrom: day(7, 22, 0), Next: day(8, 22, 0)}},
		{"down for days: only the one in its window", day(1, 22, 0), day(7, 23, 30),
			recur.Step{Produce: true, Start: day(7, 22, 0), Skipped: true, SkippedFrom: day(1, 22, 0), Next: day(8, 22, 0)}},
		{"down for days, back within the lead of the next", day(1, 22, 0), day(8, 21, 50),
			recur.Step{Produce: true, Start: day(8, 22, 0), Skipped: true, SkippedFrom: day(1, 22, 0), Next: day(9, 22, 0)}},
		{"no occurrence left", time.Time{}, day(7, 12, 0), recur.Step{}},
	}
	for _, tt := range tests {
		if got := recur.Due(r, tt.next, tt.now, d); got != tt.want {
			t.Errorf("%s: Due = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

// TestProducerLoop runs a producer as the server runs it, in a synctest
// bubble (the clock moves only when every goroutine sleeps): it sleeps until
// the next occurrence's lead, produces it, and goes down for two days in
// the middle. Across Berlin's spring change it produces each weekday's
// 22:00 once, 15 minutes ahead, none of the days it was down, and the day
// it comes back within a window, that occurrence with what remains.
func TestProducerLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		berlin := zone(t, "Europe/Berlin")
		r, err := recur.Parse("0 22 * * 1-5", "Europe/Berlin")
		if err != nil {
			t.Fatal(err)
		}
		start := time.Date(2026, 3, 25, 12, 0, 0, 0, berlin) // a Wednesday
		time.Sleep(time.Until(start))
		next, _ := r.First(time.Now())
		down := [2]time.Time{time.Date(2026, 3, 30, 12, 0, 0, 0, berlin), time.Date(2026, 3, 31, 23, 0, 0, 0, berlin)}
		type produced struct{ start, at time.Time }
		var got []produced
		for time.Now().Before(time.Date(2026, 4, 3, 0, 0, 0, 0, berlin)) {
			now := time.Now()
			if !now.Before(down[0]) && now.Before(down[1]) {
				time.Sleep(down[1].Sub(now)) // the server is down
				continue
			}
			st := recur.Due(r, next, now, 2*time.Hour)
			if st.Produce {
				got = append(got, produced{st.Start, now})
			}
			next = st.Next
			if !st.Produce {
				time.Sleep(max(next.Add(-recur.Lead).Sub(now), time.Second))
			}
		}
		want := []produced{
			{time.Date(2026, 3, 25, 22, 0, 0, 0, berlin), time.Date(2026, 3, 25, 21, 45, 0, 0, berlin)},
			{time.Date(2026, 3, 26, 22, 0, 0, 0, berlin), time.Date(2026, 3, 26, 21, 45, 0, 0, berlin)},
			{time.Date(2026, 3, 27, 22, 0, 0, 0, berlin), time.Date(2026, 3, 27, 21, 45, 0, 0, berlin)},
			// Monday 30 (after the change) was missed: not replayed.
			// Tuesday 31: back at 23:00, inside 22:00-24:00: produced late.
			{time.Date(2026, 3, 31, 22, 0, 0, 0, berlin), time.Date(2026, 3, 31, 23, 0, 0, 0, berlin)},
			{time.Date(2026, 4, 1, 22, 0, 0, 0, berlin), time.Date(2026, 4, 1, 21, 45, 0, 0, berlin)},
			{time.Date(2026, 4, 2, 22, 0, 0, 0, berlin), time.Date(2026, 4, 2, 21, 45, 0, 0, berlin)},
		}
		if len(got) != len(want) {
			t.Fatalf("produced %d occurrences, want %d: %v", len(got), len(want), got)
		}
		for i := range want {
			if !got[i].start.Equal(want[i].start) || !got[i].at.Equal(want[i].at) {
				t.Errorf("occurrence %d: start %v produced at %v, want %v at %v", i,
					got[i].start.In(berlin), got[i].at.In(berlin), want[i].start, want[i].at)
			}
		}
	})
}
