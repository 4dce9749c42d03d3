package agent

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/jitgate/jitgate/internal/client"
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
// the base of a delta). Grant entries are kept converted and compact
// (heldGrant, 32 bytes): at a million grants the decoded wire entries (a
// struct of 88 bytes, a source string and a protocol string each) and a map
// of slices of them were ~180 MB the agent held for nothing but deltas.
type held struct {
	grants  map[int64]heldGrant   // the first entry of each grant
	more    map[int64][]heldGrant // the further entries (behind a gateway, one per address of the target)
	bastion map[int64][]wire.BastionGrant
	// dests are the gateway destinations the entries name (heldGrant.dest
	// is an index into it, plus one; 0: none).
	dests   []netip.Addr
	destIdx map[netip.Addr]uint32
	// err is why an entry of the snapshot could not be converted: the
	// state is malformed and is not applied (as toRuleset refuses it).
	err error
}

// heldGrant is one grant entry as the agent holds it: the source prefix as
// sent (address bytes, length, family), protocol, port, destination (an
// index into held.dests) and the deadline by the server's clock (Unix ns).
type heldGrant struct {
	addr  [16]byte
	exp   int64
	dest  uint32
	port  uint16
	bits  uint8
	proto uint8 // the protocol; heldV4 set for an IPv4 source
}

const heldV4 = 0x80

func newHeld(n int) *held {
	return &held{grants: make(map[int64]heldGrant, n), more: map[int64][]heldGrant{},
		bastion: map[int64][]wire.BastionGrant{}, destIdx: map[netip.Addr]uint32{}}
}

// convert turns an entry into a heldGrant, refusing what toGrant refuses.
func (h *held) convert(g wire.GrantEntry, gateway bool) (heldGrant, error) {
	gr, err := toGrant(g, 0, gateway)
	if err != nil {
		return heldGrant{}, err
	}
	if uint8(gr.Proto)&heldV4 != 0 {
		return heldGrant{}, fmt.Errorf("protocol %d out of range", gr.Proto)
	}
	a := gr.Source.Addr()
	hg := heldGrant{addr: a.As16(), exp: firewall.UnixNano(g.ExpiresAt), port: gr.Port, bits: uint8(gr.Source.Bits()), proto: uint8(gr.Proto)}
	if a.Is4() {
		hg.proto |= heldV4
	}
	if gr.Dest.IsValid() {
		i, ok := h.destIdx[gr.Dest]
		if !ok {
			h.dests = append(h.dests, gr.Dest)
			i = uint32(len(h.dests))
			h.destIdx[gr.Dest] = i
		}
		hg.dest = i
	}
	return hg, nil
}

// grant is hg as a firewall grant, its deadline moved shift earlier (see
// toRuleset).
func (h *held) grant(hg heldGrant, shift time.Duration) firewall.Grant {
	a := netip.AddrFrom16(hg.addr)
	if hg.proto&heldV4 != 0 {
		a = netip.AddrFrom4([4]byte(hg.addr[12:]))
	}
	var dest netip.Addr
	if hg.dest > 0 {
		dest = h.dests[hg.dest-1]
	}
	return firewall.Grant{Source: netip.PrefixFrom(a, int(hg.bits)), Dest: dest, Proto: firewall.Protocol(hg.proto &^ heldV4),
		Port: hg.port, Expires: time.Unix(0, hg.exp).UTC().Add(-shift)}
}

// put adds the entries of grant id (replacing none: the caller deleted
// what they replace).
func (h *held) put(id int64, hg heldGrant) {
	if _, ok := h.grants[id]; !ok {
		h.grants[id] = hg
		return
	}
	h.more[id] = append(h.more[id], hg)
}

// remove forgets grant id, and returns its entries as grants with shift.
func (h *held) remove(id int64, shift time.Duration) []firewall.Grant {
	var out []firewall.Grant
	if hg, ok := h.grants[id]; ok {
		out = append(out, h.grant(hg, shift))
		for _, m := range h.more[id] {
			out = append(out, h.grant(m, shift))
		}
	}
	delete(h.grants, id)
	delete(h.more, id)
	delete(h.bastion, id)
	return out
}

// split takes the entries out of a snapshot: the base is what stays the
// same across deltas (protected ports, mappings, mode), the entries go to
// held, converted (a malformed one is held.err). The snapshot's entries are
// not kept.
func split(ds wire.DesiredState, gateway bool) (wire.DesiredState, *held) {
	h := newHeld(len(ds.Grants))
	for i, g := range ds.Grants {
		hg, err := h.convert(g, gateway)
		if err != nil {
			if h.err == nil {
				h.err = fmt.Errorf("grants[%d] %w", i, err)
			}
			continue
		}
		h.put(g.ID, hg)
	}
	for _, b := range ds.Bastion {
		h.bastion[b.GrantID] = append(h.bastion[b.GrantID], b)
	}
	ds.Grants, ds.Bastion = nil, nil
	return ds, h
}

// dropExpired forgets the entries whose deadline passed before gone (they
// open nothing; the server deletes their rows without a revision), so that
// what the agent holds between snapshots stays bounded by the live grants.
func (h *held) dropExpired(gone time.Time) {
	g := firewall.UnixNano(gone)
	for id, hg := range h.grants {
		ms := slices.DeleteFunc(h.more[id], func(m heldGrant) bool { return m.exp <= g })
		if hg.exp <= g {
			if len(ms) == 0 {
				delete(h.grants, id)
				delete(h.more, id)
				continue
			}
			h.grants[id], ms = ms[0], ms[1:]
		}
		if len(ms) == 0 {
			delete(h.more, id)
		} else {
			h.more[id] = ms
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
}

// appendGrants appends every held entry to gs as grants with shift.
func (h *held) appendGrants(gs []firewall.Grant, shift time.Duration) []firewall.Grant {
	n := len(h.grants)
	for _, ms := range h.more {
		n += len(ms)
	}
	gs = slices.Grow(gs, n)
	for id, hg := range h.grants {
		gs = append(gs, h.grant(hg, shift))
		for _, m := range h.more[id] {
			gs = append(gs, h.grant(m, shift))
		}
	}
	return gs
}

// all yields every held entry as a grant with shift.
func (h *held) all(shift time.Duration) iter.Seq[firewall.Grant] {
	return func(yield func(firewall.Grant) bool) {
		for id, hg := range h.grants {
			if !yield(h.grant(hg, shift)) {
				return
			}
			for _, m := range h.more[id] {
				if !yield(h.grant(m, shift)) {
					return
				}
			}
		}
	}
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
// sinceForPoll allows, a snapshot otherwise. A pending report goes with it
// when the server takes one (fetch).
func (a *Agent) poll(ctx context.Context, after int64, wait time.Duration) (wire.DesiredState, error) {
	if since := a.sinceForPoll(); since > 0 {
		return a.fetch(ctx, after, since, wait)
	}
	if _, ok := a.srv.(deltaServer); ok {
		replaces := a.index != nil // a snapshot instead of a delta: apply it whatever its revision
		ds, err := a.fetch(ctx, after, 0, wait)
		if err == nil {
			a.wantSnapshot = false
			a.nextSnapshot = time.Now().Add(a.cfg.SnapshotEvery)
			a.fullNext = a.fullNext || replaces
		}
		return ds, err
	}
	return a.srv.Desired(ctx, after, wait)
}

// reportPoller is the server call that records a report and answers the
// next long-poll on the same exchange; *client.Client implements it.
type reportPoller interface {
	ReportPoll(ctx context.Context, r wire.AgentReport, after, since int64, wait time.Duration) (wire.DesiredState, bool, error)
}

// carriesReports reports whether the loop's polls carry the pending report
// (fetch): the server takes a report with its next poll.
func (a *Agent) carriesReports() bool {
	_, rp := a.srv.(reportPoller)
	_, ds := a.srv.(deltaServer)
	return rp && ds
}

// fetch polls for the desired state (DesiredSince). A pending report is
// sent with the poll, one exchange for both (ReportPoll). Whatever goes
// wrong with it, the agent falls back to what it did before: the report on
// its own, when the server answered an error (it may refuse only the
// combined call), then the poll on its own; a report not delivered stays
// pending and goes with the next poll. A connection that failed goes
// straight to the poll (which moves on to the next server). A server that
// recorded the report but answered 204 (one older than this call) gets the
// poll on its own too. Only 401 and 410 end it there: they end the loop
// (final).
func (a *Agent) fetch(ctx context.Context, after, since int64, wait time.Duration) (wire.DesiredState, error) {
	if rp, ok := a.srv.(reportPoller); ok && a.pending != nil && a.carriesReports() {
		rep := a.reportToSend(ctx)
		ds, answered, err := rp.ReportPoll(ctx, rep, after, since, wait)
		switch st := client.StatusOf(err); {
		case err == nil:
			a.delivered(rep)
			if answered {
				return ds, nil
			}
		case st == http.StatusUnauthorized || st == http.StatusGone || ctx.Err() != nil:
			return ds, err
		case st != 0:
			if ferr := a.flushReport(ctx); ferr != nil {
				if st := client.StatusOf(ferr); st == http.StatusUnauthorized || st == http.StatusGone {
					return ds, ferr
				}
				err = ferr
			} else {
				err = nil
			}
		}
		if err != nil {
			a.cfg.Metrics.reportFailed()
			a.log.Warn("report not delivered; will retry", "revision", rep.Revision, "err", err)
		}
	}
	return a.srv.(deltaServer).DesiredSince(ctx, after, since, wait)
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
	type entry struct {
		id int64
		hg heldGrant
	}
	var grants []entry
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
		hg, err := a.held.convert(g, gateway)
		if err != nil {
			return a.refuseDelta(ds, fmt.Errorf("%w: grant %d %w", errBadDelta, g.ID, err))
		}
		grants = append(grants, entry{g.ID, hg})
		add = append(add, a.held.grant(hg, a.indexShift))
	}
	for _, b := range ds.Bastion {
		if !changed[b.GrantID] || b.GrantID == 0 {
			return a.refuseDelta(ds, fmt.Errorf("%w: a bastion entry of grant %d, which it does not name as changed", errBadDelta, b.GrantID))
		}
		bastion[b.GrantID] = append(bastion[b.GrantID], b)
	}
	for _, id := range ds.Changed {
		del = append(del, a.held.remove(id, a.indexShift)...)
		if len(bastion[id]) > 0 {
			a.held.bastion[id] = bastion[id]
		}
	}
	for _, e := range grants {
		a.held.put(e.id, e.hg)
	}
	a.cur = cur
	a.setRelayState(a.held.relayView(cur.ds), recvAt)
	a.observeSkew(cur, now)
	if a.bgApplied > 0 && len(ds.BreakGlassRevoked) > 0 && !changedNothing {
		// A revocation may end an offline break-glass opening the Index
		// holds, which no delta names: a full apply decides them again
		// (injectBreakGlass leaves out a revoked token's). The server
		// sends a revocation as a snapshot; an answer that carries it in
		// a delta must close it as soon (TestBreakGlassRevokedByADelta).
		a.apply(ctx, "break-glass revocations")
		return true
	}
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
	a.finish(ctx, cur.ds.Revision, "delta", start, now, res, nil, true)
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
