package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/session"
)

// NewSessionID returns a fresh session id.
func NewSessionID() string { return random.ID("s-", 10) }

// BastionGrant returns the live grant through which requester may reach
// port of target at now: the grant of an active request with the latest
// deadline. Whether the port's rule allows the bastion is the caller's to
// check against the target's policy. ErrNotFound when there is none.
func (s *Store) BastionGrant(ctx context.Context, target, requester string, port policy.Port, now time.Time) (GrantRow, error) {
	g := GrantRow{Port: port, Requester: requester}
	var exp int64
	var src string
	err := s.db.QueryRowContext(ctx, `SELECT g.request_id, g.source, g.expires_at FROM grants g JOIN requests r ON r.id = g.request_id
		WHERE g.target = $1 AND g.requester = $2 AND g.protocol = $3 AND g.port = $4 AND g.expires_at > $5 AND r.state = `+stateActive+`
		ORDER BY g.expires_at DESC, g.id LIMIT 1`, target, requester, string(port.Protocol), int(port.Number), ms(now)).Scan(&g.RequestID, &src, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return GrantRow{}, fmt.Errorf("no live grant of %s for %s on %s: %w", requester, port, target, ErrNotFound)
	}
	if err != nil {
		return GrantRow{}, fmt.Errorf("looking up the live grant of %s on %s: %w", requester, target, err)
	}
	g.ExpiresAt = fromMS(exp)
	if g.Source, err = parseSource(src); err != nil {
		return GrantRow{}, fmt.Errorf("decoding grant source %q: %w", src, err)
	}
	// The caller opens a tunnel or signs a certificate with it: only a
	// durable grant (syncer.go).
	if err := s.waitDurable(ctx); err != nil {
		return GrantRow{}, err
	}
	return g, nil
}

const sessionColumns = `id, target, principal, request_id, protocol, port, client_addr, state, started_at, deadline,
	ended_at, end_reason, ended_by, message, bytes_in, bytes_out, via, login`

func scanSession(r scanner) (session.Session, error) {
	var (
		x             session.Session
		state, reason string
		port          int
		started, dl   int64
		ended         sql.NullInt64
	)
	if err := r.Scan(&x.ID, &x.Target, &x.Principal, &x.RequestID, &x.Protocol, &port, &x.ClientAddr, &state, &started, &dl,
		&ended, &reason, &x.EndedBy, &x.Message, &x.BytesIn, &x.BytesOut, &x.Via, &x.Login); err != nil {
		return session.Session{}, err
	}
	x.Port, x.State, x.Reason = uint16(port), session.State(state), session.EndReason(reason)
	x.StartedAt, x.Deadline, x.EndedAt = fromMS(started), fromMS(dl), fromNullMS(ended)
	return x, nil
}

// StartSession records a live session and audits session.started in the
// same transaction.
func (s *Store) StartSession(ctx context.Context, x session.Session) error {
	if x.Via == "" {
		x.Via = session.ViaTunnel
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (id, target, principal, request_id, protocol, port, client_addr, state, started_at, deadline, via, login, replica)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`, x.ID, x.Target, x.Principal, x.RequestID, x.Protocol, int(x.Port), x.ClientAddr,
			string(session.Live), ms(x.StartedAt), ms(x.Deadline), x.Via, x.Login, x.Replica)
		if err != nil {
			return fmt.Errorf("recording session %s: %w", x.ID, err)
		}
		details := map[string]any{"session": x.ID, "port": fmt.Sprintf("%d/%s", x.Port, x.Protocol),
			"until": x.Deadline.Format(time.RFC3339), "via": x.Via}
		if x.Login != "" {
			details["login"] = x.Login
		}
		return s.writeAudit(ctx, tx, audit.Event{At: x.StartedAt, Actor: x.Principal, ClientAddr: x.ClientAddr, Action: audit.SessionStarted,
			Target: x.Target, RequestID: x.RequestID, Details: details})
	})
}

// EndSession ends live session id for reason (the domain decides: the first
// end wins; a later one is ErrConflict), records its byte counts and audits
// session.ended, or session.killed with the killer as actor.
func (s *Store) EndSession(ctx context.Context, id string, reason session.EndReason, by, message string, in, out int64, now time.Time) (session.Session, error) {
	var x session.Session
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		x, err = scanSession(tx.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("session %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading session %s: %w", id, err)
		}
		return s.endSession(ctx, tx, &x, reason, by, message, in, out, now)
	})
	return x, err
}

func (s *Store) endSession(ctx context.Context, tx *sql.Tx, x *session.Session, reason session.EndReason, by, message string, in, out int64, now time.Time) error {
	next, err := x.End(reason, by, message, now)
	if errors.Is(err, session.ErrEnded) {
		return fmt.Errorf("session %s: %v: %w", x.ID, err, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("ending session %s: %w", x.ID, err)
	}
	next.BytesIn, next.BytesOut = max(in, x.BytesIn), max(out, x.BytesOut)
	if _, err := tx.ExecContext(ctx, `UPDATE sessions SET state = $1, ended_at = $2, end_reason = $3, ended_by = $4, message = $5,
		bytes_in = $6, bytes_out = $7 WHERE id = $8 AND state = 'live'`, string(next.State), ms(now), string(next.Reason), next.EndedBy,
		next.Message, next.BytesIn, next.BytesOut, x.ID); err != nil {
		return fmt.Errorf("ending session %s: %w", x.ID, err)
	}
	action, actor := audit.SessionEnded, audit.System
	if reason == session.Killed {
		action, actor = audit.SessionKilled, by
	} else if reason == session.Closed {
		actor = x.Principal
	}
	*x = next
	return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor, Action: action, Target: x.Target, RequestID: x.RequestID, Reason: message,
		Details: map[string]any{"session": x.ID, "principal": x.Principal, "end_reason": string(x.Reason), "bytes_in": x.BytesIn, "bytes_out": x.BytesOut}})
}

// EndLiveSessions ends every session still recorded live for reason: at
// start, those a server that stopped without ending them left behind
// (server_lost). It returns how many it ended.
func (s *Store) EndLiveSessions(ctx context.Context, reason session.EndReason, now time.Time) (int, error) {
	return s.endLiveWhere(ctx, "", reason, now)
}

// endLiveWhere ends the live sessions matching the SQL condition where
// ("" : all) with args, for reason, in one transaction with their audit.
func (s *Store) endLiveWhere(ctx context.Context, where string, reason session.EndReason, now time.Time, args ...any) (int, error) {
	q := `SELECT ` + sessionColumns + ` FROM sessions WHERE state = 'live'`
	if where != "" {
		q += ` AND (` + where + `)`
	}
	n := 0
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, q+` ORDER BY started_at, id`, args...)
		if err != nil {
			return fmt.Errorf("listing live sessions: %w", err)
		}
		var live []session.Session
		for rows.Next() {
			x, err := scanSession(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("reading session: %w", err)
			}
			live = append(live, x)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range live {
			if err := s.endSession(ctx, tx, &live[i], reason, "", "", live[i].BytesIn, live[i].BytesOut, now); err != nil {
				return err
			}
		}
		n = len(live)
		return nil
	})
	return n, err
}

// RecordSessionBytes stores the byte counts of a live session so far.
func (s *Store) RecordSessionBytes(ctx context.Context, id string, in, out int64) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET bytes_in = $1, bytes_out = $2 WHERE id = $3 AND state = 'live'`, in, out, id); err != nil {
		return s.writeFailed(fmt.Errorf("recording bytes of session %s: %w", id, err))
	}
	return nil
}

// GetSession returns one session.
func (s *Store) GetSession(ctx context.Context, id string) (session.Session, error) {
	x, err := scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return session.Session{}, fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return session.Session{}, fmt.Errorf("reading session %s: %w", id, err)
	}
	return x, nil
}

// SessionFilter selects the sessions ListSessions returns. The filters are
// applied in SQL, so a page costs the rows it returns, not the table.
type SessionFilter struct {
	Live      bool   // only live sessions
	ID        string // only this session ("": all)
	Target    string // only this target's ("": all)
	Principal string // only this principal's ("": all)
	// After continues a listing: only the sessions that come after this
	// one in the order (newest first; id breaks ties).
	After *SessionKey
	Limit int // at most this many (0: 1000)
}

// SessionKey is a session's place in the order of ListSessions.
type SessionKey struct {
	StartedAt time.Time
	ID        string
}

// SessionKeyOf is x's place in the order of ListSessions.
func SessionKeyOf(x session.Session) SessionKey { return SessionKey{x.StartedAt, x.ID} }

// ListSessions returns the sessions f selects, newest first (started_at
// descending, then id).
func (s *Store) ListSessions(ctx context.Context, f SessionFilter) ([]session.Session, error) {
	if f.Limit <= 0 {
		f.Limit = 1000
	}
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Live {
		where = append(where, `state = 'live'`)
	}
	if f.ID != "" {
		where = append(where, `id = `+arg(f.ID))
	}
	if f.Target != "" {
		where = append(where, `target = `+arg(f.Target))
	}
	if f.Principal != "" {
		where = append(where, `principal = `+arg(f.Principal))
	}
	if f.After != nil {
		at := arg(ms(f.After.StartedAt))
		where = append(where, `(started_at < `+at+` OR started_at = `+at+` AND id > `+arg(f.After.ID)+`)`)
	}
	q := `SELECT ` + sessionColumns + ` FROM sessions`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY started_at DESC, id LIMIT ` + arg(f.Limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	defer rows.Close()
	var out []session.Session
	for rows.Next() {
		x, err := scanSession(rows)
		if err != nil {
			return nil, fmt.Errorf("reading session: %w", err)
		}
		out = append(out, x)
	}
	return out, rows.Err()
}
