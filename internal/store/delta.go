package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
)

// joinedGrantColumns are grantColumns of the grants table joined as g.
const joinedGrantColumns = `g.id, g.target, g.source, g.protocol, g.port, g.expires_at, g.request_id, g.requester`

// DesiredDelta is what changed in an enforcer's desired state between a
// revision its agent holds and the current one (see DesiredChanges).
type DesiredDelta struct {
	// Revision is the enforcer's revision, read before anything else: a
	// change committed after it has a higher revision and comes with the
	// next delta (the rows read may already show it; a later delta names
	// the grant again).
	Revision int64
	// Snapshot is set when the change cannot be told as grants: a revision
	// in between is not in the log (pruned, or lifted by the restore guard),
	// one changed more than grants (a policy, a target's addresses, a
	// mapping), or the agent's revision is not below the current one in
	// this numbering. The agent then needs the full state.
	Snapshot bool
	// Rules is set when a revision in between changed the enforcer's own
	// rules (a host target's policy): the agent needs its new protected
	// ports with the grants, which Changed then includes those whose
	// entries the new rules change (store.policyBump).
	Rules bool
	// Changed are the ids of the grants added, extended or deleted after
	// the agent's revision, ascending; Grants are those of them live at
	// now, as they stand (the others left the desired state).
	Changed []int64
	Grants  []GrantRow
}

// DesiredChanges returns what changed in enforcer's desired state after
// revision after, read from the change log (desired_changes, written in the
// transaction of every revision) and the grant rows it names: its cost is
// proportional to the change, not to the number of live grants. It never
// rereads every grant: a gap answers Snapshot.
func (s *Store) DesiredChanges(ctx context.Context, enforcer string, after int64, now time.Time) (DesiredDelta, error) {
	t, err := s.GetTarget(ctx, enforcer)
	if err != nil {
		return DesiredDelta{}, err
	}
	return s.DesiredChangesOf(ctx, t, after, now)
}

// DesiredChangesOf is DesiredChanges for the enforcer t as the caller just
// read it (the agent's long-poll has it already: one read less per answer).
// The delta's revision is t's.
func (s *Store) DesiredChangesOf(ctx context.Context, t Target, after int64, now time.Time) (DesiredDelta, error) {
	d, err := s.desiredChangesOf(ctx, t, after, now)
	if err != nil {
		return DesiredDelta{}, err
	}
	// The agent opens what it is told, t as the caller read it included:
	// only what is durable (syncer.go).
	if err := s.durable(ctx); err != nil {
		return DesiredDelta{}, err
	}
	return d, nil
}

func (s *Store) desiredChangesOf(ctx context.Context, t Target, after int64, now time.Time) (DesiredDelta, error) {
	enforcer := t.Name
	if !changesKnown(t.Revision, after) {
		return DesiredDelta{Revision: t.Revision, Snapshot: after != t.Revision}, nil
	}
	// One read: the change log with the rows of the grants it names, joined
	// (a grant that left the desired state, deleted or expired at now,
	// joins nothing). It is short (at most ChangeWindow revisions, one
	// agent's change since its last answer, as a rule one grant): a point
	// read, whose cancellation would cost more than the read (pointCtx).
	rows, err := s.db.QueryContext(s.pointCtx(ctx), `SELECT c.revision, c.grant_id, `+joinedGrantColumns+` FROM desired_changes c
		LEFT JOIN grants g ON g.id = c.grant_id AND g.expires_at > $4
		WHERE c.enforcer = $1 AND c.revision > $2 AND c.revision <= $3 ORDER BY c.grant_id, c.revision`, enforcer, after, t.Revision, ms(now))
	if err != nil {
		return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
	}
	defer rows.Close()
	log := changeLog{enforcer: enforcer}
	for rows.Next() {
		var c changeRow
		if err := rows.Scan(&c.rev, &c.id, &c.gid, &c.target, &c.src, &c.proto, &c.port, &c.exp, &c.reqID, &c.who); err != nil {
			return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
		}
		if err := log.add(c); err != nil {
			return DesiredDelta{}, err
		}
	}
	if err := rows.Err(); err != nil {
		return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
	}
	return log.delta(t.Revision, after), nil
}

// changesKnown says whether the change log can tell what changed between
// revision after, which the agent holds, and the enforcer's revision: the
// agent's is a revision below it, at most ChangeWindow behind.
func changesKnown(revision, after int64) bool {
	return after > 0 && after < revision && revision-after <= ChangeWindow
}

// changeRow is one row of the change log joined to the grant it names (the
// grant's columns are null when it left the desired state).
type changeRow struct {
	rev, id    int64
	gid        sql.NullInt64
	target     sql.NullString
	src, proto sql.NullString
	port, exp  sql.NullInt64
	reqID, who sql.NullString
}

// changeLog gathers a delta from the change log's rows, read in the order
// of (grant, revision).
type changeLog struct {
	enforcer string
	d        DesiredDelta
	seen     map[int64]bool
	ids      []int64
}

func (l *changeLog) add(c changeRow) error {
	if l.seen == nil {
		l.seen = map[int64]bool{}
	}
	l.seen[c.rev] = true
	switch {
	case c.id == changeFull:
		l.d.Snapshot = true
	case c.id == changeRules:
		l.d.Rules = true
	case c.id > 0 && (len(l.ids) == 0 || l.ids[len(l.ids)-1] != c.id):
		l.ids = append(l.ids, c.id)
		if !c.gid.Valid {
			break
		}
		g := GrantRow{ID: c.gid.Int64, Target: c.target.String, RequestID: c.reqID.String, Requester: c.who.String}
		var err error
		if g.Source, err = parseSource(c.src.String); err != nil {
			return fmt.Errorf("reading changed grants of %s: decoding grant source %q: %w", l.enforcer, c.src.String, err)
		}
		g.Port, g.ExpiresAt = policy.Port{Number: uint16(c.port.Int64), Protocol: policy.Protocol(c.proto.String)}, fromMS(c.exp.Int64)
		l.d.Grants = append(l.d.Grants, g)
	}
	return nil
}

// delta is the delta the rows tell between revision after and the
// enforcer's revision (changesKnown).
func (l *changeLog) delta(revision, after int64) DesiredDelta {
	if l.d.Snapshot || int64(len(l.seen)) != revision-after {
		// A revision without its rows: pruned, or the numbering moved
		// (restore guard). Only the whole state can be trusted.
		return DesiredDelta{Revision: revision, Snapshot: true}
	}
	d := l.d
	d.Revision, d.Changed = revision, l.ids
	return d
}

// AgentTargetChanges is AgentTarget and DesiredChangesOf in one read (one
// statement, one committed state): the target of agent credential tokenID
// as an answer to its long-poll needs it, whether that credential is still
// the target's, and what changed in its desired state after revision
// after, the revision its agent holds. A long-poll answering with a delta
// after its wait reads all three; in two statements, each began its own
// read on a connection whose page cache the writer's last commit had
// emptied (docs/benchmarks.md §37).
func (s *Store) AgentTargetChanges(ctx context.Context, name, tokenID string, after int64, now time.Time) (Target, bool, DesiredDelta, error) {
	// The target's row joins its change log between after and its own
	// revision when the log can tell it (changesKnown: the same bounds in
	// SQL), and each change the grant it names, live at now; no change
	// joined leaves one row, the target's, with the log's columns null.
	rows, err := s.db.QueryContext(s.pointCtx(ctx), `SELECT `+agentTargetColumns+`,
		c.revision, c.grant_id, `+joinedGrantColumns+` FROM targets t
		LEFT JOIN desired_changes c ON c.enforcer = t.name AND c.revision > $3 AND c.revision <= t.revision AND $3 > 0 AND t.revision - $3 <= $5
		LEFT JOIN grants g ON g.id = c.grant_id AND g.expires_at > $4
		WHERE t.name = $1 ORDER BY c.grant_id, c.revision`, name, tokenID, after, ms(now), int64(ChangeWindow))
	if err != nil {
		return Target{}, false, DesiredDelta{}, fmt.Errorf("reading target %s and its change log: %w", name, err)
	}
	defer rows.Close()
	var (
		r   agentTargetRow
		n   int
		log = changeLog{enforcer: name}
	)
	for rows.Next() {
		var (
			c        changeRow
			rev, gid sql.NullInt64
		)
		if err := rows.Scan(append(r.dest(), &rev, &gid, &c.gid, &c.target, &c.src, &c.proto, &c.port, &c.exp, &c.reqID, &c.who)...); err != nil {
			return Target{}, false, DesiredDelta{}, fmt.Errorf("reading target %s and its change log: %w", name, err)
		}
		n++
		if !rev.Valid {
			continue
		}
		c.rev, c.id = rev.Int64, gid.Int64
		if err := log.add(c); err != nil {
			return Target{}, false, DesiredDelta{}, err
		}
	}
	if err := rows.Err(); err != nil {
		return Target{}, false, DesiredDelta{}, fmt.Errorf("reading target %s and its change log: %w", name, err)
	}
	if n == 0 {
		return Target{}, false, DesiredDelta{}, fmt.Errorf("target %q: %w", name, ErrNotFound)
	}
	t, err := r.target()
	if err != nil {
		return Target{}, false, DesiredDelta{}, err
	}
	d := DesiredDelta{Revision: t.Revision, Snapshot: after != t.Revision}
	if changesKnown(t.Revision, after) {
		d = log.delta(t.Revision, after)
	}
	// The agent opens what it is told: only what is durable (syncer.go),
	// as DesiredChangesOf.
	if err := s.durable(ctx); err != nil {
		return Target{}, false, DesiredDelta{}, err
	}
	return t, r.live, d, nil
}
