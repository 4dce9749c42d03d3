package nft

import (
	"context"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Tolerance is how far an element's deadline in the kernel may differ from
// the desired one before Apply rewrites the element. It absorbs the
// millisecond rounding of timeouts and, for elements whose deadline comes
// from the kernel's time left rather than our comment, the kernel's tick
// (4 ms at HZ=250) and the time a read takes.
const Tolerance = 50 * time.Millisecond

// maxApplyAttempts bounds the retries of a batch refused with ENOENT.
const maxApplyAttempts = 3

// Apply makes table inet jitgate hold exactly rs as of now:
//
//   - It reads what the kernel holds, computes the difference to
//     rs.SortedProtected() and rs.Elements(now), and sends the whole
//     difference as one netlink batch, which the kernel commits atomically.
//     A packet sees either the old gate or the new one, never a mix, so no
//     intermediate state can open a port.
//   - Missing objects are created in that batch. If the table holds anything
//     but our chain and sets, or those have the wrong types, the table is
//     deleted and rebuilt within the batch. If only the chain's rules differ
//     from ours (their tags), the chain is flushed and refilled within the
//     batch. The drop rule's counter is carried over either way.
//   - Each grant element gets a kernel timeout of its deadline minus the
//     current time (now plus the time since the caller read it: see
//     newClock), rounded down to the millisecond; elements with less than
//     1 ms left are left out. An element whose kernel deadline is off by
//     more than Tolerance is deleted and re-added in the batch (re-adding alone does not update the timeout
//     on every kernel).
//   - Deleting many elements from a concatenated interval set is slow in the
//     kernel (superlinear in the number deleted; see shouldRebuild), so
//     when a diff deletes many, the batch rebuilds the table with the
//     desired elements instead. The result is the same.
//
// ApplyResult counts the logical change (elements and ports that appear or
// disappear), whichever way the batch achieved it.
//
// Idempotence: when the kernel already holds the state, nothing is sent and
// Changed is false.
//
// Partial failure: if the kernel refuses any part of the batch it refuses all
// of it, and the previous state stays in force; Apply returns the error and
// the connection is reopened on the next call. A batch refused because an
// element it deletes expired in the meantime (ENOENT) is recomputed and
// retried, up to three times. If ctx ends while the batch is in flight the
// outcome is unknown (committed or not, never half): the caller should
// Apply again.
func (b *Backend) Apply(ctx context.Context, rs firewall.Ruleset, now time.Time) (firewall.ApplyResult, error) {
	clk := newClock(now)
	off := callerOffset(now)
	if err := rs.Validate(); err != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to table inet %s: %w", tableName, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d := desiredState(rs, now, false)
	var (
		res firewall.ApplyResult
		err error
	)
	trust := true
	for attempt := 1; attempt <= maxApplyAttempts; attempt++ {
		var cached bool
		res, cached, err = b.applyOnce(ctx, d, clk, off, trust)
		if err == nil {
			break
		}
		if cached {
			// The cache may have been wrong in a way the generation cannot
			// show (an element the kernel expired early): read everything.
			trust = false
			continue
		}
		if !isNotFound(err) {
			break
		}
	}
	if err != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to table inet %s: %w", tableName, err)
	}
	res.Elements = d.grantCount()
	b.layout = &d.layout
	return res, nil
}

// applyOnce plans against the cache when trust is set and the cache is
// valid (cached reports that it did), else against a full read of the
// table, and sends the difference.
func (b *Backend) applyOnce(ctx context.Context, d desired, clk clock, off int64, trust bool) (res firewall.ApplyResult, cached bool, err error) {
	c, end, err := b.begin(ctx)
	if err != nil {
		return res, false, err
	}
	defer func() {
		if err != nil {
			b.cache = nil
		}
		err = end(err)
	}()
	l := d.layout
	gen, err := b.genID()
	if err != nil {
		return res, false, err
	}
	var (
		ks     kernelState
		p      plan
		readAt time.Time
	)
	fromFile := false
	if b.cache == nil && b.state != nil && !b.stateTried {
		// A restarted process: trust the state file when it describes
		// this very generation of the kernel (statefile.go), diffed
		// against the desired sets as it is read rather than read into a
		// copy of the table beside them.
		b.stateTried = true
		there, err := tableExists(c)
		if err != nil {
			return res, false, err
		}
		if trust {
			var held kernelState
			if held, fromFile = b.diffState(gen, there, off, d, clk.at()); fromFile {
				p = makePlan(held, d)
				d.clearHeld()
				ks, cached = held, !p.rebuild && !p.rules
				if cached {
					// What the kernel holds once the plan is sent (or
					// now, when there is nothing to send).
					after := ks.after(d)
					b.cache, b.cacheGen, b.cacheRead = &after, gen, time.Now()
				}
			}
		} else {
			b.loadState(gen, there, off)
		}
	}
	if !fromFile && trust && b.cache != nil && b.cacheGen == gen && b.clockSteady(off) && (time.Since(b.cacheRead) < fullReadEvery || b.cache.elements() > fullReadMax) {
		ks, cached = b.cache.withoutExpired(clk.at()), true
		p = makePlan(ks, d)
		// A rebuild or a refill carries the drop counter over: take it
		// from the kernel, not from the cache.
		cached = !p.rebuild && !p.rules
	}
	if !cached {
		readAt = time.Now()
		if ks, err = readKernel(c, l, clk); err != nil {
			return res, false, err
		}
		b.reads++
		p = makePlan(ks, d)
	}
	if p.empty() {
		if !cached {
			b.cache, b.cacheGen, b.cacheRead, b.cacheClock = &ks, gen, readAt, off
			b.saveState()
		}
		return res, cached, nil
	}
	if err := p.queue(c, l, clk.at()); err != nil {
		return res, cached, err
	}
	if b.beforeFlush != nil {
		b.beforeFlush(c, l)
	}
	b.flushes++
	b.cache = nil
	if err := c.Flush(); err != nil {
		return res, cached, fmt.Errorf("sending batch: %w", err)
	}
	// Our batch is one transaction: if the generation moved by exactly one,
	// nobody else committed between our read and now, and the kernel holds
	// what we asked for.
	if next, err := b.genID(); err == nil && next == gen+1 && b.beforeFlush == nil {
		after := ks.after(d)
		b.cache, b.cacheGen, b.cacheClock = &after, next, off
		if !cached {
			b.cacheRead = readAt
		}
		b.saveState()
	} else if err == nil {
		// Someone else committed too: no cache, but the table's deadlines
		// are on this clock now (what was kept was checked against it), the
		// reference ApplyDelta checks the clock against.
		b.cacheClock = off
	} else {
		// The batch committed; only the cache is lost, and the socket may
		// be out of step: start afresh on the next call.
		b.reset()
	}
	return p.result(), cached, nil
}

// withoutExpired drops the cached elements whose deadline has come: the
// kernel removes them on its own.
func (ks *kernelState) withoutExpired(now time.Time) kernelState {
	for _, s := range ks.sets {
		for id, e := range s.byID {
			if d := e.deadline(); !d.IsZero() && !d.After(now) {
				delete(s.byID, id)
			}
		}
		s.order = nil
	}
	return *ks
}

// elements counts the cached elements of every set.
func (ks *kernelState) elements() int {
	n := 0
	for _, s := range ks.sets {
		n += len(s.byID)
	}
	return n
}

// after is the kernel's state once a batch achieving d committed.
func (ks kernelState) after(d desired) kernelState {
	for _, s := range d.sets {
		s.order = nil // the put order served the batch; a cache needs none (16 bytes an element)
	}
	return kernelState{tableExists: true, mode: d.layout.mode, layoutOK: true, rulesOK: true, rate: d.layout.rate, counters: ks.counters, sets: d.sets}
}

var _ firewall.IntactReporter = (*Backend)(nil)

// Intact implements firewall.IntactReporter: the table holds exactly what
// this backend's last batch left (less what the kernel expired) when the
// backend knows what that is (its cache: valid only while the ruleset
// generation moved by exactly our own batches, see applyOnce and
// ApplyDelta), the kernel's ruleset generation is still the cache's (no
// one, not even nft -f of another table, committed anything since), the
// caller's clock kept its offset to the kernel's (the cache's deadlines
// still say what the kernel drops when), and Apply would trust the cache
// without its periodic full read (fullReadEvery, fullReadMax). An Apply of
// the same state would then send nothing: it would diff against this very
// cache. One netlink request, whatever the size of the table.
func (b *Backend) Intact(ctx context.Context, now time.Time) (bool, error) {
	off := callerOffset(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cache == nil || b.layout == nil || !b.clockSteady(off) ||
		(time.Since(b.cacheRead) >= fullReadEvery && b.cache.elements() <= fullReadMax) {
		return false, nil
	}
	_, end, err := b.begin(ctx)
	if err != nil {
		return false, err
	}
	gen, err := b.genID()
	if err = end(err); err != nil {
		return false, err
	}
	return b.cache != nil && gen == b.cacheGen, nil
}
