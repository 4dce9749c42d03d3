package nft

import (
	"github.com/google/nftables/expr"

	"github.com/jitgate/jitgate/internal/firewall"
)

// plan is the difference between the kernel and the desired state, and how
// the batch will achieve it.
type plan struct {
	// The difference, per set name, in a deterministic order.
	add, del map[string][]elem
	res      firewall.ApplyResult

	// How: build the table from scratch (deleting the old one if it
	// exists), or refill the chains, or neither (element changes only).
	rebuild, tableExists, rules bool
	d                           desired // all desired, for a rebuild
	counters                    map[string]expr.Counter
}

func makePlan(ks kernelState, d desired) plan {
	p := plan{
		add: map[string][]elem{}, del: map[string][]elem{},
		tableExists: ks.tableExists,
		rules:       !ks.rulesOK || ks.rate != 0 && ks.rate != d.layout.rate,
		d:           d,
		counters:    ks.counters,
	}
	count := func(r role, added, removed int) {
		switch r {
		case roleGrants, roleHosts:
			p.res.Added += added
			p.res.Removed += removed
		case roleProtected:
			p.res.ProtectedAdded += added
			p.res.ProtectedRemoved += removed
		}
	}
	// A table built anew is sent from the desired sets (plan.queue): the
	// lists would be a second copy of every element (32 MB at a first
	// load of a million), so only the counts are kept.
	rebuilt := !ks.tableExists || !ks.layoutOK || ks.mode != d.layout.mode
	list := func(m map[string][]elem, name string, e elem) {
		if !rebuilt {
			m[name] = append(m[name], e)
		}
	}
	var delInterval, heldInterval, wantInterval int
	for _, spec := range d.layout.specs {
		want, held := d.sets[spec.name], ks.sets[spec.name]
		if held == nil {
			held = newSetElems(spec)
		}
		for _, id := range want.ids() {
			w := want.byID[id]
			if w.held() {
				continue // the kernel holds it as it is (diffState)
			}
			h, ok := held.byID[id]
			switch {
			case !ok:
				list(p.add, spec.name, w)
				count(spec.role, 1, 0)
			case !h.same(w):
				list(p.del, spec.name, h)
				list(p.add, spec.name, w)
				count(spec.role, 1, 1)
			}
		}
		for _, id := range held.ids() {
			if _, ok := want.byID[id]; !ok {
				list(p.del, spec.name, held.byID[id])
				count(spec.role, 0, 1)
			}
		}
		if spec.interval() {
			delInterval += len(p.del[spec.name])
			heldInterval += held.len() + held.matched
			wantInterval += want.len()
		}
	}
	// Sets of another layout (the table is of the other mode): all of their
	// elements disappear with the rebuild.
	for name, held := range ks.sets {
		if _, ok := d.sets[name]; !ok {
			count(held.spec.role, 0, held.len())
		}
	}
	p.rebuild = rebuilt || shouldRebuild(delInterval, heldInterval, wantInterval)
	return p
}

// shouldRebuild decides whether deleting del of the held elements costs the
// kernel more than building a fresh table holding the desired ones.
//
// Measured on kernel 6.18 with an ipv6_addr . inet_proto . inet_service set,
// one nft -f batch each: adding 5,000, 20,000 and 100,000 elements to a new
// set takes ~60 ms, ~270 ms and ~2.8 s. Deleting 10, 100, 500, 1,000 and
// 2,500 of 5,000 takes ~15 ms, ~50 ms, ~640 ms, 2.8 s and 74 s; 1,000 of
// 20,000 3.7 s; 30 and 300 of 100,000 ~170 ms and 1.5 s. Deletion cost grows
// with the square of the number deleted and with the set size, while a
// table deleted whole is freed at once. The model below fits those numbers
// to within a factor of two, which is all a choice between two correct
// batches needs.
func shouldRebuild(del, held, want int) bool {
	if del < 16 {
		return false
	}
	k, n, w := float64(del), float64(held), float64(want)
	deleteCost := 2.8e-6*k*k + (2e-4+5e-8*n)*k
	rebuildCost := 1.3e-5*w + 1.5e-10*w*w
	return deleteCost > rebuildCost
}

func (p plan) empty() bool {
	return !p.rebuild && !p.rules && len(p.add) == 0 && len(p.del) == 0
}

func (p plan) result() firewall.ApplyResult {
	r := p.res
	r.Changed = true
	return r
}
