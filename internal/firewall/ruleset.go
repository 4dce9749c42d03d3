// Package firewall holds the contract every enforcer shares: the desired state
// of a host's gate (Ruleset), its normalised kernel form (Element), and the
// Backend interface that makes the kernel hold exactly that state.
//
// The package imports only the standard library so that the domain, the
// reconciler and every backend can depend on it without cycles.
package firewall

import (
	"container/heap"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Protocol is an IP protocol number as the kernel sees it (meta l4proto).
type Protocol uint8

// The protocols a port rule may name.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// PortKey is a protected (protocol, port), and in gateway mode the
// destination it belongs to.
type PortKey struct {
	Proto Protocol
	Port  uint16
	// Dest is the protected host in gateway mode; the zero Addr in host
	// mode (the gate's own host).
	Dest netip.Addr
}

func (k PortKey) String() string {
	if k.Dest.IsValid() {
		return fmt.Sprintf("%s/%s", netip.AddrPortFrom(k.Dest, k.Port), k.Proto)
	}
	return fmt.Sprintf("%d/%s", k.Port, k.Proto)
}

// Grant opens one (source prefix, protocol, port) until Expires; in gateway
// mode, on one destination.
type Grant struct {
	Source netip.Prefix
	// Dest is the granted destination in gateway mode; zero in host mode.
	Dest    netip.Addr
	Proto   Protocol
	Port    uint16
	Expires time.Time
}

// Key is the port the grant opens.
func (g Grant) Key() PortKey { return PortKey{Proto: g.Proto, Port: g.Port, Dest: g.Dest} }

// Ruleset is the complete desired state of one gate. Apply always carries
// the full state, so a lost or repeated Apply cannot leave the kernel in a
// state nobody asked for; the agent's incremental path (Index, Delta,
// DeltaApplier) falls back to it on any doubt.
type Ruleset struct {
	// Mode says what the gate protects: the host itself (the zero value)
	// or the destinations behind a gateway. Ports, grants and mappings
	// carry a destination in gateway mode and none in host mode.
	Mode Mode
	// Protected lists the ports that are closed to everyone not granted.
	Protected []PortKey
	// CloseEstablished lists protected ports whose established sessions
	// end with their grant (expiry or revocation), instead of surviving
	// it. Entries that are not protected are ignored.
	CloseEstablished []PortKey
	// Grants may overlap and may contain expired entries; Elements normalises.
	Grants []Grant
	// Published are a gateway's DNAT mappings: only granted sources are
	// translated. Each mapping's target must be protected.
	Published []Mapping
	// SampleRate bounds how many blocked attempts per second the gate
	// samples for their sources; 0 means DefaultSampleRate.
	SampleRate int
}

// Element is one entry of the kernel's grant set: an inclusive address range
// of one family, a protocol, a port and an absolute deadline. Elements of a
// Ruleset never overlap, because the kernel's interval sets refuse overlapping
// ranges (EEXIST) rather than merging them.
type Element struct {
	From, To netip.Addr
	// Dest is the destination in gateway mode (same family as From and
	// To); zero in host mode.
	Dest    netip.Addr
	Proto   Protocol
	Port    uint16
	Expires time.Time
}

// Key identifies an element independent of its deadline.
type ElementKey struct {
	From, To netip.Addr
	Dest     netip.Addr
	Proto    Protocol
	Port     uint16
}

// Key returns the element's identity.
func (e Element) Key() ElementKey {
	return ElementKey{From: e.From, To: e.To, Dest: e.Dest, Proto: e.Proto, Port: e.Port}
}

// PortKey is the port the element opens.
func (k ElementKey) PortKey() PortKey { return PortKey{Proto: k.Proto, Port: k.Port, Dest: k.Dest} }

func (e Element) String() string {
	dest := ""
	if e.Dest.IsValid() {
		dest = " . " + e.Dest.String()
	}
	return fmt.Sprintf("%s-%s%s . %s . %d (until %s)", e.From, e.To, dest, e.Proto, e.Port, e.Expires.UTC().Format(time.RFC3339Nano))
}

// CompareKeys orders element keys by protocol, port, destination, family
// and first address: the order of Ruleset.Elements and of every backend's
// State.
func CompareKeys(a, b ElementKey) int {
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	if c := a.Dest.Compare(b.Dest); c != 0 {
		return c
	}
	if a.From.BitLen() != b.From.BitLen() {
		return a.From.BitLen() - b.From.BitLen()
	}
	return a.From.Compare(b.From)
}

// Backend makes a kernel (or a fake of one) enforce a Ruleset.
type Backend interface {
	// Apply makes the gate hold exactly rs as of now: the protected ports,
	// and rs.Elements(now) each with a timeout of Expires-now. It is
	// idempotent (applying the same state twice sends nothing the second
	// time) and atomic (on error the previous state is intact). It never
	// removes protection before adding the new state in the same batch.
	Apply(ctx context.Context, rs Ruleset, now time.Time) (ApplyResult, error)
	// State reads back what the gate holds, with element deadlines computed
	// as now plus the kernel's remaining time.
	State(ctx context.Context, now time.Time) (State, error)
	// Close releases the backend's resources. It leaves the gate as it is:
	// closing a backend never opens a port.
	Close() error
}

// ApplyResult says what an Apply changed.
type ApplyResult struct {
	// Changed is false when the kernel already held the state and nothing was sent.
	Changed bool
	// Added and Removed count grant-set elements; an updated deadline counts as both.
	Added, Removed int
	// ProtectedAdded and ProtectedRemoved count protected-port entries.
	ProtectedAdded, ProtectedRemoved int
	// Elements is how many grant elements the gate holds afterwards (what
	// the agent reports, without normalising the grants a second time).
	Elements int
}

// State is what a gate holds at one instant.
type State struct {
	Mode      Mode
	Protected []PortKey
	// CloseEstablished are the protected ports whose sessions end with
	// their grant, sorted.
	CloseEstablished []PortKey
	Elements         []Element
	// Published are the DNAT mappings, sorted, and Translations the
	// sources each translates (a gateway's DNAT entries).
	Published    []Mapping
	Translations []Translation
}

// Allows reports whether a new connection from src to (proto, port) of the
// gate's own host passes the gate at now: unprotected ports pass, protected
// ports pass only for a source inside an unexpired element. It is the
// packet-level oracle tests compare the kernel against. In gateway mode use
// AllowsTo.
func (s State) Allows(src netip.Addr, proto Protocol, port uint16, now time.Time) bool {
	return s.AllowsTo(src, netip.Addr{}, proto, port, now)
}

// AllowsTo reports whether a new connection from src to dst:port passes the
// gate at now. dst is the destination in gateway mode and the zero Addr in
// host mode.
func (s State) AllowsTo(src, dst netip.Addr, proto Protocol, port uint16, now time.Time) bool {
	src, dst = src.Unmap(), dst.Unmap()
	k := PortKey{Proto: proto, Port: port, Dest: dst}
	if !slices.Contains(s.Protected, k) {
		return true
	}
	for _, e := range s.Elements {
		if e.PortKey() == k && now.Before(e.Expires) && inRange(src, e.From, e.To) {
			return true
		}
	}
	return false
}

// PortKey is the port the element opens.
func (e Element) PortKey() PortKey { return e.Key().PortKey() }

func inRange(a, from, to netip.Addr) bool {
	return a.BitLen() == from.BitLen() && a.Compare(from) >= 0 && a.Compare(to) <= 0
}

// SortedProtected returns the protected ports deduplicated and sorted.
func (r Ruleset) SortedProtected() []PortKey { return sortedPorts(r.Protected) }

// SortedCloseEstablished returns the protected ports that close established
// sessions, deduplicated and sorted.
func (r Ruleset) SortedCloseEstablished() []PortKey {
	protected := make(map[PortKey]bool, len(r.Protected))
	for _, p := range r.Protected {
		protected[p] = true
	}
	var out []PortKey
	for _, p := range r.CloseEstablished {
		if protected[p] {
			out = append(out, p)
		}
	}
	return sortedPorts(out)
}

func sortedPorts(ports []PortKey) []PortKey {
	seen := make(map[PortKey]bool, len(ports))
	out := make([]PortKey, 0, len(ports))
	for _, p := range ports {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	slices.SortFunc(out, ComparePorts)
	return out
}

// ComparePorts orders ports by protocol, port and destination.
func ComparePorts(a, b PortKey) int {
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	if a.Port != b.Port {
		return int(a.Port) - int(b.Port)
	}
	return a.Dest.Compare(b.Dest)
}

// Elements normalises the grants live at now into disjoint kernel elements.
// Grants on unprotected ports and grants expired at now are dropped, and so
// are gateway grants whose source and destination are of different families
// (no packet can match them). Where grants overlap, each address gets the
// latest deadline of the grants that cover it; adjacent pieces of one
// overlap component (grants whose ranges overlap, directly or through
// others) with the same deadline are merged, pieces of different components
// never are: so a change of one grant changes the elements of its component
// only, which is what lets Index apply a change without normalising every
// grant again. The result is sorted by (proto, port, dest, family, from).
func (r Ruleset) Elements(now time.Time) []Element {
	protected := make(map[PortKey]bool, len(r.Protected))
	for _, p := range r.Protected {
		protected[p] = true
	}
	type group struct {
		key PortKey
		v6  bool
	}
	// Two passes: the first sizes each group, so that the second puts each
	// grant's range into it once (appending to a million grants by
	// doubling allocated about twice their size again; a copy of each
	// grant before its range was another 88 bytes a grant).
	place := func(g Grant) (group, netip.Prefix, bool) {
		if !g.Source.IsValid() || !protected[g.Key()] {
			return group{}, netip.Prefix{}, false
		}
		src := canonical(g.Source)
		if g.Dest.IsValid() && g.Dest.Is4() != src.Addr().Is4() {
			return group{}, netip.Prefix{}, false
		}
		return group{g.Key(), src.Addr().Is6()}, src, true
	}
	sizes := map[group]int{}
	for _, g := range r.Grants {
		if k, _, ok := place(g); ok {
			sizes[k]++
		}
	}
	groups := make(map[group][]rng, len(sizes))
	for k, n := range sizes {
		groups[k] = make([]rng, 0, n)
	}
	for _, g := range r.Grants {
		if k, src, ok := place(g); ok {
			from, to := RangeOf(src)
			groups[k] = append(groups[k], rng{from, to, g.Expires})
		}
	}
	var out []Element
	for k, rs := range groups {
		if len(groups) == 1 {
			out = normalize(k.key, rs, now) // no copy of a million elements
			break
		}
		out = append(out, normalize(k.key, rs, now)...)
		groups[k] = nil // garbage once normalised
	}
	slices.SortFunc(out, func(a, b Element) int { return CompareKeys(a.Key(), b.Key()) })
	return out
}

// canonical unmaps an IPv4-mapped prefix that lies inside ::ffff:0:0/96 and
// masks host bits. A shorter mapped prefix also covers non-IPv4 addresses
// and stays IPv6.
func canonical(p netip.Prefix) netip.Prefix {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() && bits >= 96 {
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a.WithZone(""), bits).Masked()
}

// normalize turns ranges of one (proto, port, family) into disjoint ranges,
// each carrying the latest deadline at now of the ranges covering it,
// component by component: ranges are sorted, cut where a range starts past
// every earlier one's end, and each component is swept on its own, so that
// pieces merge only within a component. Components are those of every range
// given, expired ones included, so that the elements of a set of grants do
// not change shape as some of them expire (the kernel's do not either);
// only live ranges cover addresses.
func normalize(k PortKey, rs []rng, now time.Time) []Element {
	slices.SortFunc(rs, func(a, b rng) int { return a.from.Compare(b.from) })
	if len(rs) == 0 {
		return nil
	}
	// Most components are one grant (distinct sources): those become an
	// element each without the sweep's allocations, into an out sized
	// once; at a million grants the general path cost ~1 GB of garbage.
	out := make([]Element, 0, len(rs))
	start, end := 0, rs[0].to
	live := func(c []rng) []rng {
		out := c[:0:0]
		for _, r := range c {
			if r.exp.After(now) {
				out = append(out, r)
			}
		}
		return out
	}
	component := func(c []rng) {
		if len(c) == 1 {
			if r := c[0]; r.exp.After(now) {
				out = append(out, Element{From: r.from, To: r.to, Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: r.exp})
			}
			return
		}
		out = append(out, sweepComponent(k, live(c))...)
	}
	for i := 1; i < len(rs); i++ {
		if end.Less(rs[i].from) {
			component(rs[start:i])
			start, end = i, rs[i].to
			continue
		}
		if end.Less(rs[i].to) {
			end = rs[i].to
		}
	}
	component(rs[start:])
	if len(out) == 0 {
		return nil
	}
	return out
}

// sweepComponent normalises one overlap component. It runs in O(n log n):
// boundaries are range starts and the successors of range ends, so coverage
// is uniform between two boundaries, and a max-heap on deadlines (with lazy
// removal of ranges that ended) gives the latest one. rs is sorted by start.
func sweepComponent(k PortKey, rs []rng) []Element {
	if len(rs) == 0 {
		return nil
	}
	if len(rs) == 1 {
		return []Element{{From: rs[0].from, To: rs[0].to, Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: rs[0].exp}}
	}
	bounds := make([]netip.Addr, 0, 2*len(rs))
	for _, r := range rs {
		bounds = append(bounds, r.from)
		if next := r.to.Next(); next.IsValid() {
			bounds = append(bounds, next)
		}
	}
	sort.Slice(bounds, func(i, j int) bool { return bounds[i].Less(bounds[j]) })
	bounds = dedupAddrs(bounds)
	var (
		out  []Element
		live rngHeap
		next int
	)
	for i, start := range bounds {
		for next < len(rs) && rs[next].from.Compare(start) <= 0 {
			heap.Push(&live, rs[next])
			next++
		}
		for live.Len() > 0 && live[0].to.Less(start) {
			heap.Pop(&live)
		}
		if live.Len() == 0 {
			continue
		}
		exp := live[0].exp
		end := maxAddr(start)
		if i+1 < len(bounds) {
			end = bounds[i+1].Prev()
		}
		if n := len(out); n > 0 && out[n-1].Expires.Equal(exp) && out[n-1].To.Next() == start {
			out[n-1].To = end
			continue
		}
		out = append(out, Element{From: start, To: end, Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: exp})
	}
	return out
}

type rng struct {
	from, to netip.Addr
	exp      time.Time
}

// rngHeap is a max-heap of ranges by deadline.
type rngHeap []rng

func (h rngHeap) Len() int           { return len(h) }
func (h rngHeap) Less(i, j int) bool { return h[i].exp.After(h[j].exp) }
func (h rngHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *rngHeap) Push(x any)        { *h = append(*h, x.(rng)) }
func (h *rngHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func dedupAddrs(a []netip.Addr) []netip.Addr {
	out := a[:0]
	for i, x := range a {
		if i == 0 || x != a[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// lastAddr returns the highest address inside p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func maxAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
}

// RangeOf returns the inclusive address range a prefix covers.
func RangeOf(p netip.Prefix) (from, to netip.Addr) { return p.Masked().Addr(), lastAddr(p) }
