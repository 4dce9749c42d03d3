package nft

import (
	"context"
	"fmt"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

var _ firewall.DeltaApplier = (*Backend)(nil)

// ApplyDelta implements firewall.DeltaApplier: it sends d's deletions and
// additions of grant elements (and, in gateway mode, DNAT translations) as
// one netlink batch, without reading the table, so its cost follows the
// change, not the number of elements. The layout is the last successful
// Apply's (a delta never changes protected ports, rules or mappings).
//
// Failure semantics: the kernel commits the batch whole or refuses it whole
// (an element to delete that it no longer holds: ENOENT; one to add that
// overlaps another: EEXIST; no table: ENOENT); on any error the previous
// state stays, the cache of the table is dropped, and the caller must do a
// full Apply. When the cache of the table was valid before the batch and no
// one else committed meanwhile (the ruleset generation moved by exactly our
// batch), the cache is updated in place, so the next full Apply still need
// not read the table back.
func (b *Backend) ApplyDelta(ctx context.Context, d firewall.Delta, now time.Time) (res firewall.ApplyResult, err error) {
	clk := newClock(now)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.layout == nil {
		return res, firewall.ErrNeedFullApply
	}
	if !b.clockSteady(callerOffset(now)) {
		// The wall clock was stepped or the machine suspended since the
		// table was last read or written: the kernel may hold elements
		// past their deadline that no delta names (the Index takes them
		// for expired, and a revocation of one deletes nothing). A full
		// Apply reads the table and removes them. Asked with or without
		// a cache: the cache is gone after anyone else's commit, and the
		// kernel's clock is not (TestClockStepCaughtWithoutACache).
		b.cache = nil
		return res, firewall.ErrNeedFullApply
	}
	if d.Empty() {
		return res, nil
	}
	l := *b.layout
	gateway := l.mode == firewall.GatewayMode
	del, add := map[string][]elem{}, map[string][]elem{}
	for _, e := range d.Del {
		if validElement(e.Key(), gateway) {
			name := l.spec(grantRole(e.From, e.To), e.From.Is6()).name
			del[name] = append(del[name], grantElem(e, false))
		}
	}
	for _, e := range d.Add {
		if validElement(e.Key(), gateway) {
			name := l.spec(grantRole(e.From, e.To), e.From.Is6()).name
			add[name] = append(add[name], grantElem(e, false))
		}
	}
	if gateway {
		for _, t := range d.DelTranslations {
			if validElement(firewall.ElementKey{From: t.From, To: t.To, Dest: t.Mapping.Public}, true) {
				name := l.spec(dnatRole(t.From, t.To), t.From.Is6()).name
				del[name] = append(del[name], dnatElem(t, false))
			}
		}
		for _, t := range d.AddTranslations {
			if validElement(firewall.ElementKey{From: t.From, To: t.To, Dest: t.Mapping.Public}, true) {
				name := l.spec(dnatRole(t.From, t.To), t.From.Is6()).name
				add[name] = append(add[name], dnatElem(t, false))
			}
		}
	}
	c, end, err := b.begin(ctx)
	if err != nil {
		return res, fmt.Errorf("applying a delta to table inet %s: %w", tableName, err)
	}
	defer func() {
		if err != nil {
			b.cache = nil
			err = fmt.Errorf("applying a delta to table inet %s: %w", tableName, err)
		}
		err = end(err)
	}()
	// Whether the cache can follow the batch is asked of the kernel after
	// it, not before: the generation after our batch is exactly one above
	// the cache's only when no one else committed since the cache was
	// last true (one netlink round trip fewer before the grant opens).
	cached := b.cache != nil
	at := clk.at()
	for _, s := range l.specs {
		if err := queueElements(c, l, s, del[s.name], time.Time{}, c.SetDeleteElements); err != nil {
			return res, err
		}
	}
	for _, s := range l.specs {
		if err := queueElements(c, l, s, add[s.name], at, c.SetAddElements); err != nil {
			return res, err
		}
	}
	b.flushes++
	if err := c.Flush(); err != nil {
		return res, fmt.Errorf("sending batch: %w", err)
	}
	if b.afterDelta != nil {
		b.afterDelta()
	}
	next, gerr := uint32(0), error(nil)
	if cached {
		next, gerr = b.genID()
	}
	if cached && gerr == nil && next == b.cacheGen+1 {
		for name, els := range del {
			if s := b.cache.sets[name]; s != nil {
				for _, e := range els {
					delete(s.byID, e.id())
				}
				s.order = nil
			}
		}
		for name, els := range add {
			if s := b.cache.sets[name]; s != nil {
				for _, e := range els {
					if e.deadline().Sub(at) >= time.Millisecond {
						s.byID[e.id()] = e
					}
				}
				s.order = nil
			}
		}
		b.cacheGen = next
		b.appendState(del, add)
	} else {
		b.cache = nil
	}
	return firewall.ApplyResult{Changed: true, Added: len(d.Add), Removed: len(d.Del)}, nil
}
