package access_test

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
)

func TestNeedsRemovalConfirmation(t *testing.T) {
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Hour), now.Add(-time.Second)
	tests := []struct {
		from, to access.State
		deadline time.Time
		want     bool
	}{
		{access.Active, access.Revoked, later, true},
		{access.Pending, access.Revoked, later, true}, // sent to the agent, maybe applied
		{access.Active, access.Denied, later, true},   // denied after approval
		{access.Pending, access.Failed, later, true},  // timed out: the report may have been lost
		{access.Active, access.Failed, later, true},
		{access.Active, access.Revoked, now, false},            // the kernel closed it at the deadline
		{access.Active, access.Expired, earlier, false},        // expiry: the kernel's own timeout
		{access.Pending, access.Failed, earlier, false},        // ran out before it was confirmed
		{access.Active, access.Superseded, later, false},       // the grant moved on, not removed
		{access.PendingApproval, access.Revoked, later, false}, // never held a grant
		{access.PendingApproval, access.Denied, later, false},
		{access.Pending, access.Active, later, false}, // not an end
	}
	for _, tt := range tests {
		if got := access.NeedsRemovalConfirmation(tt.from, tt.to, tt.deadline, now); got != tt.want {
			t.Errorf("NeedsRemovalConfirmation(%s -> %s, deadline %v) = %v, want %v", tt.from, tt.to, tt.deadline.Sub(now), got, tt.want)
		}
	}
}

func TestRemoval(t *testing.T) {
	now := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	confirmed := now.Add(-time.Minute)
	tests := []struct {
		name    string
		r       access.Removal
		applied int64
		wantBy  bool
		want    access.RemovalState
	}{
		{"applied older revision", access.Removal{Revision: 7, Deadline: now.Add(time.Hour), Confirmable: true}, 6, false, access.RemovalUnconfirmed},
		{"applied that revision", access.Removal{Revision: 7, Deadline: now.Add(time.Hour), Confirmable: true}, 7, true, access.RemovalUnconfirmed},
		{"applied a later one", access.Removal{Revision: 7, Deadline: now.Add(time.Hour), Confirmable: true}, 9, true, access.RemovalUnconfirmed},
		{"target removed: no agent confirms", access.Removal{Revision: 7, Deadline: now.Add(time.Hour)}, 9, false, access.RemovalUnconfirmed},
		{"deadline passed", access.Removal{Revision: 7, Deadline: now, Confirmable: true}, 0, false, access.RemovalDeadlinePassed},
		{"confirmed", access.Removal{Revision: 7, Deadline: now, ConfirmedAt: &confirmed, Confirmable: true}, 0, false, access.RemovalConfirmed},
		{"policy removal has no deadline", access.Removal{Revision: 7, Confirmable: true}, 0, false, access.RemovalUnconfirmed},
		{"no revision", access.Removal{Confirmable: true, Deadline: now.Add(time.Hour)}, 5, false, access.RemovalUnconfirmed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.ConfirmedBy(tt.applied); got != tt.wantBy {
				t.Errorf("ConfirmedBy(%d) = %v, want %v", tt.applied, got, tt.wantBy)
			}
			if got := tt.r.State(now); got != tt.want {
				t.Errorf("State = %s, want %s", got, tt.want)
			}
		})
	}
}
