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
	d := DesiredDelta{Revision: t.Revision}
	if after <= 0 || after >= t.Revision || t.Revision-after > ChangeWindow {
		d.Snapshot = after != t.Revision
		return d, nil
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
	seen := map[int64]bool{}
	var ids []int64
	for rows.Next() {
		var (
			rev, id    int64
			gid        sql.NullInt64
			target     sql.NullString
			src, proto sql.NullString
			port, exp  sql.NullInt64
			reqID, who sql.NullString
		)
		if err := rows.Scan(&rev, &id, &gid, &target, &src, &proto, &port, &exp, &reqID, &who); err != nil {
			return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
		}
		seen[rev] = true
		switch {
		case id == changeFull:
			d.Snapshot = true
		case id == changeRules:
			d.Rules = true
		case id > 0 && (len(ids) == 0 || ids[len(ids)-1] != id):
			ids = append(ids, id)
			if !gid.Valid {
				break
			}
			g := GrantRow{ID: gid.Int64, Target: target.String, RequestID: reqID.String, Requester: who.String}
			if g.Source, err = parseSource(src.String); err != nil {
				return DesiredDelta{}, fmt.Errorf("reading changed grants of %s: decoding grant source %q: %w", enforcer, src.String, err)
			}
			g.Port, g.ExpiresAt = policy.Port{Number: uint16(port.Int64), Protocol: policy.Protocol(proto.String)}, fromMS(exp.Int64)
			d.Grants = append(d.Grants, g)
		}
	}
	if err := rows.Err(); err != nil {
		return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
	}
	if d.Snapshot || int64(len(seen)) != t.Revision-after {
		// A revision without its rows: pruned, or the numbering moved
		// (restore guard). Only the whole state can be trusted.
		return DesiredDelta{Revision: t.Revision, Snapshot: true}, nil
	}
	d.Changed = ids
	return d, nil
}
