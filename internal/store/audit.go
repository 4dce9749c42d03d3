package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// writeAudit appends an event inside the caller's transaction.
func writeAudit(ctx context.Context, tx execer, e audit.Event) error {
	details := []byte("{}")
	if len(e.Details) > 0 {
		var err error
		if details, err = json.Marshal(e.Details); err != nil {
			return fmt.Errorf("encoding audit details: %w", err)
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO audit (at, actor, action, target, request_id, client_addr, reason, details)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		ms(e.At), e.Actor, string(e.Action), e.Target, e.RequestID, e.ClientAddr, e.Reason, string(details))
	if err != nil {
		return fmt.Errorf("writing audit event %s: %w", e.Action, err)
	}
	return nil
}

// Audit records an event on its own (for events that change no state, such
// as a refused request).
func (s *Store) Audit(ctx context.Context, e audit.Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return writeAudit(ctx, tx, e) })
}

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	Target    string
	RequestID string
	Action    string
	Since     time.Time
	// AfterID returns only events with a larger id (for paging and following).
	AfterID int64
	Limit   int
}

// ListAudit returns events oldest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]audit.Event, error) {
	if f.Limit <= 0 || f.Limit > 10000 {
		f.Limit = 1000
	}
	q := `SELECT id, at, actor, action, target, request_id, client_addr, reason, details FROM audit WHERE id > $1`
	args := []any{f.AfterID}
	add := func(cond string, v any) {
		args = append(args, v)
		q += fmt.Sprintf(" AND %s $%d", cond, len(args))
	}
	if f.Target != "" {
		add("target =", f.Target)
	}
	if f.RequestID != "" {
		add("request_id =", f.RequestID)
	}
	if f.Action != "" {
		add("action =", f.Action)
	}
	if !f.Since.IsZero() {
		add("at >=", ms(f.Since))
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY id LIMIT $%d", len(args))
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing audit events: %w", err)
	}
	defer rows.Close()
	var out []audit.Event
	for rows.Next() {
		var (
			e       audit.Event
			at      int64
			action  string
			details string
		)
		if err := rows.Scan(&e.ID, &at, &e.Actor, &action, &e.Target, &e.RequestID, &e.ClientAddr, &e.Reason, &details); err != nil {
			return nil, fmt.Errorf("reading audit event: %w", err)
		}
		e.At, e.Action = fromMS(at), audit.Action(action)
		if details != "{}" {
			if err := json.Unmarshal([]byte(details), &e.Details); err != nil {
				return nil, fmt.Errorf("decoding audit details of event %d: %w", e.ID, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}
