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
	// Scheduled: approved (or needing no approval) before its start; it
	// holds no grant until the scheduler starts it (Begin).
	Scheduled  State = "scheduled"
	Pending    State = "pending"
	Active     State = "active"
	Expired    State = "expired"
	Revoked    State = "revoked"
	Failed     State = "failed"
	Superseded State = "superseded"
	Denied     State = "denied"
)

// States lists every state, for validation of filters.
var States = []State{PendingApproval, Scheduled, Pending, Active, Expired, Revoked, Failed, Superseded, Denied}

// Terminal reports whether no transition leaves s: the transition table
// has no row from it.
func (s State) Terminal() bool { return len(table[s]) == 0 }

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
	Schedule  Event = "schedule"  // the last approval needed arrived before the start
	Begin     Event = "begin"     // the start came and the request is still eligible
)

// ErrTransition is returned for an event that does not apply to a state.
var ErrTransition = errors.New("invalid transition")

// Transition is one row of the state machine: event Event moves a request
// in state From to state To.
type Transition struct {
	From  State
	Event Event
	To    State
}

// transitions is the whole state machine, as data: every row a store may
// write. What is not here is refused (Next returns ErrTransition); no row
// leaves a terminal state, so a revoked request never becomes active again,
// whatever arrives late. docs/design.md reproduces it.
var transitions = []Transition{
	{PendingApproval, Approve, Pending},
	// Nobody approved in time: it never held access.
	{PendingApproval, Expire, Expired},
	// A deny wins even after approval: the security-biased outcome.
	{PendingApproval, Deny, Denied},
	{PendingApproval, Revoke, Revoked},
	{PendingApproval, Schedule, Scheduled},
	// The last approval finds the requester no longer may ask (their role
	// or token gone since): it fails, nothing ever opened.
	{PendingApproval, Fail, Failed},

	// A scheduled request holds no grant: at its start it begins (grants
	// enter the desired state) or, no longer eligible (its requester lost
	// the role, the rule went away), fails without ever opening anything.
	// A scheduler that finds it past its deadline (the server was down for
	// the whole window) expires it.
	{Scheduled, Begin, Pending},
	{Scheduled, Fail, Failed},
	{Scheduled, Expire, Expired},
	{Scheduled, Deny, Denied},
	{Scheduled, Revoke, Revoked},

	{Pending, Activate, Active},
	{Pending, Fail, Failed},
	// A grant that ran out before its agent confirmed it never was really
	// usable: say so rather than calling it expired.
	{Pending, Expire, Failed},
	{Pending, Deny, Denied},
	{Pending, Revoke, Revoked},
	{Pending, Supersede, Superseded},

	{Active, Expire, Expired},
	{Active, Fail, Failed},
	{Active, Deny, Denied},
	{Active, Revoke, Revoked},
	{Active, Supersede, Superseded},
}

// table indexes transitions.
var table = func() map[State]map[Event]State {
	m := map[State]map[Event]State{}
	for _, t := range transitions {
		if m[t.From] == nil {
			m[t.From] = map[Event]State{}
		}
		m[t.From][t.Event] = t.To
	}
	return m
}()

// Transitions returns the state machine, one row per allowed transition, in
// a fixed order (for documentation and for the stores' checks).
func Transitions() []Transition { return append([]Transition(nil), transitions...) }

// Next returns the state that ev moves s to, or ErrTransition when the
// table has no such row. Every change of a request's state in a store goes
// through it.
func Next(s State, ev Event) (State, error) {
	if to, ok := table[s][ev]; ok {
		return to, nil
	}
	if s.Terminal() {
		return s, fmt.Errorf("%w: request is already %s", ErrTransition, s)
	}
	return s, fmt.Errorf("%w: cannot %s a %s request", ErrTransition, ev, s)
}

// Start is the state a new request starts in: awaiting approval when its
// rules ask for approvers, otherwise pending (approved at once, sent to the
// agent).
func Start(approvalsRequired int) State {
	if approvalsRequired > 0 {
		return PendingApproval
	}
	return Pending
}

// StartAt is the state a new request starts in when it asks for access
// from start on: awaiting approval when its rules ask for approvers,
// scheduled when it needs none and start is after now, otherwise pending.
func StartAt(approvalsRequired int, start, now time.Time) State {
	if approvalsRequired == 0 && start.After(now) {
		return Scheduled
	}
	return Start(approvalsRequired)
}

// ApproveEvent is the event of the last approval a request starting at
// start receives at now: Schedule before its start, Approve from it on (a
// zero start is "now").
func ApproveEvent(start, now time.Time) Event {
	if start.After(now) {
		return Schedule
	}
	return Approve
}

// Limits on a scheduled start. A start up to StartSkew in the past is
// taken as now (clocks of client and server differ, and "--start +0s"
// must work); earlier is refused. A start more than MaxStartAhead away is
// refused: an approval given today should not open a port months later,
// when nobody remembers why.
const (
	StartSkew     = time.Minute
	MaxStartAhead = 30 * 24 * time.Hour
)

// Errors of CheckStart.
var (
	ErrStartPast   = errors.New("start is in the past")
	ErrStartTooFar = errors.New("start is too far ahead")
)

// CheckStart checks a requested start at now and returns the start to
// record: zero for "now" (no start, or one within StartSkew in the past or
// not after now), else start itself in UTC.
func CheckStart(start, now time.Time) (time.Time, error) {
	switch {
	case start.IsZero():
		return time.Time{}, nil
	case start.Before(now.Add(-StartSkew)):
		return time.Time{}, fmt.Errorf("%w: %s is before now (%s); give a future time, or none to start now",
			ErrStartPast, start.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case start.After(now.Add(MaxStartAhead)):
		return time.Time{}, fmt.Errorf("%w: %s is more than %s ahead; ask again closer to the time",
			ErrStartTooFar, start.UTC().Format(time.RFC3339), fmt.Sprintf("%d days", MaxStartAhead/(24*time.Hour)))
	case !start.After(now):
		return time.Time{}, nil
	}
	return start.UTC(), nil
}

// GrantDeadline is the deadline of a grant of d approved at now for a
// request that starts at start (zero: at approval): d after its start,
// never after approval when it was approved late. A scheduled grant keeps
// its window: approved or started late, it gets only what remains.
func GrantDeadline(start, now time.Time, d time.Duration) time.Time {
	if start.IsZero() {
		return Deadline(now, d)
	}
	return Deadline(start, d)
}

// ApproveBy is when a request created at now stops waiting for its
// approvers and expires (Expire from PendingApproval).
func ApproveBy(now time.Time, timeout time.Duration) time.Time { return now.Add(timeout).UTC() }

// LiveStates lists the states a request can still leave, in States order:
// the stores build their "live" SQL filters from it, never from literals.
func LiveStates() []State { return filterStates(State.Live) }

// GrantStates lists the states that hold grants (HoldsGrants), in States
// order.
func GrantStates() []State { return filterStates(State.HoldsGrants) }

func filterStates(keep func(State) bool) []State {
	var out []State
	for _, s := range States {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// MaxRevision is the highest desired-state revision an agent may claim to
// have applied. Real revisions stay far below it (2^53: a million changes a
// second for 285 years); the bound keeps a server's arithmetic on a claimed
// revision (lifting a target's revision and the database generation above
// it) from overflowing int64, which would saturate the generation and so
// disable the restore guard for every target, and keeps revisions exact as
// JSON numbers in the console.
const MaxRevision = 1 << 53

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

// Removal is the end of a request's grants before their deadline (a
// revocation, a denial after approval, a failure), or the removal of a
// target's policy. The server takes them out of the desired state at once,
// but only the enforcing agent can say when the kernel let them go: until
// it reports a revision at least Revision, the removal is unconfirmed, and
// a grant may still be open until its kernel deadline.
type Removal struct {
	// Revision is the enforcer's desired-state revision that no longer
	// holds the grants (or the policy).
	Revision int64
	// At is when the server removed them.
	At time.Time
	// Deadline is the grants' kernel deadline: the kernel closes them then
	// at the latest, whatever the agent does. Zero for a policy removal,
	// which opens ports and has no deadline.
	Deadline time.Time
	// ConfirmedAt is when the agent reported a revision without them.
	ConfirmedAt *time.Time
	// Confirmable is false when no agent will ever confirm it: the target
	// was removed, so its agent stands down instead of reporting.
	Confirmable bool
}

// RemovalState says whether a removal has reached the kernel.
type RemovalState string

// The states of a removal.
const (
	// RemovalUnconfirmed: the agent has not reported a revision without the
	// grants yet; they may still be open until the deadline.
	RemovalUnconfirmed RemovalState = "unconfirmed"
	// RemovalConfirmed: the agent reported a revision without them.
	RemovalConfirmed RemovalState = "confirmed"
	// RemovalDeadlinePassed: never confirmed, but the deadline passed, so
	// the kernel's own timeout removed the grants.
	RemovalDeadlinePassed RemovalState = "deadline_passed"
)

// State is the removal's state at now.
func (r Removal) State(now time.Time) RemovalState {
	switch {
	case r.ConfirmedAt != nil:
		return RemovalConfirmed
	case !r.Deadline.IsZero() && !now.Before(r.Deadline):
		return RemovalDeadlinePassed
	}
	return RemovalUnconfirmed
}

// ConfirmedBy reports whether an agent that reports it applied revision
// applied confirms the removal: the one rule for revocations, denials,
// failures and policy removals alike.
func (r Removal) ConfirmedBy(applied int64) bool {
	return r.Confirmable && r.Revision > 0 && applied >= r.Revision
}

// NeedsRemovalConfirmation reports whether a request that moves from from to
// to at now, holding grants until deadline, leaves grants in kernels that
// only its agent can take out: it held grants (pending or active), ends
// before their deadline, and they were not handed over to another request.
// An expiry needs none: the kernel removed the element at the deadline on
// its own.
func NeedsRemovalConfirmation(from, to State, deadline, now time.Time) bool {
	return from.HoldsGrants() && to.Terminal() && to != Superseded && now.Before(deadline)
}
