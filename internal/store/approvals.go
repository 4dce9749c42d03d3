package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
)

// ErrForbidden is an action the domain never allows, whoever asks (such as
// approving one's own request).
var ErrForbidden = errors.New("forbidden")

// ErrRequesterLapsed is an approval that would have granted a request whose
// requester no longer may ask for it (their role or token gone since the
// ask): the request failed instead, and nothing opened. It wraps
// ErrForbidden, so the API answers 403.
var ErrRequesterLapsed = fmt.Errorf("the requester no longer may ask for this request: %w", ErrForbidden)

// ErrStale is a decision made on an old view of a request: its version
// changed meanwhile.
var ErrStale = errors.New("the request changed meanwhile")

// lockRequest reads a request inside a write transaction and checks the
// version the caller saw (0: no check).
func lockRequest(ctx context.Context, tx *sql.Tx, id string, version int64) (Request, error) {
	r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Request{}, fmt.Errorf("request %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Request{}, fmt.Errorf("reading request %s: %w", id, err)
	}
	if version != 0 && r.Version != version {
		return Request{}, fmt.Errorf("request %s is now %s (version %d, you saw %d): reload it: %w", id, r.State, r.Version, version, ErrStale)
	}
	return r, nil
}

// ApproveRequest records approver's approval. The request must await
// approval; the requester can never approve their own request, and nobody
// approves twice. With the last approval needed, the request is granted in
// the same transaction. version, when not 0, must match the request's
// current version (a stale view is refused).
func (s *Store) ApproveRequest(ctx context.Context, approver Actor, id, reason string, version int64, now time.Time) (Request, error) {
	return s.ApproveRequestWith(ctx, approver, id, reason, version, now, ApproveOptions{})
}

// ApproveOptions are what an approval may carry beyond ApproveRequest's
// arguments.
type ApproveOptions struct {
	// Limits, when set, are the server's policy limits: the approval that
	// would grant the request then evaluates it again against the
	// target's policy of that instant (policy.Limits.Evaluate), so that
	// a rule tightened since the ask — a shorter maximum, a narrower
	// source list — refuses it as the ask would be refused now, and
	// approvers cannot open more than the policy allows at the grant.
	// The refusal is a *policy.DenyError or *policy.FieldError and records
	// nothing, like an approval after the rule's window closed.
	Limits *policy.Limits
}

// ApproveRequestWith is ApproveRequest with options.
func (s *Store) ApproveRequestWith(ctx context.Context, approver Actor, id, reason string, version int64, now time.Time, opt ApproveOptions) (Request, error) {
	var (
		granted string
		lapsed  error
	)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		granted, lapsed = "", nil // the function may run again (group commit)
		r, err := lockRequest(ctx, tx, id, version)
		if err != nil {
			return err
		}
		if r.Requester == approver.Name {
			return fmt.Errorf("you cannot approve your own request: %w", ErrForbidden)
		}
		if r.State != access.PendingApproval {
			return fmt.Errorf("request %s is %s, not awaiting approval: %w", id, r.State, ErrConflict)
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM approvals WHERE request_id = $1 AND approver = $2`, id, approver.Name).Scan(&n); err != nil {
			return fmt.Errorf("checking approvals: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("you already approved request %s: %w", id, ErrConflict)
		}
		// A rule tightened since the request was created binds it too
		// (access.Stricter); the stricter needs are kept on the request.
		pol, err := targetPolicy(ctx, tx, r.Target)
		if err != nil {
			return err
		}
		need, groups := access.Stricter(r.ApprovalsRequired, r.ApprovalGroups, pol.ApprovalsRequired(r.Ports), groupNeeds(pol.ApprovalGroupsRequired(r.Ports)))
		if need != r.ApprovalsRequired || !slices.Equal(groups, r.ApprovalGroups) {
			enc := ""
			if len(groups) > 0 {
				b, _ := json.Marshal(groups)
				enc = string(b)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE requests SET approvals_required = $1, approval_groups = $2 WHERE id = $3`, need, enc, id); err != nil {
				return fmt.Errorf("raising what request %s needs to its tightened rules: %w", id, err)
			}
			r.ApprovalsRequired, r.ApprovalGroups = need, groups
		}
		votes, err := votesOf(ctx, tx, id)
		if err != nil {
			return err
		}
		// Only the request's own groups are kept: membership elsewhere
		// says nothing here.
		var member []string
		for _, g := range r.ApprovalGroups {
			if slices.Contains(approver.Member, g.From) {
				member = append(member, g.From)
			}
		}
		vote := access.Vote{Approver: approver.Name, Member: member}
		if len(r.ApprovalGroups) > 0 && !access.Counts(r.ApprovalsRequired, r.ApprovalGroups, votes, vote) {
			you := "you count for none of them"
			if len(member) > 0 {
				you = "you count only for " + strings.Join(member, ", ") + ", which others already fill"
			}
			return fmt.Errorf("your approval would not count towards request %s: it still needs %s; %s: %w",
				id, access.Decide(r.ApprovalsRequired, r.ApprovalGroups, votes), you, ErrForbidden)
		}
		memberJSON := ""
		if len(member) > 0 {
			b, _ := json.Marshal(member)
			memberJSON = string(b)
		}
		// Who approved, as authz sees them: a scheduled request's start
		// asks again whether they still may approve here (StartScheduled).
		subjectJSON := ""
		if len(approver.Subject.Principals) > 0 {
			b, err := json.Marshal(approver.Subject)
			if err != nil {
				return fmt.Errorf("encoding the approver's subject: %w", err)
			}
			subjectJSON = string(b)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approvals (request_id, approver, decision, reason, at, member, subject) VALUES ($1, $2, 'approve', $3, $4, $5, $6)`,
			id, approver.Name, reason, ms(now), memberJSON, subjectJSON); err != nil {
			return fmt.Errorf("recording approval: %w", err)
		}
		votes = append(votes, vote)
		tally := access.Decide(r.ApprovalsRequired, r.ApprovalGroups, votes)
		if _, err := tx.ExecContext(ctx, `UPDATE requests SET version = version + 1 WHERE id = $1`, id); err != nil {
			return fmt.Errorf("updating request: %w", err)
		}
		touchRequest(tx, id)
		details := map[string]any{"approvals": len(votes), "required": r.ApprovalsRequired}
		if len(r.ApprovalGroups) > 0 {
			details["member"] = strings.Join(member, ",")
			if !tally.Approved {
				details["missing"] = tally.String()
			}
		}
		grantsNow := r.StartsAt == nil || !r.StartsAt.After(now)
		if tally.Approved && grantsNow && opt.Limits != nil {
			// Granted now: judged again as an ask made now would be. A
			// scheduled request is judged again at its start instead.
			if err := opt.Limits.Evaluate(pol, policy.Request{Ports: r.Ports, Source: r.Source, Duration: r.Duration, Reason: r.Reason, At: now}); err != nil {
				return err
			}
		}
		if tally.Approved {
			if end, clipped := clipToWindows(pol, r.Ports, now, r.Duration); clipped {
				details["clipped_to_window_end"] = end.Format(time.RFC3339)
			}
		}
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: approver.Name, ClientAddr: approver.ClientAddr, Action: audit.RequestApproved,
			Target: r.Target, RequestID: id, Reason: reason, Details: details}); err != nil {
			return err
		}
		if !tally.Approved {
			return nil
		}
		if tally.Approved && grantsNow {
			// The last approval grants the request here: its requester is
			// asked again, as a scheduled start asks (requesterMayNot),
			// whether they still may ask for it — roles, token. One who no
			// longer may gets nothing: the approval stays recorded and
			// audited, then the request fails, audited with the reason, and
			// the approver is told why (ErrRequesterLapsed).
			why, err := requesterLapsed(ctx, tx, r, now)
			if err != nil {
				return err
			}
			if why != "" {
				if err := s.endLiveRequests(ctx, tx, `id = $1`, []any{id}, access.Fail,
					"not granted at the approval by "+approver.Name+": "+why+"; nothing was opened", approver, audit.RequestFailed, now); err != nil {
					return err
				}
				lapsed = fmt.Errorf("request %s was not granted and has failed: %s: %w", id, why, ErrRequesterLapsed)
				return nil
			}
		}
		var start time.Time
		if r.StartsAt != nil {
			start = *r.StartsAt
		}
		ev := access.ApproveEvent(start, now)
		if _, err := access.Next(r.State, ev); err != nil {
			return fmt.Errorf("approving %s: %w", id, err)
		}
		granted = r.Target
		if ev == access.Schedule {
			// Approved before its start: it waits, holding no grant, and
			// the change wakes the sweeper that starts it.
			_, err := transition(ctx, tx, id, r.State, r.Version+1, ev, set{"approved_at", ms(now)})
			return err
		}
		_, err = s.grantRequest(ctx, tx, id, approver, now)
		return err
	})
	if err != nil {
		return Request{}, err
	}
	if lapsed != nil {
		return Request{}, lapsed
	}
	if granted != "" {
		s.changed(granted)
	}
	return s.GetRequest(ctx, id)
}

// DenyRequest ends a request by an approver's refusal. A denial wins every
// race: it ends a request awaiting approval, and also one that was approved
// meanwhile (its grants leave the desired state at once).
func (s *Store) DenyRequest(ctx context.Context, approver Actor, id, reason string, version int64, now time.Time) (Request, error) {
	var target string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		r, err := lockRequest(ctx, tx, id, version)
		if err != nil {
			return err
		}
		if r.Requester == approver.Name {
			return fmt.Errorf("you cannot deny your own request; revoke it instead: %w", ErrForbidden)
		}
		if _, err := access.Next(r.State, access.Deny); err != nil {
			return fmt.Errorf("cannot deny %s: %w (%w)", id, err, ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO approvals (request_id, approver, decision, reason, at) VALUES ($1, $2, 'deny', $3, $4)
			ON CONFLICT (request_id, approver) DO UPDATE SET decision = 'deny', reason = excluded.reason, at = excluded.at`,
			id, approver.Name, reason, ms(now)); err != nil {
			return fmt.Errorf("recording denial: %w", err)
		}
		msg := "denied by " + approver.Name
		if reason != "" {
			msg += ": " + reason
		}
		// A request that held grants loses them: endLiveRequests advances
		// the revision its agent must confirm.
		if err := s.endLiveRequests(ctx, tx, `id = $1`, []any{id}, access.Deny, msg, approver, audit.RequestDenied, now); err != nil {
			return err
		}
		if r.State.HoldsGrants() {
			target = r.Target
		}
		return nil
	})
	if err != nil {
		return Request{}, err
	}
	if target != "" {
		s.changed(target)
	}
	return s.GetRequest(ctx, id)
}

// votesOf loads the approvals of a request inside tx, as votes to tally.
func votesOf(ctx context.Context, tx *sql.Tx, id string) ([]access.Vote, error) {
	vs, err := approvalsOf(ctx, tx, id)
	out := make([]access.Vote, 0, len(vs))
	for _, v := range vs {
		out = append(out, v.Vote)
	}
	return out, err
}

// approval is a recorded approval: the vote and the approver's subject
// (JSON of authz.Subject, "" when not recorded).
type approval struct {
	access.Vote
	subject string
}

// approvalsOf loads the approvals of a request inside tx, with who gave them.
func approvalsOf(ctx context.Context, tx *sql.Tx, id string) ([]approval, error) {
	rows, err := tx.QueryContext(ctx, `SELECT approver, member, subject FROM approvals WHERE request_id = $1 AND decision = 'approve' ORDER BY at, approver`, id)
	if err != nil {
		return nil, fmt.Errorf("listing approvals of %s: %w", id, err)
	}
	defer rows.Close()
	var out []approval
	for rows.Next() {
		var (
			v      approval
			member string
		)
		if err := rows.Scan(&v.Approver, &member, &v.subject); err != nil {
			return nil, fmt.Errorf("reading approval: %w", err)
		}
		if v.Member, err = decodeMember(member); err != nil {
			return nil, fmt.Errorf("approval of %s by %s: %w", id, v.Approver, err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func decodeMember(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decoding groups: %w", err)
	}
	return out, nil
}

// tally says where a request's approvals stand (from its decisions).
func tally(q Request) access.Tally {
	var votes []access.Vote
	for _, d := range q.Decisions {
		if d.Decision == "approve" {
			votes = append(votes, access.Vote{Approver: d.Approver, Member: d.Member})
		}
	}
	return access.Decide(q.ApprovalsRequired, q.ApprovalGroups, votes)
}

// decisions loads the approvals and denial of a request.
func (s *Store) decisions(ctx context.Context, id string) ([]Decision, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT approver, decision, reason, at, member FROM approvals WHERE request_id = $1 ORDER BY at, approver`, id)
	if err != nil {
		return nil, fmt.Errorf("listing approvals of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Decision
	for rows.Next() {
		var (
			d      Decision
			at     int64
			member string
		)
		if err := rows.Scan(&d.Approver, &d.Decision, &d.Reason, &at, &member); err != nil {
			return nil, fmt.Errorf("reading approval: %w", err)
		}
		var err error
		if d.Member, err = decodeMember(member); err != nil {
			return nil, fmt.Errorf("approval of %s by %s: %w", id, d.Approver, err)
		}
		d.At = fromMS(at)
		out = append(out, d)
	}
	return out, rows.Err()
}

// requesterLapsed says why request r's requester, with the principals,
// token limit and token recorded at the ask, may no longer ask for it on
// its target with today's bindings ("" when they may): requesterMayNot,
// with what it needs read inside tx.
func requesterLapsed(ctx context.Context, tx *sql.Tx, r Request, now time.Time) (string, error) {
	var subject string
	if err := tx.QueryRowContext(ctx, `SELECT subject FROM requests WHERE id = $1`, r.ID).Scan(&subject); err != nil {
		return "", fmt.Errorf("reading the requester of %s: %w", r.ID, err)
	}
	t, err := scanTarget(tx.QueryRowContext(ctx, `SELECT `+targetColumns+` FROM targets WHERE name = $1`, r.Target))
	if err != nil {
		return "", fmt.Errorf("reading target %s of %s: %w", r.Target, r.ID, err)
	}
	bindings, err := listBindings(ctx, tx)
	if err != nil {
		return "", err
	}
	tok, err := readTokenStanding(ctx, tx, subject)
	if err != nil {
		return "", err
	}
	return requesterMayNot(r, subject, t, bindings, tok, now), nil
}
