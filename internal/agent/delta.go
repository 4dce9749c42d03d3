package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/wire"
)

// Incremental desired state. The agent holds the grants of the state it
// applied, by grant id, and an Index of their kernel elements; it tells the
// server which revision that is (?since=), and the server answers with only
// the grants changed since (a delta) when its change log can tell them, or a
// full snapshot. A delta is applied in one batch without reading the table
// (firewall.DeltaApplier), so its cost follows the change, not the number of
// grants.
//
// Failure semantics stay those of a full apply: a delta the agent cannot
// apply exactly (not based on the revision it holds, a malformed entry, an
// entry of a grant the delta does not name, a revision below the high-water
// mark) changes nothing and the agent asks for a snapshot at once; a delta
// the kernel refuses (an element it expired early, a table someone edited)
// is followed by a full apply of the state the delta produced, which
// repairs whatever was off. The periodic resync re-applies the whole held
// state, and every SnapshotEvery the agent asks the server for a snapshot
// instead of a delta, so even a change log that missed something cannot
// keep the kernel wrong for long.

// DefaultSnapshotEvery is how often the agent asks for a full snapshot
// instead of a delta (Config.SnapshotEvery).
const DefaultSnapshotEvery = 10 * time.Minute

// deltaServer is the server side of incremental desired state;
// *client.Client implements it. A server without it (a test fake) is sent
// full snapshots only.
type deltaServer interface {
	DesiredSince(ctx context.Context, after, since int64, wait time.Duration) (wire.DesiredState, error)
}

// held are the grant and bastion entries of the state the agent holds, by
// grant id (0: entries of a server that sends no ids; such a state is never
// the base of a delta).
type held struct {
	grants  map[int64][]wire.GrantEntry
	bastion map[int64][]wire.BastionGrant
}

// split takes the entries out of a snapshot: the base is what stays the
// same across deltas (protected ports, mappings, mode), the entries go to
// held.
func split(ds wire.DesiredState) (wire.DesiredState, *held) {
	h := &held{grants: make(map[int64][]wire.GrantEntry, len(ds.Grants)), bastion: map[int64][]wire.BastionGrant{}}
	// Entries of one grant come together (the server sends them by id):
	// each grant's entries are a slice of the snapshot's, not a copy
	// (capped, so that an append copies). At a million grants a copy
	// each would cost ~100 MB.
	for i := 0; i < len(ds.Grants); {
		j := i + 1
		for j < len(ds.Grants) && ds.Grants[j].ID == ds.Grants[i].ID {
			j++
		}
		if id := ds.Grants[i].ID; h.grants[id] == nil {
			h.grants[id] = ds.Grants[i:j:j]
		} else {
			h.grants[id] = append(h.grants[id], ds.Grants[i:j]...)
		}
		i = j
	}
	for _, b := range ds.Bastion {
		h.bastion[b.GrantID] = append(h.bastion[b.GrantID], b)
	}
	ds.Grants, ds.Bastion = nil, nil
	return ds, h
}

// full is base with every held entry: the whole state, for a full apply.
// Entries whose deadline passed before gone (they open nothing; the server
// deletes their rows without a revision) are dropped from h first, so that
// what the agent holds between snapshots stays bounded by the live grants.
func (h *held) full(base wire.DesiredState, gone time.Time) wire.DesiredState {
	for id, es := range h.grants {
		es = slices.DeleteFunc(es, func(g wire.GrantEntry) bool { return !g.ExpiresAt.After(gone) })
		if len(es) == 0 {
			delete(h.grants, id)
		} else {
			h.grants[id] = es
		}
	}
	for id, es := range h.bastion {
		es = slices.DeleteFunc(es, func(b wire.BastionGrant) bool { return !b.ExpiresAt.After(gone) })
		if len(es) == 0 {
			delete(h.bastion, id)
		} else {
			h.bastion[id] = es
		}
	}
	n := 0
	for _, es := range h.grants {
		n += len(es)
	}
	base.Grants = make([]wire.GrantEntry, 0, n)
	for _, es := range h.grants {
		base.Grants = append(base.Grants, es...)
	}
	base.Bastion = h.relayView(base).Bastion
	return base
}

// relayView is base with the bastion entries only: what the relay checks
// streams against, without copying every kernel grant.
func (h *held) relayView(base wire.DesiredState) wire.DesiredState {
	base.Grants = nil
	base.Bastion = nil
	for _, es := range h.bastion {
		base.Bastion = append(base.Bastion, es...)
	}
	return base
}

// sinceForPoll is the revision to ask a delta from, or 0 for a snapshot:
// the agent must hold the applied state of that revision with ids, an Index
// of it, a backend that takes deltas, and no snapshot due.
func (a *Agent) sinceForPoll() int64 {
	if _, ok := a.srv.(deltaServer); !ok || a.cur == nil || a.failed || a.index == nil || a.held == nil ||
		a.applied != a.cur.ds.Revision || a.wantSnapshot || !time.Now().Before(a.nextSnapshot) {
		return 0
	}
	if _, ok := a.backend.(firewall.DeltaApplier); !ok {
		return 0
	}
	if _, noIDs := a.held.grants[0]; noIDs {
		return 0
	}
	return a.applied
}

// poll asks for the desired state: a delta since the held revision when
// sinceForPoll allows, a snapshot otherwise.
func (a *Agent) poll(ctx context.Context, after int64, wait time.Duration) (wire.DesiredState, error) {
	if since := a.sinceForPoll(); since > 0 {
		return a.srv.(deltaServer).DesiredSince(ctx, after, since, wait)
	}
	if ds, ok := a.srv.(deltaServer); ok {
		replaces := a.index != nil // a snapshot instead of a delta: apply it whatever its revision
		ds, err := ds.DesiredSince(ctx, after, 0, wait)
		if err == nil {
			a.wantSnapshot = false
			a.nextSnapshot = time.Now().Add(a.cfg.SnapshotEvery)
			a.fullNext = a.fullNext || replaces
		}
		return ds, err
	}
	return a.srv.Desired(ctx, after, wait)
}

// errBadDelta marks a delta the agent cannot apply exactly.
var errBadDelta = errors.New("delta cannot be applied")

// receiveDelta takes a delta answer. It reports whether it applied
// something (or asked for a snapshot, which the next poll fetches at once).
func (a *Agent) receiveDelta(ctx context.Context, ds wire.DesiredState, recvAt time.Time) bool {
	if err := a.checkDelta(ds); err != nil {
		a.log.Warn("asking the server for a full snapshot", "revision", ds.Revision, "since", ds.Since, "err", err)
		a.wantSnapshot = true
		return true
	}
	cur := &received{ds: a.cur.ds, recvAt: recvAt}
	cur.ds.Revision, cur.ds.ServerTime = ds.Revision, ds.ServerTime
	if ds.Rules {
		// A rule change: the delta's protected ports replace the held
		// ones (a nil list would mean none: refuse it).
		if ds.Protected == nil {
			return a.refuseDelta(ds, fmt.Errorf("%w: a rule change without its protected ports", errBadDelta))
		}
		cur.ds.Protected = ds.Protected
	}
	changedNothing := ds.Revision == a.cur.ds.Revision && len(ds.Changed) == 0
	// Convert what the delta replaces and what it brings before anything
	// changes: a malformed entry refuses the whole delta.
	now := time.Now()
	gateway := a.cfg.Mode == firewall.GatewayMode
	grants := map[int64][]wire.GrantEntry{}
	bastion := map[int64][]wire.BastionGrant{}
	changed := make(map[int64]bool, len(ds.Changed))
	for _, id := range ds.Changed {
		changed[id] = true
	}
	var add, del []firewall.Grant
	for _, g := range ds.Grants {
		if !changed[g.ID] || g.ID == 0 {
			return a.refuseDelta(ds, fmt.Errorf("%w: an entry of grant %d, which it does not name as changed", errBadDelta, g.ID))
		}
		gr, err := toGrant(g, a.indexShift, gateway)
		if err != nil {
			return a.refuseDelta(ds, fmt.Errorf("%w: grant %d %w", errBadDelta, g.ID, err))
		}
		grants[g.ID] = append(grants[g.ID], g)
		add = append(add, gr)
	}
	for _, b := range ds.Bastion {
		if !changed[b.GrantID] || b.GrantID == 0 {
			return a.refuseDelta(ds, fmt.Errorf("%w: a bastion entry of grant %d, which it does not name as changed", errBadDelta, b.GrantID))
		}
		bastion[b.GrantID] = append(bastion[b.GrantID], b)
	}
	for _, id := range ds.Changed {
		for _, g := range a.held.grants[id] {
			gr, err := toGrant(g, a.indexShift, gateway)
			if err == nil {
				del = append(del, gr)
			}
		}
		delete(a.held.grants, id)
		delete(a.held.bastion, id)
		if len(grants[id]) > 0 {
			a.held.grants[id] = grants[id]
		}
		if len(bastion[id]) > 0 {
			a.held.bastion[id] = bastion[id]
		}
	}
	a.cur = cur
	a.setRelayState(a.held.relayView(cur.ds), recvAt)
	a.observeSkew(cur, now)
	if ds.Rules {
		// The ports themselves changed (their sets, how they close): the
		// kernel side is a full apply of the held state, as a snapshot
		// would have been, without fetching every grant again.
		a.apply(ctx, "rules changed")
		return true
	}
	if changedNothing {
		// Only a clock sample: re-apply when the skew moved enough to
		// change the deadlines (as receive does for a snapshot).
		if nextShift(skewShift(ds.ServerTime, skewNow(recvAt, recvAt)), a.shift) != a.shift {
			a.apply(ctx, "clock skew changed")
			return true
		}
		return false
	}
	if nextShift(skewShift(ds.ServerTime, skewNow(recvAt, now)), a.shift) != a.indexShift {
		// Every deadline moves: that is a full apply.
		a.apply(ctx, "clock skew changed")
		return true
	}
	start := time.Now()
	d := a.index.Update(del, add, now)
	res, err := firewall.ApplyResult{}, a.claimTable()
	if err == nil {
		res, err = a.backend.(firewall.DeltaApplier).ApplyDelta(ctx, d, now)
	}
	if err != nil {
		// The kernel refused it (an element it expired early, a table
		// someone edited) and holds the previous state: apply the whole
		// state the delta produced, which repairs whatever was off.
		a.log.Warn("delta not applied; applying the whole state", "revision", ds.Revision, "err", err)
		a.index = nil
		a.apply(ctx, "delta refused")
		return true
	}
	res.Elements = a.index.Elements()
	a.finish(ctx, cur.ds.Revision, "delta", start, now, res, nil)
	return true
}

// checkDelta refuses a delta that is not based on the state the agent
// holds, or whose revision is below the high-water mark.
func (a *Agent) checkDelta(ds wire.DesiredState) error {
	switch {
	case a.cur == nil || a.held == nil || a.index == nil || a.failed:
		return fmt.Errorf("%w: the agent holds no applied state to base it on", errBadDelta)
	case ds.Since != a.cur.ds.Revision || ds.Since != a.applied:
		return fmt.Errorf("%w: it is based on revision %d, the agent holds %d", errBadDelta, ds.Since, a.cur.ds.Revision)
	case ds.Revision < a.highWater || ds.Revision < ds.Since:
		return fmt.Errorf("%w: revision %d is below revision %d the agent applied", errBadDelta, ds.Revision, max(a.highWater, ds.Since))
	case ds.Mode != "" && ds.Mode != a.cur.ds.Mode:
		return fmt.Errorf("%w: of another mode (%s)", errBadDelta, ds.Mode)
	}
	return nil
}

// refuseDelta asks for a snapshot instead of ds, changing nothing.
func (a *Agent) refuseDelta(ds wire.DesiredState, err error) bool {
	a.log.Warn("refusing a delta; asking the server for a full snapshot", "revision", ds.Revision, "since", ds.Since, "err", err)
	a.wantSnapshot = true
	return true
}
