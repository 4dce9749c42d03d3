package agent

import (
	"context"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// skipResync does the periodic resync's work without a full apply when the
// backend proves the gate intact (firewall.IntactReporter), and reports
// whether it did. A full apply of the held state rebuilds the desired
// elements, diffs them against the backend's cache of the table and
// rebuilds the delta Index: at a million grants seconds of CPU and hundreds
// of megabytes every minute, to find nothing to do. It finds nothing when:
//   - the backend's cache is what the kernel holds (Intact: the ruleset
//     generation did not move since our own last batch, the clock kept its
//     offset to the kernel's, and the periodic full read is not due), and
//   - the state the agent would apply is the one it applied last: the
//     current revision applied without error and not rolled back, the same
//     clock-skew shift (the same deadlines), and no offline break-glass
//     opening injected then or live now (their set changes with time and
//     revocations, not with revisions).
//
// Anything else, or any error, and the resync applies in full as before.
// The inventory is read and a report sent either way, as a resync does.
func (a *Agent) skipResync(ctx context.Context) bool {
	ir, ok := a.backend.(firewall.IntactReporter)
	if !ok || a.cur == nil || a.failed || a.index == nil || a.lastRS == nil || a.wantSnapshot || a.fullNext ||
		a.applied != a.cur.ds.Revision || a.cur.ds.Revision < a.highWater || a.bgApplied > 0 {
		return false
	}
	now := time.Now()
	if nextShift(skewShift(a.cur.ds.ServerTime, skewNow(a.cur.recvAt, now)), a.shift) != a.shift {
		return false
	}
	probeErr := a.probe(ctx)
	if probeErr != nil || a.inventory == nil || !a.inventory.CanEnforce || a.breakGlassLive(now) {
		return false
	}
	if intact, err := ir.Intact(ctx, now); err != nil || !intact {
		return false
	}
	start := time.Now()
	a.inventory = a.proc.inventory(a.cfg.Mode, probeErr)
	a.inventory.SSHHostKeys = readHostKeys(a.cfg.SSHHostKeys)
	a.nextResync = now.Add(a.cfg.ResyncEvery)
	a.finish(ctx, a.cur.ds.Revision, "resync", start, now, firewall.ApplyResult{Elements: a.elements}, nil, true)
	return true
}

// breakGlassLive reports whether the break-glass log holds an opening live
// at now (or cannot be read: then the resync applies in full, as a full
// apply decides what to inject).
func (a *Agent) breakGlassLive(now time.Time) bool {
	l, err := openBGLog(a.cfg.StateDir)
	if err != nil {
		return true
	}
	defer l.Close()
	recs, err := l.records()
	if err != nil {
		return true
	}
	if len(recs) == 0 {
		return false
	}
	key, err := loadBGKey(a.cfg.StateDir)
	if err != nil || key == nil || a.bgRevoked == nil {
		return true
	}
	return len(liveUses(recs, key, a.bgRevoked, a.Status().Target, now)) > 0
}
