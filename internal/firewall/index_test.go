package firewall_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/firewall"
)

// kernel is a model of a grant set with timeouts: what the deltas were
// applied to. Like the kernel, it refuses to delete an element it does not
// hold (ENOENT) and to add one that overlaps another (EEXIST), and drops
// elements at their deadline.
type kernel map[firewall.ElementKey]firewall.Element

func (k kernel) expire(now time.Time) {
	for key, e := range k {
		if !e.Expires.After(now) {
			delete(k, key)
		}
	}
}

func (k kernel) apply(d firewall.Delta) error {
	for _, e := range d.Del {
		if _, ok := k[e.Key()]; !ok {
			return fmt.Errorf("delete of %v: not held", e)
		}
		delete(k, e.Key())
	}
	for _, e := range d.Add {
		for _, h := range k {
			if h.PortKey() == e.PortKey() && h.From.BitLen() == e.From.BitLen() && h.From.Compare(e.To) <= 0 && e.From.Compare(h.To) <= 0 {
				return fmt.Errorf("add of %v overlaps %v", e, h)
			}
		}
		k[e.Key()] = e
	}
	return nil
}

func (k kernel) sorted() []firewall.Element {
	var out []firewall.Element
	for _, e := range k {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b firewall.Element) int { return firewall.CompareKeys(a.Key(), b.Key()) })
	return out
}

// TestIndexDeltas changes random grants (hosts and wider prefixes that nest,
// both families, overlapping deadlines, time moving so that some expire) one
// batch at a time, applies each Delta to a model kernel that refuses what
// the real one refuses, and checks that the kernel then holds exactly what a
// full normalisation of the same grants gives (Ruleset.Elements).
func TestIndexDeltas(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	pub := firewall.Mapping{Target: firewall.PortKey{Proto: firewall.TCP, Port: 22}, Public: netip.MustParseAddr("203.0.113.10"), PublicPort: 20022}
	for iter := 0; iter < 200; iter++ {
		rs := firewall.Ruleset{Protected: ports[:3]}
		now := t0
		randGrant := func() firewall.Grant {
			k := ports[r.IntN(len(ports))]
			return firewall.Grant{Source: randomPrefix(r, small), Proto: k.Proto, Port: k.Port,
				Expires: now.Add(time.Duration(r.IntN(8)-1) * time.Minute)}
		}
		for n := r.IntN(20); n > 0; n-- {
			rs.Grants = append(rs.Grants, randGrant())
		}
		x := firewall.NewIndex(rs, now)
		k := kernel{}
		for _, e := range rs.Elements(now) {
			k[e.Key()] = e
		}
		for step := 0; step < 15; step++ {
			now = now.Add(time.Duration(r.IntN(3)) * 30 * time.Second)
			k.expire(now)
			var del, add []firewall.Grant
			for n := r.IntN(4); n > 0 && len(rs.Grants) > 0; n-- {
				i := r.IntN(len(rs.Grants))
				del = append(del, rs.Grants[i])
				rs.Grants = slices.Delete(rs.Grants, i, i+1)
			}
			for n := r.IntN(4); n > 0; n-- {
				g := randGrant()
				if r.IntN(3) == 0 && len(del) > 0 {
					g = del[0] // extended: the same grant, later
					g.Expires = g.Expires.Add(time.Minute)
				}
				add = append(add, g)
				rs.Grants = append(rs.Grants, g)
			}
			d := x.Update(del, add, now)
			if err := k.apply(d); err != nil {
				t.Fatalf("iteration %d step %d: %v\ndelta %+v", iter, step, err, d)
			}
			want := rs.Elements(now)
			if diff := cmp.Diff(want, k.sorted(), cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("iteration %d step %d: kernel after the delta (-full normalisation +kernel):\n%s\ndel %v\nadd %v", iter, step, diff, del, add)
			}
			// Translations follow the elements of a published target.
			gw := firewall.NewIndex(firewall.Ruleset{Protected: rs.Protected, Published: []firewall.Mapping{pub}}, now)
			gd := gw.Update(nil, rs.Grants, now)
			full := firewall.Ruleset{Protected: rs.Protected, Grants: rs.Grants, Published: []firewall.Mapping{pub}}.Translations(now)
			if diff := cmp.Diff(full, gd.AddTranslations, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("iteration %d step %d: translations (-full +index):\n%s", iter, step, diff)
			}
		}
	}
}

// TestIndexRebuildMatchesElements: an Index built from a ruleset holds its
// elements, and re-adding nothing changes nothing.
func TestIndexRebuildMatchesElements(t *testing.T) {
	h1, h2 := t0.Add(time.Hour), t0.Add(2*time.Hour)
	rs := firewall.Ruleset{Protected: ports[:3], Grants: []firewall.Grant{
		grant("192.0.2.0/24", firewall.TCP, 22, h1), grant("192.0.2.7/32", firewall.TCP, 22, h2),
		grant("192.0.2.9/32", firewall.TCP, 22, h1), grant("198.51.100.7/32", firewall.TCP, 22, h2),
		grant("2001:db8::1/128", firewall.UDP, 22, h1),
	}}
	x := firewall.NewIndex(rs, t0)
	if n := len(rs.Elements(t0)); x.Elements() != n {
		t.Errorf("Elements() = %d, want %d", x.Elements(), n)
	}
	if d := x.Update(nil, nil, t0); !d.Empty() {
		t.Errorf("an empty update changed %+v", d)
	}
	// Removing the /24 splits its component: the hosts inside stay.
	d := x.Update([]firewall.Grant{rs.Grants[0]}, nil, t0)
	k := kernel{}
	for _, e := range rs.Elements(t0) {
		k[e.Key()] = e
	}
	if err := k.apply(d); err != nil {
		t.Fatal(err)
	}
	rs.Grants = rs.Grants[1:]
	if diff := cmp.Diff(rs.Elements(t0), k.sorted(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("after removing the /24 (-want +got):\n%s", diff)
	}
}

// TestIndexDeadlinesOutOfRange: grants ending before 1678 open nothing and
// grants ending after 2262 open, in an Index built and updated as in a
// Ruleset; revoking the latter deletes its element, however its deadline
// is spelled. The Index keeps a host's deadline as Unix nanoseconds, which
// time.Time.UnixNano wraps outside 1678–2262: a grant of 1600 was kept as
// live until 2184, one of 9999 as ended in 1816.
func TestIndexDeadlinesOutOfRange(t *testing.T) {
	past := time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC)
	never := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	rs := firewall.Ruleset{Protected: ports[:1], Grants: []firewall.Grant{
		grant("192.0.2.1/32", firewall.TCP, 22, past), grant("192.0.2.2/32", firewall.TCP, 22, never),
	}}
	x := firewall.NewIndex(rs, t0)
	k := kernel{}
	d := x.Update(nil, []firewall.Grant{grant("192.0.2.3/32", firewall.TCP, 22, past), grant("192.0.2.4/32", firewall.TCP, 22, never)}, t0)
	for _, e := range d.Add {
		k[e.Key()] = e
	}
	if x.Elements() != 2 || len(k) != 1 || !k.sorted()[0].Expires.After(time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("Index of a grant ending 1600 and one ending 9999 (twice): %d elements, delta %v; want only those ending 9999, in 2262", x.Elements(), d.Add)
	}
	d = x.Update([]firewall.Grant{rs.Grants[1], grant("192.0.2.4/32", firewall.TCP, 22, never)}, nil, t0)
	if len(d.Del) != 2 || x.Elements() != 0 {
		t.Errorf("revoking the grants ending 9999 deleted %v, %d elements left; want both deleted", d.Del, x.Elements())
	}
}
