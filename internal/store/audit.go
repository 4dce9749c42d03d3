package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
)

// writeAudit appends an event inside the caller's transaction and links it
// into the hash chain (auditchain.go): the event's prev_hash is the hash of
// the event with the greatest id, read in the same transaction. SQLite
// serialises writers (every write transaction is BEGIN IMMEDIATE), so no
// other event can be appended between that read and the insert.
// On PostgreSQL every write transaction holds the store's write lock
// (dialect.lockWrites) for the same guarantee across replicas.
//
// The same read gives the id the event will have (chainHead: the id each
// database would assign), so the event is inserted with its id and its
// hash in one statement; an insert followed by an UPDATE with the hash was
// one statement more per event on every request's path (docs/benchmarks.md
// §14).
func (s *Store) writeAudit(ctx context.Context, tx auditTx, e audit.Event) error {
	if id := requestIDFrom(ctx); id != "" {
		d := make(map[string]any, len(e.Details)+1)
		maps.Copy(d, e.Details)
		d[AuditRequestIDKey] = id
		e.Details = d
	}
	details := []byte("{}")
	if len(e.Details) > 0 {
		var err error
		// encoding/json writes map keys sorted: the stored text, which
		// the hash covers, is deterministic.
		if details, err = json.Marshal(e.Details); err != nil {
			return fmt.Errorf("encoding audit details: %w", err)
		}
	}
	prev, id, hooks, err := s.chainHead(ctx, tx)
	if err != nil {
		return err
	}
	r := chainRow{ID: id, At: ms(e.At), Actor: e.Actor, Action: string(e.Action), Target: e.Target, RequestID: e.RequestID,
		ClientAddr: e.ClientAddr, Reason: e.Reason, Details: string(details), PrevHash: prev}
	r.Hash = r.hash()
	_, err = tx.ExecContext(ctx, `INSERT INTO audit (id, at, actor, action, target, request_id, client_addr, reason, details, prev_hash, hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		r.ID, r.At, r.Actor, r.Action, r.Target, r.RequestID, r.ClientAddr, r.Reason, r.Details, r.PrevHash, r.Hash)
	if err != nil {
		return fmt.Errorf("writing audit event %s: %w", e.Action, err)
	}
	// The next event of this transaction follows this one without reading
	// the head (chainHead).
	leftAuditHead(tx, auditHead{known: true, hash: r.Hash, next: r.ID + 1, hooks: hooks})
	if !hooks {
		return nil
	}
	return enqueueWebhooks(ctx, tx, r.ID, e)
}

// AuditRequestIDKey is the detail holding the id of the HTTP request that
// caused an event (X-Request-Id), to find its lines in the server's log.
const AuditRequestIDKey = "http_request_id"

type requestIDKey struct{}

// WithRequestID returns ctx carrying the id of the HTTP request being
// served: every audit event written under it records the id in its details
// (AuditRequestIDKey). The edge (internal/httpedge) sets it.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

func requestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Audit records an event on its own (for events that change no state, such
// as a refused request).
func (s *Store) Audit(ctx context.Context, e audit.Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return s.writeAudit(ctx, tx, e) })
}

// AuditEvents records events that change no state in one transaction (the
// API's aggregated refusals).
func (s *Store) AuditEvents(ctx context.Context, es []audit.Event) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, e := range es {
			if err := s.writeAudit(ctx, tx, e); err != nil {
				return err
			}
		}
		return nil
	})
}

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	Target    string
	RequestID string
	Action    string
	// Actor is the user (or agent) who acted.
	Actor string
	// Since and Until bound the time of the events: Since <= at < Until.
	Since time.Time
	Until time.Time
	// AfterID returns only events with a larger id (for paging and following).
	AfterID int64
	// BeforeID, when not 0, returns only events with a smaller id (paging
	// back from the newest).
	BeforeID int64
	// Newest lists the newest events first (and Limit keeps the newest).
	Newest bool
	Limit  int
	// InSpans keeps only the events whose id lies in one of Spans (none
	// when Spans is empty): the parts of a target's history a reader's
	// scope covers (the API's auditSpans).
	InSpans bool
	Spans   []IDSpan
}

// IDSpan is a range of audit event ids, From to To inclusive; To 0 has no
// end.
type IDSpan struct{ From, To int64 }

// spansCondition is the SQL condition that an event's id lies in one of
// spans ("1 = 0" for none). A name created and removed many times has many
// spans, so the ids are written as literals (integers the caller made,
// nothing read from a request), not parameters (SQLite takes 32,766 a
// statement, PostgreSQL 65,535); the ORs are nested as a balanced tree (a
// chain of a thousand ORs is deeper than SQLite parses: "Expression tree is
// too large"); and beyond a few spans the id is written +id, which no
// index serves, so SQLite's planner does not weigh each span as an index
// range (its time grew with the square of their number: 40,000 spans took
// minutes to plan, 20,000 now take seconds to list).
func spansCondition(spans []IDSpan) string {
	id := "id"
	if len(spans) > 16 {
		id = "+id"
	}
	return spansTree(spans, id)
}

func spansTree(spans []IDSpan, id string) string {
	switch len(spans) {
	case 0:
		return "1 = 0"
	case 1:
		sp := spans[0]
		if sp.To > 0 {
			return fmt.Sprintf("(%s >= %d AND %s <= %d)", id, sp.From, id, sp.To)
		}
		return fmt.Sprintf("(%s >= %d)", id, sp.From)
	}
	half := len(spans) / 2
	return "(" + spansTree(spans[:half], id) + " OR " + spansTree(spans[half:], id) + ")"
}

// ListAudit returns events oldest first, or newest first with f.Newest.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]audit.Event, error) {
	if f.Limit <= 0 || f.Limit > 100000 { // the API asks at most a page of 10,000 and one more
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
	if f.Actor != "" {
		add("actor =", f.Actor)
	}
	if !f.Since.IsZero() {
		add("at >=", ms(f.Since))
	}
	if !f.Until.IsZero() {
		add("at <", ms(f.Until))
	}
	if f.BeforeID > 0 {
		add("id <", f.BeforeID)
	}
	if f.InSpans {
		q += " AND " + spansCondition(f.Spans)
	}
	order := "id"
	if f.Newest {
		order = "id DESC"
	}
	args = append(args, f.Limit)
	q += fmt.Sprintf(" ORDER BY %s LIMIT $%d", order, len(args))
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

// TargetStats summarises recent access to a target, as Azure's JIT
// "Configured" view does.
type TargetStats struct {
	// LastAccess is when a request for the target last became active, and
	// LastUser who asked for it; nil and "" when none ever did.
	LastAccess *time.Time
	LastUser   string
	// Approved7d counts the requests that became active in the 7 days
	// before now.
	Approved7d int
}

// statsWindow is the period Approved7d counts.
const statsWindow = 7 * 24 * time.Hour

// TargetStats returns the access statistics of one target.
func (s *Store) TargetStats(ctx context.Context, target string, now time.Time) (TargetStats, error) {
	m, err := s.targetStats(ctx, target, now)
	return m[target], err
}

// AllTargetStats returns the access statistics of every target that was
// ever accessed, by target name.
func (s *Store) AllTargetStats(ctx context.Context, now time.Time) (map[string]TargetStats, error) {
	return s.targetStats(ctx, "", now)
}

// targetStats computes the statistics of target, or of all targets for "".
func (s *Store) targetStats(ctx context.Context, target string, now time.Time) (map[string]TargetStats, error) {
	cond, args := "", []any{}
	if target != "" {
		cond, args = " AND target = $1", []any{target}
	}
	out := map[string]TargetStats{}
	rows, err := s.db.QueryContext(ctx, `SELECT r.target, r.requester, r.activated_at FROM requests r
		JOIN (SELECT target, max(activated_at) AS last FROM requests WHERE activated_at IS NOT NULL`+cond+` GROUP BY target) m
		ON r.target = m.target AND r.activated_at = m.last
		ORDER BY r.target, r.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("reading last access of targets: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name, user string
			at         int64
		)
		if err := rows.Scan(&name, &user, &at); err != nil {
			return nil, fmt.Errorf("reading last access of targets: %w", err)
		}
		if _, seen := out[name]; seen {
			continue // two activations in the same millisecond: keep the first
		}
		t := fromMS(at)
		out[name] = TargetStats{LastAccess: &t, LastUser: user}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading last access of targets: %w", err)
	}
	rows.Close()

	args = append(args, ms(now.Add(-statsWindow)), ms(now))
	n := len(args)
	rows, err = s.db.QueryContext(ctx, fmt.Sprintf(`SELECT target, count(*) FROM requests
		WHERE activated_at >= $%d AND activated_at <= $%d%s GROUP BY target`, n-1, n, cond), args...)
	if err != nil {
		return nil, fmt.Errorf("counting recent access of targets: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			name  string
			count int
		)
		if err := rows.Scan(&name, &count); err != nil {
			return nil, fmt.Errorf("counting recent access of targets: %w", err)
		}
		st := out[name]
		st.Approved7d = count
		out[name] = st
	}
	return out, rows.Err()
}
