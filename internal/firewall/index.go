package firewall

import (
	"context"
	"errors"
	"iter"
	"net/netip"
	"slices"
	"time"
)

// Delta is a change of a gate's grant elements, and in gateway mode of the
// DNAT translations that follow them, as Index computes it: elements to
// delete (as they were written) and to add. An element whose deadline
// changed is in both. Protected ports and mappings never change in a Delta:
// a change of them takes a full Apply.
type Delta struct {
	Del, Add                         []Element
	DelTranslations, AddTranslations []Translation
}

// DeltaApplier is implemented by backends that can apply a Delta without
// reading back what the gate holds: the agent's incremental path.
//
// ApplyDelta assumes the gate holds what the backend's last successful Apply
// and the Deltas since produced (Index computes Deltas against that), and
// sends d as one atomic batch: deletions first, then additions, each added
// element with a timeout of Expires-now (one with less than 1 ms left is
// skipped). On any error nothing of d is applied and the caller must do a
// full Apply, which repairs whatever the error was about (an element the
// kernel expired early, a table someone edited or deleted). Without a
// successful Apply before it, it returns ErrNeedFullApply.
type DeltaApplier interface {
	ApplyDelta(ctx context.Context, d Delta, now time.Time) (ApplyResult, error)
}

// IntactReporter is implemented by backends that can prove cheaply that the
// gate still holds exactly what their last successful Apply or ApplyDelta
// left (less what expired on its own), so that re-applying the same state
// would change nothing: the agent's periodic resync is then skipped, which
// at a million grants saves seconds of CPU a minute. Intact must answer
// false whenever it cannot prove it (the agent then applies in full).
type IntactReporter interface {
	Intact(ctx context.Context, now time.Time) (bool, error)
}

// ErrNeedFullApply is ApplyDelta's answer when the backend does not know
// the gate's layout yet (no successful Apply in this process).
var ErrNeedFullApply = errors.New("the gate needs a full apply first")

// Empty reports whether d changes nothing.
func (d Delta) Empty() bool {
	return len(d.Del) == 0 && len(d.Add) == 0 && len(d.DelTranslations) == 0 && len(d.AddTranslations) == 0
}

// Index holds the grants of one Ruleset normalised into elements, and
// updates both for a change of some grants in time proportional to the
// change, not to the number of grants: the agent's incremental path, where
// Ruleset.Elements would sort every grant again for each one that changed.
//
// Elements are kept per overlap component (see Ruleset.Elements): grant
// sources are prefixes, which either nest or are disjoint, so a component is
// the grants inside one root prefix (a grant no other grant's prefix
// contains), and a change recomputes the root's component only. Changing a
// grant wider than a host that becomes a root (or stops being one) walks the
// roots of its (port, family): rare, and still without a sort of every
// grant. Index(rs).Elements(now) always equals rs.Elements(now) for the
// grants it holds.
//
// An Index is not safe for concurrent use.
type Index struct {
	mode      Mode
	protected map[PortKey]bool
	published map[PortKey][]Mapping // by target
	groups    map[groupKey]*group
	elements  int
}

type groupKey struct {
	key PortKey
	v6  bool
}

// group holds the grants of one (port, family).
//
// A million host grants are nearly all one deadline of a source that is its
// own root: such a source is one entry of hosts (16 bytes of address, 8 of
// deadline), and its element (the host until that deadline) is derived when
// asked for instead of stored. Kept as a deadline slice and a one-element
// slice of Element under the prefix in two maps, they were ~400 bytes a
// grant, most of the agent's memory at a million grants.
type group struct {
	v6        bool
	hosts     map[[16]byte]int64              // host sources with exactly one deadline (Unix ns)
	deadlines map[netip.Prefix][]time.Time    // every other source (wider, or several deadlines), by canonical source
	root      map[netip.Prefix]netip.Prefix   // member source -> its component's root (a source without an entry is a root)
	members   map[netip.Prefix][]netip.Prefix // root -> sources in its component (roots with others only)
	elements  map[netip.Prefix][]Element      // root -> its component's elements, except for hosts roots (derived)
	wide      int                             // sources shorter than a host
}

// NewIndex indexes rs's grants at now. Protected ports and published
// mappings are fixed for the Index's life.
func NewIndex(rs Ruleset, now time.Time) *Index { return NewIndexOf(rs, slices.Values(rs.Grants), now) }

// NewIndexOf is NewIndex of the grants grants yields (it iterates them
// twice) instead of rs.Grants: the agent indexes what it holds without a
// slice of every grant (88 bytes a grant).
func NewIndexOf(rs Ruleset, grants iter.Seq[Grant], now time.Time) *Index {
	x := &Index{mode: rs.Mode, protected: map[PortKey]bool{}, published: map[PortKey][]Mapping{}, groups: map[groupKey]*group{}}
	for _, p := range rs.Protected {
		x.protected[p] = true
	}
	for _, m := range rs.SortedPublished() {
		x.published[m.Target] = append(x.published[m.Target], m)
	}
	// Each group's maps are sized once, from a first pass: grown by
	// doubling to a million sources they would allocate about twice their
	// final size, and rehash every entry on the way.
	sizes := map[groupKey]int{}
	for g := range grants {
		if k, _, ok := x.place(g); ok {
			sizes[k]++
		}
	}
	for k, n := range sizes {
		x.groups[k] = newGroupSized(k.v6, n)
	}
	for g := range grants {
		x.add(g)
	}
	for k, g := range x.groups {
		for p := range g.deadlines {
			if r := p; g.isRoot(r) {
				if els := g.compute(k.key, r, now); len(els) > 0 {
					g.elements[r] = els
					x.elements += len(els)
				}
			}
		}
		for a, exp := range g.hosts {
			if _, member := g.root[g.hostPrefix(a)]; member {
				continue
			}
			if exp > UnixNano(now) {
				x.elements++
			} else {
				// Expired, alone: it opens nothing, and a host never
				// shapes a component (see dropExpired).
				delete(g.hosts, a)
			}
		}
	}
	return x
}

// Elements is the number of live elements the Index holds, as of the last
// change (elements that expired since are counted until the next change of
// their component).
func (x *Index) Elements() int { return x.elements }

// Update removes the grants del (each exactly as it was added: one
// occurrence) and adds add, and returns the change of elements at now. A
// grant to remove that the Index does not hold is ignored.
func (x *Index) Update(del, add []Grant, now time.Time) Delta {
	// Per group: the elements each affected root had before any change
	// (saved at its first touch), and every root touched before or after a
	// change. A root that appears during the update covers addresses a saved
	// root covered, so the saved elements are everything the touched roots
	// replace.
	type touched struct {
		old   map[netip.Prefix][]Element
		roots map[netip.Prefix]bool
	}
	st := map[groupKey]*touched{}
	change := func(gr Grant, insert bool) {
		k, src, ok := x.place(gr)
		if !ok {
			return
		}
		g := x.groups[k]
		if g == nil {
			if !insert {
				return
			}
			g = newGroup(k.v6)
			x.groups[k] = g
		}
		exp := canonicalTime(gr.Expires) // as inserted: a deadline past 2262 is kept as 2262
		if !insert && !slices.ContainsFunc(g.deadlinesOf(src), exp.Equal) {
			return
		}
		t := st[k]
		if t == nil {
			t = &touched{old: map[netip.Prefix][]Element{}, roots: map[netip.Prefix]bool{}}
			st[k] = t
		}
		// A root first touched after the change is new (its sources were
		// members of another root, saved before): it had no elements.
		// Asked for, a hosts root's element would be derived.
		mark := func(before bool) {
			for _, r := range g.rootsAffected(src) {
				if _, ok := t.old[r]; !ok {
					if before {
						t.old[r] = g.elementsOf(k.key, r)
					} else {
						t.old[r] = g.elements[r]
					}
				}
				t.roots[r] = true
			}
		}
		mark(true)
		if insert {
			g.insert(src, exp)
		} else {
			g.remove(src, exp)
		}
		mark(false)
	}
	for _, gr := range del {
		change(gr, false)
	}
	for _, gr := range add {
		change(gr, true)
	}
	var d Delta
	for k, t := range st {
		g := x.groups[k]
		var before, after []Element
		for _, els := range t.old {
			before = append(before, els...)
		}
		for r := range t.roots {
			if !g.isRoot(r) {
				delete(g.elements, r) // no longer a root
				continue
			}
			if g.isHostRoot(r) {
				delete(g.elements, r) // derived from now on
				if e, ok := g.hostElement(k.key, r); ok && e.Expires.After(now) {
					after = append(after, e)
				} else {
					g.dropHost(r) // expired and alone: it opens nothing
				}
				continue
			}
			els := g.compute(k.key, r, now)
			if len(els) == 0 {
				delete(g.elements, r)
			} else {
				g.elements[r] = els
			}
			after = append(after, els...)
		}
		x.elements += len(after) - len(before)
		x.diff(before, after, now, &d)
		if len(g.deadlines) == 0 && len(g.hosts) == 0 {
			delete(x.groups, k)
		}
	}
	sortElements(d.Del)
	sortElements(d.Add)
	SortTranslations(d.DelTranslations)
	SortTranslations(d.AddTranslations)
	return d
}

func sortElements(els []Element) {
	slices.SortFunc(els, func(a, b Element) int { return CompareKeys(a.Key(), b.Key()) })
}

// add inserts one grant while building: everything is new, so no diff.
func (x *Index) add(gr Grant) {
	k, src, ok := x.place(gr)
	if !ok {
		return
	}
	g := x.groups[k]
	if g == nil {
		g = newGroup(k.v6)
		x.groups[k] = g
	}
	g.insert(src, canonicalTime(gr.Expires))
}

// canonicalTime is t as the Index keeps deadlines: UTC, no monotonic
// reading, so that a deadline stored as Unix nanoseconds (group.hosts) and
// read back is the same value (Elements are compared with ==); saturated
// outside 1678–2262 (UnixNano), never wrapped.
func canonicalTime(t time.Time) time.Time { return time.Unix(0, UnixNano(t)).UTC() }

// place says which group a grant belongs to and its canonical source, as
// Ruleset.Elements decides which grants count; ok is false for a grant that
// opens nothing (no source, unprotected port, families that differ). An
// expired grant counts as Ruleset.Elements counts it: it opens nothing but
// still shapes its component.
func (x *Index) place(gr Grant) (groupKey, netip.Prefix, bool) {
	if !gr.Source.IsValid() || !x.protected[gr.Key()] {
		return groupKey{}, netip.Prefix{}, false
	}
	src := canonical(gr.Source)
	if gr.Dest.IsValid() && gr.Dest.Is4() != src.Addr().Is4() {
		return groupKey{}, netip.Prefix{}, false
	}
	return groupKey{gr.Key(), src.Addr().Is6()}, src, true
}

// diff adds to d the change from the elements before to after, and the
// translations that follow them. Elements already expired at now are gone
// from the kernel and are not deleted.
func (x *Index) diff(before, after []Element, now time.Time, d *Delta) {
	held := make(map[Element]bool, len(before))
	for _, e := range before {
		held[e] = true
	}
	want := make(map[Element]bool, len(after))
	for _, e := range after {
		want[e] = true
	}
	for _, e := range before {
		if !want[e] && e.Expires.Sub(now) >= time.Millisecond {
			d.Del = append(d.Del, e)
			x.translate(e, &d.DelTranslations)
		}
	}
	for _, e := range after {
		if !held[e] {
			d.Add = append(d.Add, e)
			x.translate(e, &d.AddTranslations)
		}
	}
}

// translate appends the DNAT translations element e carries (see
// Ruleset.Translations).
func (x *Index) translate(e Element, out *[]Translation) {
	for _, m := range x.published[e.PortKey()] {
		if e.From.Is4() == m.Public.Is4() {
			*out = append(*out, Translation{From: e.From, To: e.To, Mapping: m, Expires: e.Expires})
		}
	}
}

func newGroup(v6 bool) *group { return newGroupSized(v6, 0) }

// newGroupSized makes a group with room for n host sources.
func newGroupSized(v6 bool, n int) *group {
	return &group{v6: v6, hosts: make(map[[16]byte]int64, n), deadlines: map[netip.Prefix][]time.Time{},
		root: map[netip.Prefix]netip.Prefix{}, members: map[netip.Prefix][]netip.Prefix{}, elements: map[netip.Prefix][]Element{}}
}

// hostKey is the hosts key of p and whether p is a host prefix.
func hostKey(p netip.Prefix) ([16]byte, bool) {
	if p.Bits() != hostBits(p) {
		return [16]byte{}, false
	}
	return p.Addr().As16(), true
}

// hostPrefix is the host prefix of a hosts key of g's family.
func (g *group) hostPrefix(a [16]byte) netip.Prefix {
	if g.v6 {
		return netip.PrefixFrom(netip.AddrFrom16(a), 128)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte(a[12:])), 32)
}

// has reports whether p is a source of g.
func (g *group) has(p netip.Prefix) bool {
	if a, ok := hostKey(p); ok {
		if _, ok := g.hosts[a]; ok {
			return true
		}
	}
	_, ok := g.deadlines[p]
	return ok
}

// deadlinesOf are the deadlines of source p (nil when p is none).
func (g *group) deadlinesOf(p netip.Prefix) []time.Time {
	if a, ok := hostKey(p); ok {
		if exp, ok := g.hosts[a]; ok {
			return []time.Time{time.Unix(0, exp).UTC()}
		}
	}
	return g.deadlines[p]
}

// setDeadlines makes ds the deadlines of source p (none: p is no source).
func (g *group) setDeadlines(p netip.Prefix, ds []time.Time) {
	a, host := hostKey(p)
	switch {
	case len(ds) == 0:
		delete(g.deadlines, p)
		if host {
			delete(g.hosts, a)
		}
	case host && len(ds) == 1:
		delete(g.deadlines, p)
		g.hosts[a] = UnixNano(ds[0])
	default:
		if host {
			delete(g.hosts, a)
		}
		g.deadlines[p] = ds
	}
}

// isHostRoot reports whether p is a root held as a hosts entry, whose
// element is derived rather than stored.
func (g *group) isHostRoot(p netip.Prefix) bool {
	a, ok := hostKey(p)
	if !ok {
		return false
	}
	if _, ok := g.hosts[a]; !ok {
		return false
	}
	_, member := g.root[p]
	return !member
}

// hostElement is the element of hosts root p: the host until its deadline.
func (g *group) hostElement(k PortKey, p netip.Prefix) (Element, bool) {
	a, _ := hostKey(p)
	exp, ok := g.hosts[a]
	if !ok {
		return Element{}, false
	}
	return Element{From: p.Addr(), To: p.Addr(), Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: time.Unix(0, exp).UTC()}, true
}

// elementsOf are the elements of root r as last computed. A hosts root's
// element is derived: it is held only while live when last computed
// (NewIndex and Update drop one that expired: it opens nothing, and a host
// shapes no component), so it is exactly what compute gave then.
func (g *group) elementsOf(k PortKey, r netip.Prefix) []Element {
	if g.isHostRoot(r) {
		if e, ok := g.hostElement(k, r); ok {
			return []Element{e}
		}
		return nil
	}
	return g.elements[r]
}

// dropHost forgets the hosts root p, whose only grant expired.
func (g *group) dropHost(p netip.Prefix) {
	if a, ok := hostKey(p); ok {
		delete(g.hosts, a)
	}
}

// sources calls f for every source of g.
func (g *group) sources(f func(netip.Prefix)) {
	for p := range g.deadlines {
		f(p)
	}
	for a := range g.hosts {
		f(g.hostPrefix(a))
	}
}

// rootIn is the root of source src (src itself when it is one); ok is
// false when src is not a source of g. Only members have an entry in root:
// at a million host grants, each its own root, the entries were a tenth of
// the agent's memory.
func (g *group) rootIn(src netip.Prefix) (netip.Prefix, bool) {
	if r, ok := g.root[src]; ok {
		return r, true
	}
	if g.has(src) {
		return src, true
	}
	return netip.Prefix{}, false
}

// isRoot reports whether p is a source of g and the root of its component.
func (g *group) isRoot(p netip.Prefix) bool {
	_, member := g.root[p]
	return !member && g.has(p)
}

func hostBits(p netip.Prefix) int { return p.Addr().BitLen() }

// container returns the widest source of g that contains p (p excluded),
// probing p's shorter prefixes; ok is false when none does.
func (g *group) container(p netip.Prefix) (netip.Prefix, bool) {
	if g.wide == 0 {
		return netip.Prefix{}, false
	}
	for bits := 0; bits < p.Bits(); bits++ {
		q := netip.PrefixFrom(p.Addr(), bits).Masked()
		if _, ok := g.deadlines[q]; ok {
			return q, true
		}
	}
	return netip.Prefix{}, false
}

// rootOf is the root of the component src belongs to, or would join.
func (g *group) rootOf(src netip.Prefix) (netip.Prefix, bool) {
	if r, ok := g.rootIn(src); ok {
		return r, true
	}
	if c, ok := g.container(src); ok {
		r, _ := g.rootIn(c)
		return r, true
	}
	return netip.Prefix{}, false
}

// rootsInside are the roots strictly inside src. It walks every source of
// the group: only a source wider than a host that is (or becomes, or stops
// being) a root needs it.
func (g *group) rootsInside(src netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	g.sources(func(p netip.Prefix) {
		if g.isRoot(p) && p != src && src.Bits() < p.Bits() && src.Contains(p.Addr()) {
			out = append(out, p)
		}
	})
	return out
}

// rootsAffected are the roots whose components a change of src touches:
// the component holding it, or src itself and (wider than a host) the roots
// inside it.
func (g *group) rootsAffected(src netip.Prefix) []netip.Prefix {
	if r, ok := g.rootOf(src); ok && r != src {
		return []netip.Prefix{r}
	}
	out := []netip.Prefix{src}
	if src.Bits() < hostBits(src) {
		out = append(out, g.rootsInside(src)...)
	}
	return out
}

// insert adds one deadline of src, making src a member of the component
// that contains it, or the root of a new one that takes in the roots
// inside it.
func (g *group) insert(src netip.Prefix, exp time.Time) {
	if ds := g.deadlinesOf(src); len(ds) > 0 {
		g.setDeadlines(src, append(ds, exp))
		return
	}
	var inside []netip.Prefix
	r, contained := g.rootOf(src)
	if !contained && src.Bits() < hostBits(src) {
		inside = g.rootsInside(src)
	}
	g.setDeadlines(src, []time.Time{exp})
	if src.Bits() < hostBits(src) {
		g.wide++
	}
	if contained {
		g.root[src] = r
		g.members[r] = append(g.members[r], src)
		return
	}
	delete(g.root, src) // a root
	for _, ir := range inside {
		for _, m := range append([]netip.Prefix{ir}, g.members[ir]...) {
			g.root[m] = src
			g.members[src] = append(g.members[src], m)
		}
		delete(g.members, ir)
	}
}

// remove drops one deadline of src; a source left without deadlines leaves
// its component, and a root that leaves splits its component into the roots
// of what remains.
func (g *group) remove(src netip.Prefix, exp time.Time) {
	ds := g.deadlinesOf(src)
	i := slices.IndexFunc(ds, exp.Equal)
	if i < 0 {
		return
	}
	ds = slices.Delete(ds, i, i+1)
	g.setDeadlines(src, ds)
	if len(ds) > 0 {
		return
	}
	if src.Bits() < hostBits(src) {
		g.wide--
	}
	r, member := g.root[src]
	if !member {
		r = src
	}
	delete(g.root, src)
	if r != src {
		g.members[r] = slices.DeleteFunc(g.members[r], func(p netip.Prefix) bool { return p == src })
		if len(g.members[r]) == 0 {
			delete(g.members, r)
		}
		return
	}
	// The root left: its members regroup, widest first.
	ms := g.members[src]
	delete(g.members, src)
	slices.SortFunc(ms, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	var roots []netip.Prefix
	for _, m := range ms {
		placed := false
		for _, nr := range roots {
			if nr.Bits() <= m.Bits() && nr.Contains(m.Addr()) {
				g.root[m] = nr
				g.members[nr] = append(g.members[nr], m)
				placed = true
				break
			}
		}
		if !placed {
			delete(g.root, m) // a root
			roots = append(roots, m)
		}
	}
}

// compute normalises the component of root at now.
func (g *group) compute(k PortKey, root netip.Prefix, now time.Time) []Element {
	var rs []rng
	for _, p := range append([]netip.Prefix{root}, g.members[root]...) {
		from, to := RangeOf(p)
		for _, exp := range g.deadlinesOf(p) {
			rs = append(rs, rng{from, to, exp})
		}
	}
	return normalize(k, rs, now)
}
