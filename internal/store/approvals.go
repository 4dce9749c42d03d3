package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
)

// ErrForbidden is an action the domain never allows, whoever asks (such as
// approving one's own request).
var ErrForbidden = errors.New("forbidden")

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
	var granted string
	err := s.tx(ctx, func(tx *sql.Tx) error {
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO approvals (request_id, approver, decision, reason, at) VALUES ($1, $2, 'approve', $3, $4)`,
			id, approver.Name, reason, ms(now)); err != nil {
			return fmt.Errorf("recording approval: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM approvals WHERE request_id = $1 AND decision = 'approve'`, id).Scan(&n); err != nil {
			return fmt.Errorf("counting approvals: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE requests SET version = version + 1 WHERE id = $1`, id); err != nil {
			return fmt.Errorf("updating request: %w", err)
		}
		if err := writeAudit(ctx, tx, audit.Event{At: now, Actor: approver.Name, ClientAddr: approver.ClientAddr, Action: audit.RequestApproved,
			Target: r.Target, RequestID: id, Reason: reason, Details: map[string]any{"approvals": n, "required": r.ApprovalsRequired}}); err != nil {
			return err
		}
		if n < r.ApprovalsRequired {
			return nil
		}
		if _, err := access.Next(r.State, access.Approve); err != nil {
			return fmt.Errorf("approving %s: %w", id, err)
		}
		granted = r.Target
		_, err = grantRequest(ctx, tx, id, approver, now)
		return err
	})
	if err != nil {
		return Request{}, err
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
		if err := endLiveRequests(ctx, tx, `id = $1`, []any{id}, access.Deny, msg, approver, audit.RequestDenied, now); err != nil {
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

// decisions loads the approvals and denial of a request.
func (s *Store) decisions(ctx context.Context, id string) ([]Decision, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT approver, decision, reason, at FROM approvals WHERE request_id = $1 ORDER BY at, approver`, id)
	if err != nil {
		return nil, fmt.Errorf("listing approvals of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Decision
	for rows.Next() {
		var (
			d  Decision
			at int64
		)
		if err := rows.Scan(&d.Approver, &d.Decision, &d.Reason, &at); err != nil {
			return nil, fmt.Errorf("reading approval: %w", err)
		}
		d.At = fromMS(at)
		out = append(out, d)
	}
	return out, rows.Err()
}
