package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
)

// StartScheduled starts the scheduled requests whose start has come at now,
// at most sweepBatch per transaction, and returns how many it moved. Each
// is decided again as if asked now, with what holds now: the requester's
// roles (authz, with the principals and token limit recorded at the ask),
// the target's policy (limits.Evaluate), and the approvals its rules ask
// for now. An eligible one begins (its grants enter the desired state with
// the deadline start + duration, so a late start gets only what remains);
// one that is no longer eligible fails without ever holding a grant, and
// the audit event says why; one whose whole window passed while nothing
// ran (the server was down) expires, never replayed. The sweeper runs it
// before each sweep (it wakes at the next start: NextDeadline).
func (s *Store) StartScheduled(ctx context.Context, limits policy.Limits, now time.Time) (int, error) {
	total := 0
	for {
		n, more, err := s.startSomeScheduled(ctx, limits, now)
		total += n
		if err != nil {
			return total, fmt.Errorf("starting scheduled requests: %w", err)
		}
		if !more {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

func (s *Store) startSomeScheduled(ctx context.Context, limits policy.Limits, now time.Time) (n int, more bool, err error) {
	var changed []string
	err = s.tx(ctx, func(tx *sql.Tx) error {
		changed, n, more = nil, 0, false // the function may run again (group commit)
		rows, err := tx.QueryContext(ctx, `SELECT `+requestColumns+`, subject FROM requests
			WHERE state = `+stateScheduled+` AND starts_at <= $1 ORDER BY starts_at, id LIMIT `+fmt.Sprint(sweepBatch+1), ms(now))
		if err != nil {
			return fmt.Errorf("selecting scheduled requests due: %w", err)
		}
		type due struct {
			r       Request
			subject string
		}
		var ds []due
		for rows.Next() {
			var d due
			sc := scanFunc(func(dest ...any) error { return rows.Scan(append(dest, &d.subject)...) })
			if d.r, err = scanRequest(sc); err != nil {
				rows.Close()
				return fmt.Errorf("reading scheduled request: %w", err)
			}
			ds = append(ds, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("selecting scheduled requests due: %w", err)
		}
		if len(ds) > sweepBatch {
			ds, more = ds[:sweepBatch], true
		}
		if len(ds) == 0 {
			return nil
		}
		bindings, err := listBindings(ctx, tx)
		if err != nil {
			return err
		}
		sys := Actor{Name: audit.System}
		for _, d := range ds {
			r := d.r
			if !now.Before(r.ExpiresAt) {
				if err := s.endLiveRequests(ctx, tx, `id = $1`, []any{r.ID}, access.Expire,
					"its whole window passed before it could start (was the server down?); nothing was opened", sys, audit.RequestExpired, now); err != nil {
					return err
				}
				n++
				continue
			}
			t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, r.Target))
			if err != nil {
				return fmt.Errorf("reading target %s of %s: %w", r.Target, r.ID, err)
			}
			approvals, err := approvalsOf(ctx, tx, r.ID)
			if err != nil {
				return err
			}
			tok, err := readTokenStanding(ctx, tx, d.subject)
			if err != nil {
				return err
			}
			if why := ineligibleAtStart(r, d.subject, tok, t, bindings, approvals, limits, now); why != "" {
				if err := s.endLiveRequests(ctx, tx, `id = $1`, []any{r.ID}, access.Fail,
					"not started: "+why+"; nothing was opened", sys, audit.RequestFailed, now); err != nil {
					return err
				}
				n++
				continue
			}
			if _, err := s.grantRequest(ctx, tx, r.ID, sys, now); err != nil {
				return err
			}
			if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.RequestStarted, Target: r.Target, RequestID: r.ID,
				Details: map[string]any{"starts_at": r.StartsAt.UTC().Format(time.RFC3339Nano), "expires_at": r.ExpiresAt.UTC().Format(time.RFC3339Nano)}}); err != nil {
				return err
			}
			changed = append(changed, r.Target)
			n++
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	if len(changed) > 0 {
		s.changed(changed...)
	}
	return n, more, nil
}

// ineligibleAtStart says why scheduled request r may no longer start on
// target t ("" when it may): the same decisions as at the ask, made again
// with today's bindings and policy, and its approvals tallied against the
// approval rules of today's policy — the number and the groups: a rule
// that now wants a security approver does not start on the approvals of
// two dba members (TestSQLite/ScheduledGroupsRecheck). Each approval
// counts only if its approver, with the principals and token limit
// recorded when approving, still may approve on t with today's bindings,
// and for the groups or roles they still hold: an approver unbound since
// counts for nothing, as does an approval whose approver was not recorded
// (TestSQLite/ScheduledApproverRecheck).
func ineligibleAtStart(r Request, subject string, tok tokenStanding, t Target, bindings []authz.Binding, approvals []approval, limits policy.Limits, now time.Time) string {
	if why := requesterMayNot(r, subject, t, bindings, tok, now); why != "" {
		return why
	}
	var pol policy.Policy
	if t.Policy != nil {
		pol = *t.Policy
	}
	if err := limits.Evaluate(pol, policy.Request{Ports: r.Ports, Source: r.Source, Duration: r.Duration, Reason: r.Reason, At: now}); err != nil {
		return "the target's policy refuses it now: " + err.Error()
	}
	if need := pol.ApprovalsRequired(r.Ports); need > r.ApprovalsRequired {
		return fmt.Sprintf("its rules now ask for %d approvals, it had %d", need, r.ApprovalsRequired)
	}
	// The groups an approval counted for were recorded when it was given,
	// among the request's groups then: a group added since is filled by
	// none of them.
	at := &authz.Target{Name: t.Name, Labels: t.Labels}
	votes, lapsed := approvalsStanding(approvals, bindings, at)
	if tally := access.Decide(pol.ApprovalsRequired(r.Ports), groupNeeds(pol.ApprovalGroupsRequired(r.Ports)), votes); !tally.Approved {
		if len(lapsed) > 0 {
			return "its approvals no longer suffice: " + tally.String() + " (not counted: " + strings.Join(lapsed, "; ") + ")"
		}
		return "its rules now ask for approvals it does not have: " + tally.String()
	}
	return ""
}

// approvalsStanding returns the approvals that still count on target t
// with today's bindings, each for the groups or roles its approver still
// holds there, and says why each other one does not count.
func approvalsStanding(approvals []approval, bindings []authz.Binding, t *authz.Target) (votes []access.Vote, lapsed []string) {
	for _, a := range approvals {
		var sub authz.Subject
		if a.subject == "" || json.Unmarshal([]byte(a.subject), &sub) != nil || len(sub.Principals) == 0 {
			lapsed = append(lapsed, "the approval by "+a.Approver+" did not record who they were")
			continue
		}
		if !authz.Allowed(bindings, sub, authz.Approve, t) {
			lapsed = append(lapsed, fmt.Sprintf("%s no longer holds a role that allows %s on target %s", a.Approver, authz.Approve, t.Name))
			continue
		}
		v := access.Vote{Approver: a.Approver}
		for _, g := range a.Member {
			if authz.Holds(bindings, sub, g, t) {
				v.Member = append(v.Member, g)
			} else {
				lapsed = append(lapsed, fmt.Sprintf("%s no longer counts for %s", a.Approver, g))
			}
		}
		votes = append(votes, v)
	}
	return votes, lapsed
}

// scanFunc adapts a function to scanner.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }

// askedBy is who asked for a request, as recorded in its subject column:
// the requester's principals and token limit (authz.Subject, the same JSON
// as before the token was recorded) and the id of the token they asked
// with ("" for requests asked before it was recorded, and for the
// occurrences of a schedule, which no token asks for).
type askedBy struct {
	authz.Subject
	Token string `json:"token,omitempty"`
}

// tokenStanding is what the store found of the token a request was asked
// with, read just before a decision (requesterMayNot stays pure).
type tokenStanding struct {
	Found     bool
	ExpiresAt *time.Time
}

// readTokenStanding reads the token recorded in subject, if any.
func readTokenStanding(ctx context.Context, tx *sql.Tx, subject string) (tokenStanding, error) {
	var a askedBy
	if subject == "" || json.Unmarshal([]byte(subject), &a) != nil || a.Token == "" {
		return tokenStanding{}, nil
	}
	var exp sql.NullInt64
	err := tx.QueryRowContext(ctx, `SELECT expires_at FROM tokens WHERE id = $1`, a.Token).Scan(&exp)
	if errors.Is(err, sql.ErrNoRows) {
		return tokenStanding{}, nil
	}
	if err != nil {
		return tokenStanding{}, fmt.Errorf("reading token %s: %w", a.Token, err)
	}
	ts := tokenStanding{Found: true}
	if exp.Valid {
		e := fromMS(exp.Int64)
		ts.ExpiresAt = &e
	}
	return ts, nil
}

// requesterMayNot says why request r's requester may no longer ask for it
// on target t with bindings ("" when they may): the one rule asked at every
// grant that follows an ask — a scheduled start (StartScheduled), and the
// last approval of any request (ApproveRequestWith). The requester is the
// principals and token limit recorded at the ask (subject); the token they
// asked with must still exist (not revoked, not removed with its user) and
// not have expired at now: a request lives no longer than the credential
// that asked for it. A request recorded without a subject is judged by
// when it was asked: an unscheduled one asked before subjects were kept
// for every request is judged as "user:<requester>" (or the service)
// alone, with today's bindings — a requester who held the role only
// through a group is refused, safe side; a scheduled one always recorded
// its subject, so none fails closed.
func requesterMayNot(r Request, subject string, t Target, bindings []authz.Binding, tok tokenStanding, now time.Time) string {
	var a askedBy
	switch {
	case subject != "":
		if err := json.Unmarshal([]byte(subject), &a); err != nil || len(a.Principals) == 0 {
			return "the requester's identity at the ask was not recorded"
		}
	case r.StartsAt == nil:
		p := "user:" + r.Requester
		if strings.HasPrefix(r.Requester, "service:") {
			p = r.Requester
		}
		a.Principals = []string{p}
	default:
		return "the requester's identity at the ask was not recorded"
	}
	if a.Token != "" {
		if !tok.Found {
			return fmt.Sprintf("the token %s that %s asked with was revoked", a.Token, r.Requester)
		}
		if tok.ExpiresAt != nil && !now.Before(*tok.ExpiresAt) {
			return fmt.Sprintf("the token %s that %s asked with expired at %s", a.Token, r.Requester, tok.ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	if !authz.Allowed(bindings, a.Subject, authz.CreateRequest, &authz.Target{Name: t.Name, Labels: t.Labels}) {
		return fmt.Sprintf("%s no longer holds a role that allows %s on target %s", r.Requester, authz.CreateRequest, t.Name)
	}
	return ""
}
