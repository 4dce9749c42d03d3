package store

import (
	"context"
	"fmt"
	"strings"
	"time"
)

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
	enforcer := t.Name
	d := DesiredDelta{Revision: t.Revision}
	if after <= 0 || after >= t.Revision || t.Revision-after > ChangeWindow {
		d.Snapshot = after != t.Revision
		return d, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT revision, grant_id FROM desired_changes WHERE enforcer = $1 AND revision > $2 AND revision <= $3
		ORDER BY grant_id`, enforcer, after, t.Revision)
	if err != nil {
		return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
	}
	seen := map[int64]bool{}
	var ids []int64
	for rows.Next() {
		var rev, id int64
		if err := rows.Scan(&rev, &id); err != nil {
			rows.Close()
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
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return DesiredDelta{}, fmt.Errorf("reading the change log of %s: %w", enforcer, err)
	}
	if d.Snapshot || int64(len(seen)) != t.Revision-after {
		// A revision without its rows: pruned, or the numbering moved
		// (restore guard). Only the whole state can be trusted.
		return DesiredDelta{Revision: t.Revision, Snapshot: true}, nil
	}
	d.Changed = ids
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, ms(now))
		marks := make([]string, len(chunk))
		for i, id := range chunk {
			args = append(args, id)
			marks[i] = fmt.Sprintf("$%d", i+2)
		}
		rows, err := s.db.QueryContext(ctx, `SELECT `+grantColumns+` FROM grants WHERE expires_at > $1 AND id IN (`+strings.Join(marks, ", ")+`) ORDER BY id`, args...)
		if err != nil {
			return DesiredDelta{}, fmt.Errorf("reading changed grants of %s: %w", enforcer, err)
		}
		gs, err := scanGrants(rows)
		if err != nil {
			return DesiredDelta{}, fmt.Errorf("reading changed grants of %s: %w", enforcer, err)
		}
		d.Grants = append(d.Grants, gs...)
	}
	return d, nil
}
