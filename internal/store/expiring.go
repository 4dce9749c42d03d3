package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// DefaultExpiryWarning is how long before its deadline the server announces
// an active request as expiring (audit event request.expiring).
const DefaultExpiryWarning = 10 * time.Minute

// expiryLead is the warning period; zero: none.
func (s *Store) expiryLead() time.Duration { return s.cfg.ExpiryWarning }

// warnExpiring, a step of Sweep, audits request.expiring (once) for every
// active request within lead of its deadline.
func (s *Store) warnExpiring(ctx context.Context, tx *sql.Tx, lead time.Duration, now time.Time) error {
	if lead <= 0 {
		return nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT id, target, expires_at FROM requests
		WHERE state = `+stateActive+` AND expiry_warned = 0 AND expires_at > $1 AND expires_at <= $2 AND expires_at - activated_at > $3
		ORDER BY expires_at, id`, ms(now), ms(now.Add(lead)), lead.Milliseconds())
	if err != nil {
		return fmt.Errorf("selecting requests expiring soon: %w", err)
	}
	type soon struct {
		id, target string
		expires    int64
	}
	var ss []soon
	for rows.Next() {
		var r soon
		if err := rows.Scan(&r.id, &r.target, &r.expires); err != nil {
			rows.Close()
			return fmt.Errorf("reading request expiring soon: %w", err)
		}
		ss = append(ss, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("selecting requests expiring soon: %w", err)
	}
	for _, r := range ss {
		// Not a change of the request's state: its version stays, so no
		// approver's view of it becomes stale.
		if _, err := tx.ExecContext(ctx, `UPDATE requests SET expiry_warned = 1 WHERE id = $1`, r.id); err != nil {
			return fmt.Errorf("marking %s warned: %w", r.id, err)
		}
		exp := fromMS(r.expires)
		if err := s.writeAudit(ctx, tx, audit.Event{At: now, Actor: audit.System, Action: audit.RequestExpiring, Target: r.target, RequestID: r.id,
			Details: map[string]any{"expires_at": exp.Format(time.RFC3339), "remaining": exp.Sub(now).Round(time.Second).String()}}); err != nil {
			return err
		}
	}
	return nil
}

// NextExpiryWarning returns when the next request.expiring is due (zero:
// none is pending). Its cost grows with the active requests too short to be
// warned (see NextDeadlineExceptWarnings).
func (s *Store) NextExpiryWarning(ctx context.Context) (time.Time, error) {
	lead := s.expiryLead()
	if lead <= 0 {
		return time.Time{}, nil
	}
	// The first match in expiry order (index requests_state), not a min()
	// over every active request: the sweeper asks after every change.
	var next sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT expires_at FROM requests
		WHERE state = `+stateActive+` AND expiry_warned = 0 AND expires_at - activated_at > $1 ORDER BY state, expires_at LIMIT 1`, lead.Milliseconds()).Scan(&next)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("finding next expiry warning: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return fromMS(next.Int64).Add(-lead), nil
}
