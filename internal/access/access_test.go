package access_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/access"
)

var events = []access.Event{access.Activate, access.Expire, access.Revoke, access.Fail, access.Supersede, access.Approve, access.Deny, access.Schedule, access.Begin}

func TestStates(t *testing.T) {
	want := []access.State{access.PendingApproval, access.Scheduled, access.Pending, access.Active, access.Expired, access.Revoked, access.Failed, access.Superseded, access.Denied}
	if diff := cmp.Diff(want, access.States); diff != "" {
		t.Errorf("States mismatch (-want +got):\n%s", diff)
	}
}

func TestTerminalAndLive(t *testing.T) {
	tests := []struct {
		s        access.State
		terminal bool
	}{
		{access.PendingApproval, false},
		{access.Pending, false},
		{access.Active, false},
		{access.Denied, true},
		{access.Expired, true},
		{access.Revoked, true},
		{access.Failed, true},
		{access.Superseded, true},
		{access.State("bogus"), true},
		{access.State(""), true},
	}
	for _, tt := range tests {
		if got := tt.s.Terminal(); got != tt.terminal {
			t.Errorf("%q.Terminal() = %v, want %v", tt.s, got, tt.terminal)
		}
		if got := tt.s.Live(); got != !tt.terminal {
			t.Errorf("%q.Live() = %v, want %v", tt.s, got, !tt.terminal)
		}
	}
}

// invalid marks a transition that must fail with ErrTransition.
const invalid access.State = "<ErrTransition>"

func TestNext(t *testing.T) {
	tests := []struct {
		s    access.State
		ev   access.Event
		want access.State
	}{
		{access.PendingApproval, access.Approve, access.Pending},
		{access.PendingApproval, access.Deny, access.Denied},
		{access.PendingApproval, access.Activate, invalid},
		{access.PendingApproval, access.Expire, access.Expired},
		{access.PendingApproval, access.Revoke, access.Revoked},
		{access.PendingApproval, access.Fail, access.Failed},
		{access.PendingApproval, access.Supersede, invalid},

		{access.Pending, access.Approve, invalid},
		{access.Pending, access.Deny, access.Denied},
		{access.Active, access.Approve, invalid},
		{access.Active, access.Deny, access.Denied},

		{access.Denied, access.Activate, invalid},
		{access.Denied, access.Expire, invalid},
		{access.Denied, access.Revoke, invalid},
		{access.Denied, access.Fail, invalid},
		{access.Denied, access.Supersede, invalid},
		{access.Denied, access.Approve, invalid},
		{access.Denied, access.Deny, invalid},

		{access.Pending, access.Activate, access.Active},
		{access.Pending, access.Expire, access.Failed},
		{access.Pending, access.Revoke, access.Revoked},
		{access.Pending, access.Fail, access.Failed},
		{access.Pending, access.Supersede, access.Superseded},

		{access.Active, access.Activate, invalid},
		{access.Active, access.Expire, access.Expired},
		{access.Active, access.Revoke, access.Revoked},
		{access.Active, access.Fail, access.Failed},
		{access.Active, access.Supersede, access.Superseded},

		{access.Expired, access.Activate, invalid},
		{access.Expired, access.Expire, invalid},
		{access.Expired, access.Revoke, invalid},
		{access.Expired, access.Fail, invalid},
		{access.Expired, access.Supersede, invalid},
		{access.Expired, access.Approve, invalid},
		{access.Expired, access.Deny, invalid},

		{access.Revoked, access.Activate, invalid},
		{access.Revoked, access.Expire, invalid},
		{access.Revoked, access.Revoke, invalid},
		{access.Revoked, access.Fail, invalid},
		{access.Revoked, access.Supersede, invalid},
		{access.Revoked, access.Approve, invalid},
		{access.Revoked, access.Deny, invalid},

		{access.Failed, access.Activate, invalid},
		{access.Failed, access.Expire, invalid},
		{access.Failed, access.Revoke, invalid},
		{access.Failed, access.Fail, invalid},
		{access.Failed, access.Supersede, invalid},
		{access.Failed, access.Approve, invalid},
		{access.Failed, access.Deny, invalid},

		{access.Superseded, access.Activate, invalid},
		{access.Superseded, access.Expire, invalid},
		{access.Superseded, access.Revoke, invalid},
		{access.Superseded, access.Fail, invalid},
		{access.Superseded, access.Supersede, invalid},
		{access.Superseded, access.Approve, invalid},
		{access.Superseded, access.Deny, invalid},

		// Scheduled requests (issue 15): approved before their start.
		{access.PendingApproval, access.Schedule, access.Scheduled},
		{access.PendingApproval, access.Begin, invalid},
		{access.Scheduled, access.Begin, access.Pending},
		{access.Scheduled, access.Fail, access.Failed},
		{access.Scheduled, access.Expire, access.Expired},
		{access.Scheduled, access.Deny, access.Denied},
		{access.Scheduled, access.Revoke, access.Revoked},
		{access.Scheduled, access.Activate, invalid},
		{access.Scheduled, access.Approve, invalid},
		{access.Scheduled, access.Schedule, invalid},
		{access.Scheduled, access.Supersede, invalid},
		{access.Pending, access.Schedule, invalid},
		{access.Pending, access.Begin, invalid},
		{access.Active, access.Schedule, invalid},
		{access.Active, access.Begin, invalid},
		{access.Expired, access.Schedule, invalid},
		{access.Expired, access.Begin, invalid},
		{access.Revoked, access.Schedule, invalid},
		{access.Revoked, access.Begin, invalid},
		{access.Failed, access.Schedule, invalid},
		{access.Failed, access.Begin, invalid},
		{access.Superseded, access.Schedule, invalid},
		{access.Superseded, access.Begin, invalid},
		{access.Denied, access.Schedule, invalid},
		{access.Denied, access.Begin, invalid},

		// Unknown states and events.
		{access.Pending, access.Event("bogus"), invalid},
		{access.Active, access.Event(""), invalid},
		{access.State("bogus"), access.Activate, invalid},
		{access.State("bogus"), access.Revoke, invalid},
		{access.State(""), access.Supersede, invalid},
	}

	// The table covers every (state, event) pair.
	covered := map[[2]string]bool{}
	for _, tt := range tests {
		covered[[2]string{string(tt.s), string(tt.ev)}] = true
	}
	for _, s := range access.States {
		for _, ev := range events {
			if !covered[[2]string{string(s), string(ev)}] {
				t.Errorf("transition table misses (%s, %s)", s, ev)
			}
		}
	}

	for _, tt := range tests {
		got, err := access.Next(tt.s, tt.ev)
		if tt.want == invalid {
			if !errors.Is(err, access.ErrTransition) {
				t.Errorf("Next(%q, %q) error = %v, want ErrTransition", tt.s, tt.ev, err)
			}
			if got != tt.s {
				t.Errorf("Next(%q, %q) = %q with its error, want the state unchanged", tt.s, tt.ev, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Next(%q, %q) = %q, %v; want %q, nil", tt.s, tt.ev, got, err, tt.want)
		}
	}
}

func TestTerminalStatesStayTerminal(t *testing.T) {
	for _, s := range access.States {
		for _, ev := range events {
			got, err := access.Next(s, ev)
			if s.Terminal() {
				if err == nil || got != s {
					t.Errorf("Next(%q, %q) = %q, %v; a terminal state must not move", s, ev, got, err)
				}
				continue
			}
			// Only approval (or a scheduled start) leads to pending: no
			// event moves a request that holds grants back to it.
			if err == nil && got == access.Pending && !(s == access.PendingApproval && ev == access.Approve) &&
				!(s == access.Scheduled && ev == access.Begin) {
				t.Errorf("Next(%q, %q) = pending", s, ev)
			}
		}
	}
}

// TestNextSequences walks whole lives, including late events after the end.
func TestNextSequences(t *testing.T) {
	tests := []struct {
		name   string
		events []access.Event
		want   access.State
		errAt  int // index of the first event that must fail; -1 for none
	}{
		{"activate then expire", []access.Event{access.Activate, access.Expire}, access.Expired, -1},
		{"activate then revoke", []access.Event{access.Activate, access.Revoke}, access.Revoked, -1},
		{"revoke then late activate", []access.Event{access.Revoke, access.Activate}, access.Revoked, 1},
		{"fail then late activate", []access.Event{access.Fail, access.Activate}, access.Failed, 1},
		{"expire while pending then activate", []access.Event{access.Expire, access.Activate}, access.Failed, 1},
		{"superseded then revoke", []access.Event{access.Activate, access.Supersede, access.Revoke}, access.Superseded, 2},
		{"expired then expire again", []access.Event{access.Activate, access.Expire, access.Expire}, access.Expired, 2},
		{"double activate", []access.Event{access.Activate, access.Activate}, access.Active, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := access.Pending
			firstErr := -1
			for i, ev := range tt.events {
				next, err := access.Next(s, ev)
				if err != nil {
					if !errors.Is(err, access.ErrTransition) {
						t.Fatalf("event %d (%s): error %v is not ErrTransition", i, ev, err)
					}
					if firstErr < 0 {
						firstErr = i
					}
				}
				s = next
			}
			if s != tt.want {
				t.Errorf("final state = %q, want %q", s, tt.want)
			}
			if firstErr != tt.errAt {
				t.Errorf("first failing event = %d, want %d", firstErr, tt.errAt)
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("UTC+5:30", 5*3600+1800), time.FixedZone("UTC-8", -8*3600), time.Local}
	start := time.Date(2024, 2, 28, 23, 30, 0, 123, time.UTC)
	for _, loc := range zones {
		for _, d := range []time.Duration{0, time.Second, time.Hour, 24 * time.Hour, -time.Minute} {
			got := access.Deadline(start.In(loc), d)
			if got.Location() != time.UTC {
				t.Errorf("Deadline(%v, %v).Location() = %v, want UTC", start.In(loc), d, got.Location())
			}
			if want := start.Add(d); !got.Equal(want) {
				t.Errorf("Deadline(%v, %v) = %v, want %v", start.In(loc), d, got, want)
			}
		}
	}
	// Across a leap day, in UTC.
	if got, want := access.Deadline(start, time.Hour), time.Date(2024, 2, 29, 0, 30, 0, 123, time.UTC); got != want {
		t.Errorf("Deadline(%v, 1h) = %v, want %v", start, got, want)
	}
}

func TestExtend(t *testing.T) {
	base := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		current, asked time.Time
		want           time.Time
	}{
		{"later asked wins", base, base.Add(time.Hour), base.Add(time.Hour)},
		{"earlier asked never shortens", base, base.Add(-time.Hour), base},
		{"equal", base, base, base},
		{"one nanosecond later", base, base.Add(time.Nanosecond), base.Add(time.Nanosecond)},
		{"one nanosecond earlier", base, base.Add(-time.Nanosecond), base},
		{"zero asked", base, time.Time{}, base},
		{"zero current", time.Time{}, base, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := access.Extend(tt.current, tt.asked)
			if !got.Equal(tt.want) {
				t.Errorf("Extend(%v, %v) = %v, want %v", tt.current, tt.asked, got, tt.want)
			}
			if got.Before(tt.current) {
				t.Errorf("Extend(%v, %v) = %v shortens the current deadline", tt.current, tt.asked, got)
			}
		})
	}

	// Never shorter than either input, whatever the offsets and zones.
	zone := time.FixedZone("UTC+2", 2*3600)
	for _, cur := range []time.Duration{-time.Hour, 0, time.Minute, time.Hour} {
		for _, ask := range []time.Duration{-2 * time.Hour, -time.Nanosecond, 0, time.Nanosecond, 3 * time.Hour} {
			c, a := base.Add(cur), base.Add(ask).In(zone)
			got := access.Extend(c, a)
			if got.Before(c) || got.Before(a) {
				t.Errorf("Extend(%v, %v) = %v, earlier than an input", c, a, got)
			}
			if !got.Equal(c) && !got.Equal(a) {
				t.Errorf("Extend(%v, %v) = %v, neither input", c, a, got)
			}
		}
	}
}

// TestTransitionTable checks the table's invariants: Next answers exactly
// its rows, nothing leaves a terminal state, and every live state can be
// denied and revoked (so those win every race: whatever state a racing
// approval or activation left, the deny or revoke still applies).
func TestTransitionTable(t *testing.T) {
	rows := map[access.State]map[access.Event]access.State{}
	for _, tr := range access.Transitions() {
		if rows[tr.From] == nil {
			rows[tr.From] = map[access.Event]access.State{}
		}
		if _, dup := rows[tr.From][tr.Event]; dup {
			t.Errorf("two rows for (%s, %s)", tr.From, tr.Event)
		}
		rows[tr.From][tr.Event] = tr.To
	}
	for _, s := range access.States {
		for _, ev := range events {
			got, err := access.Next(s, ev)
			want, ok := rows[s][ev]
			switch {
			case ok && (err != nil || got != want):
				t.Errorf("Next(%s, %s) = %s, %v; the table says %s", s, ev, got, err, want)
			case !ok && !errors.Is(err, access.ErrTransition):
				t.Errorf("Next(%s, %s) = %s, %v; the table has no such row, want ErrTransition", s, ev, got, err)
			}
		}
		if s.Terminal() {
			if len(rows[s]) != 0 {
				t.Errorf("terminal state %s has transitions %v", s, rows[s])
			}
			continue
		}
		for _, ev := range []access.Event{access.Deny, access.Revoke} {
			if to, ok := rows[s][ev]; !ok || !to.Terminal() {
				t.Errorf("live state %s: %s leads to %q, want a terminal state", s, ev, to)
			}
		}
	}
}

func TestStateLists(t *testing.T) {
	if diff := cmp.Diff([]access.State{access.PendingApproval, access.Scheduled, access.Pending, access.Active}, access.LiveStates()); diff != "" {
		t.Errorf("LiveStates mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]access.State{access.Pending, access.Active}, access.GrantStates()); diff != "" {
		t.Errorf("GrantStates mismatch (-want +got):\n%s", diff)
	}
	if got, want := access.Start(0), access.Pending; got != want {
		t.Errorf("Start(0) = %s, want %s", got, want)
	}
	if got, want := access.Start(2), access.PendingApproval; got != want {
		t.Errorf("Start(2) = %s, want %s", got, want)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if got, want := access.ApproveBy(now, time.Hour), now.Add(time.Hour); !got.Equal(want) {
		t.Errorf("ApproveBy = %s, want %s", got, want)
	}
}

// TestScheduledStart: the domain rules of a scheduled start. A start up to
// StartSkew in the past is now; earlier, or more than MaxStartAhead ahead,
// is refused; a request needing no approval with a future start is
// scheduled, and its last approval schedules it before the start and
// approves it from then on; its deadline is start + duration whenever it
// is approved.
func TestScheduledStart(t *testing.T) {
	now := time.Date(2026, 3, 29, 0, 30, 0, 0, time.UTC)
	checks := []struct {
		name  string
		start time.Time
		want  time.Time
		err   error
	}{
		{"none", time.Time{}, time.Time{}, nil},
		{"now", now, time.Time{}, nil},
		{"within the skew", now.Add(-access.StartSkew), time.Time{}, nil},
		{"past the skew", now.Add(-access.StartSkew - time.Second), time.Time{}, access.ErrStartPast},
		{"ahead", now.Add(3 * time.Second), now.Add(3 * time.Second), nil},
		{"at the limit", now.Add(access.MaxStartAhead), now.Add(access.MaxStartAhead), nil},
		{"beyond the limit", now.Add(access.MaxStartAhead + time.Second), time.Time{}, access.ErrStartTooFar},
	}
	for _, c := range checks {
		got, err := access.CheckStart(c.start, now)
		if !errors.Is(err, c.err) || !got.Equal(c.want) {
			t.Errorf("%s: CheckStart = %v, %v; want %v, %v", c.name, got, err, c.want, c.err)
		}
	}
	later := now.Add(time.Hour)
	states := []struct {
		need  int
		start time.Time
		want  access.State
	}{
		{0, time.Time{}, access.Pending},
		{0, later, access.Scheduled},
		{0, now, access.Pending},
		{1, later, access.PendingApproval},
		{1, time.Time{}, access.PendingApproval},
	}
	for _, c := range states {
		if got := access.StartAt(c.need, c.start, now); got != c.want {
			t.Errorf("StartAt(%d, %v) = %s, want %s", c.need, c.start, got, c.want)
		}
	}
	if got := access.ApproveEvent(later, now); got != access.Schedule {
		t.Errorf("approval before the start: %s, want schedule", got)
	}
	if got := access.ApproveEvent(now.Add(-time.Second), now); got != access.Approve {
		t.Errorf("approval after the start: %s, want approve", got)
	}
	if got := access.ApproveEvent(time.Time{}, now); got != access.Approve {
		t.Errorf("approval without a start: %s, want approve", got)
	}
	// Approved 20 minutes into a 1 h window: 40 minutes remain.
	start := now.Add(-20 * time.Minute)
	if got, want := access.GrantDeadline(start, now, time.Hour), now.Add(40*time.Minute); !got.Equal(want) {
		t.Errorf("late approval: deadline %s, want %s", got, want)
	}
	if got, want := access.GrantDeadline(time.Time{}, now, time.Hour), now.Add(time.Hour); !got.Equal(want) {
		t.Errorf("no start: deadline %s, want %s", got, want)
	}
}
