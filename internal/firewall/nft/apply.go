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
//     current time (now plus the time Apply has taken so far), rounded down
//     to the millisecond; elements with less than 1 ms left are left out. An
//     element whose kernel deadline is off by more than Tolerance is deleted
//     and re-added in the batch (re-adding alone does not update the timeout
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
	b.mu.Lock()
	defer b.mu.Unlock()
	d := desiredState(rs, now)
	var (
		res firewall.ApplyResult
		err error
	)
	for attempt := 1; attempt <= maxApplyAttempts; attempt++ {
		res, err = b.applyOnce(ctx, d, clk)
		if err == nil || !isNotFound(err) {
			break
		}
	}
	if err != nil {
		return firewall.ApplyResult{}, fmt.Errorf("applying ruleset to table inet %s: %w", tableName, err)
	}
	return res, nil
}

func (b *Backend) applyOnce(ctx context.Context, d desired, clk clock) (res firewall.ApplyResult, err error) {
	c, end, err := b.begin(ctx)
	if err != nil {
		return res, err
	}
	defer func() { err = end(err) }()
	l := newLayout()
	ks, err := readKernel(c, l, clk)
	if err != nil {
		return res, err
	}
	p := makePlan(ks, d)
	if p.empty() {
		return res, nil
	}
	if err := p.queue(c, l, clk.at()); err != nil {
		return res, err
	}
	if b.beforeFlush != nil {
		b.beforeFlush(c, l)
	}
	b.flushes++
	if err := c.Flush(); err != nil {
		return res, fmt.Errorf("sending batch: %w", err)
	}
	return p.result(), nil
}

// desired is the state Apply aims for, in kernel terms.
type desired struct {
	protected []firewall.PortKey
	elements  map[firewall.ElementKey]time.Time // deadlines
}

func desiredState(rs firewall.Ruleset, now time.Time) desired {
	d := desired{protected: rs.SortedProtected(), elements: map[firewall.ElementKey]time.Time{}}
	for _, e := range rs.Elements(now) {
		if e.Expires.Sub(now) < time.Millisecond || !validElement(e.Key()) {
			continue
		}
		d.elements[e.Key()] = e.Expires
	}
	return d
}
