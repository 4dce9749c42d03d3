// Package access holds the life of an access request: its states and the
// transitions between them. It is pure: no I/O, and time comes in as arguments.
package access

import (
	"errors"
	"fmt"
	"time"
)

// State is where a request is in its life.
type State string

// The states of a request. PendingApproval waits for approvers and holds no
// grant; pending means approved (or auto-approved) and sent to the target's
// agent; active means the agent confirmed the grant is in the kernel. The
// other states are terminal.
const (
	PendingApproval State = "pending_approval"
	Pending         State = "pending"
	Active          State = "active"
	Expired         State = "expired"
	Revoked         State = "revoked"
	Failed          State = "failed"
	Superseded      State = "superseded"
	Denied          State = "denied"
)

// States lists every state, for validation of filters.
var States = []State{PendingApproval, Pending, Active, Expired, Revoked, Failed, Superseded, Denied}

// Terminal reports whether no transition leaves s.
func (s State) Terminal() bool {
	switch s {
	case PendingApproval, Pending, Active:
		return false
	}
	return true
}

// Live reports whether a request in s can still change.
func (s State) Live() bool { return !s.Terminal() }

// HoldsGrants reports whether a request in s has grants in the desired
// firewall state.
func (s State) HoldsGrants() bool { return s == Pending || s == Active }

// Event is something that happens to a request.
type Event string

// The events that move a request.
const (
	Activate  Event = "activate"  // the agent confirmed the grant is in the kernel
	Expire    Event = "expire"    // the deadline passed
	Revoke    Event = "revoke"    // someone ended it early
	Fail      Event = "fail"      // the agent could not, or did not in time, confirm
	Supersede Event = "supersede" // a newer request of the same user took over all its grants
	Approve   Event = "approve"   // the last approval needed arrived
	Deny      Event = "deny"      // an approver refused it
)

// ErrTransition is returned for an event that does not apply to a state.
var ErrTransition = errors.New("invalid transition")

// Next returns the state that ev moves s to. Terminal states stay terminal:
// a revoked request never becomes active again, whatever arrives late.
func Next(s State, ev Event) (State, error) {
	switch {
	case s == PendingApproval && ev == Approve:
		return Pending, nil
	case s == PendingApproval && ev == Expire:
		// Nobody approved in time: it never held access.
		return Expired, nil
	case s.Live() && ev == Deny:
		// A deny wins even after approval: the security-biased outcome.
		return Denied, nil
	case s == Pending && ev == Activate:
		return Active, nil
	case s == Pending && ev == Fail:
		return Failed, nil
	case s == Pending && ev == Expire:
		// A grant that ran out before its agent confirmed it never was
		// really usable: say so rather than calling it expired.
		return Failed, nil
	case s == Active && ev == Expire:
		return Expired, nil
	case s == Active && ev == Fail:
		return Failed, nil
	case s.Live() && ev == Revoke:
		return Revoked, nil
	case s.HoldsGrants() && ev == Supersede:
		return Superseded, nil
	}
	if s.Terminal() {
		return s, fmt.Errorf("%w: request is already %s", ErrTransition, s)
	}
	return s, fmt.Errorf("%w: cannot %s a %s request", ErrTransition, ev, s)
}

// Deadline is when a grant of d starting at start ends.
func Deadline(start time.Time, d time.Duration) time.Time { return start.Add(d).UTC() }

// Extend returns the deadline of a live grant asked for again: the later of
// the two, so asking again never shortens access that is already granted.
func Extend(current, asked time.Time) time.Time {
	if asked.After(current) {
		return asked.UTC()
	}
	return current.UTC()
}
