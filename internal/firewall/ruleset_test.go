package firewall_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/firewall"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func grant(src string, proto firewall.Protocol, port uint16, exp time.Time) firewall.Grant {
	return firewall.Grant{Source: netip.MustParsePrefix(src), Proto: proto, Port: port, Expires: exp}
}

func elem(from, to string, proto firewall.Protocol, port uint16, exp time.Time) firewall.Element {
	return firewall.Element{From: netip.MustParseAddr(from), To: netip.MustParseAddr(to), Proto: proto, Port: port, Expires: exp}
}

func TestElements(t *testing.T) {
	ssh := []firewall.PortKey{{Proto: firewall.TCP, Port: 22}}
	h1, h2, h3 := t0.Add(time.Hour), t0.Add(2*time.Hour), t0.Add(3*time.Hour)
	tcp, udp := firewall.TCP, firewall.UDP
	tests := []struct {
		name string
		rs   firewall.Ruleset
		want []firewall.Element
	}{
		{name: "empty"},
		{
			name: "protected port without grants",
			rs:   firewall.Ruleset{Protected: ssh},
		},
		{
			name: "one host",
			rs:   firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{grant("192.0.2.7/32", tcp, 22, h1)}},
			want: []firewall.Element{elem("192.0.2.7", "192.0.2.7", tcp, 22, h1)},
		},
		{
			name: "host bits are masked",
			rs:   firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{grant("192.0.2.77/24", tcp, 22, h1)}},
			want: []firewall.Element{elem("192.0.2.0", "192.0.2.255", tcp, 22, h1)},
		},
		{
			name: "expired and expiring-now grants are dropped",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.1/32", tcp, 22, t0.Add(-time.Second)),
				grant("192.0.2.2/32", tcp, 22, t0),
				grant("192.0.2.3/32", tcp, 22, t0.Add(time.Nanosecond)),
			}},
			want: []firewall.Element{elem("192.0.2.3", "192.0.2.3", tcp, 22, t0.Add(time.Nanosecond))},
		},
		{
			name: "grants on unprotected ports are dropped",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.1/32", tcp, 80, h1),
				grant("192.0.2.1/32", udp, 22, h1),
			}},
		},
		{
			name: "invalid source is dropped",
			rs:   firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{{Proto: tcp, Port: 22, Expires: h1}}},
		},
		{
			name: "longer inner grant splits the outer range",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.0/24", tcp, 22, h1),
				grant("192.0.2.7/32", tcp, 22, h2),
			}},
			want: []firewall.Element{
				elem("192.0.2.0", "192.0.2.6", tcp, 22, h1),
				elem("192.0.2.7", "192.0.2.7", tcp, 22, h2),
				elem("192.0.2.8", "192.0.2.255", tcp, 22, h1),
			},
		},
		{
			name: "shorter inner grant is absorbed",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.7/32", tcp, 22, h1),
				grant("192.0.2.0/24", tcp, 22, h2),
			}},
			want: []firewall.Element{elem("192.0.2.0", "192.0.2.255", tcp, 22, h2)},
		},
		{
			name: "three nesting levels",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("198.51.100.0/24", tcp, 22, h1),
				grant("198.51.100.128/25", tcp, 22, h2),
				grant("198.51.100.255/32", tcp, 22, h3),
			}},
			want: []firewall.Element{
				elem("198.51.100.0", "198.51.100.127", tcp, 22, h1),
				elem("198.51.100.128", "198.51.100.254", tcp, 22, h2),
				elem("198.51.100.255", "198.51.100.255", tcp, 22, h3),
			},
		},
		{
			name: "duplicate grants keep the latest deadline",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.1/32", tcp, 22, h2),
				grant("192.0.2.1/32", tcp, 22, h3),
				grant("192.0.2.1/32", tcp, 22, h1),
			}},
			want: []firewall.Element{elem("192.0.2.1", "192.0.2.1", tcp, 22, h3)},
		},
		{
			name: "adjacent grants with the same deadline stay apart",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.128/25", tcp, 22, h1),
				grant("192.0.2.0/25", tcp, 22, h1),
				grant("192.0.3.0/32", tcp, 22, h1),
			}},
			want: []firewall.Element{
				elem("192.0.2.0", "192.0.2.127", tcp, 22, h1),
				elem("192.0.2.128", "192.0.2.255", tcp, 22, h1),
				elem("192.0.3.0", "192.0.3.0", tcp, 22, h1),
			},
		},
		{
			// Pieces of one overlap component merge: a change of one grant
			// rewrites its component only (Index).
			name: "pieces of overlapping grants with the same deadline merge",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.0/24", tcp, 22, h1),
				grant("192.0.2.7/32", tcp, 22, h1),
				grant("192.0.2.9/32", tcp, 22, h2),
			}},
			want: []firewall.Element{
				elem("192.0.2.0", "192.0.2.8", tcp, 22, h1),
				elem("192.0.2.9", "192.0.2.9", tcp, 22, h2),
				elem("192.0.2.10", "192.0.2.255", tcp, 22, h1),
			},
		},
		{
			name: "adjacent ranges with different deadlines stay apart",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.0/25", tcp, 22, h1),
				grant("192.0.2.128/25", tcp, 22, h2),
			}},
			want: []firewall.Element{
				elem("192.0.2.0", "192.0.2.127", tcp, 22, h1),
				elem("192.0.2.128", "192.0.2.255", tcp, 22, h2),
			},
		},
		{
			name: "ranges with a gap stay apart",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("192.0.2.1/32", tcp, 22, h1),
				grant("192.0.2.3/32", tcp, 22, h1),
			}},
			want: []firewall.Element{
				elem("192.0.2.1", "192.0.2.1", tcp, 22, h1),
				elem("192.0.2.3", "192.0.2.3", tcp, 22, h1),
			},
		},
		{
			name: "sorted by protocol, port, family, address",
			rs: firewall.Ruleset{
				Protected: []firewall.PortKey{{Proto: udp, Port: 53}, {Proto: tcp, Port: 443}, {Proto: tcp, Port: 22}, {Proto: tcp, Port: 22}},
				Grants: []firewall.Grant{
					grant("2001:db8::1/128", tcp, 22, h1),
					grant("192.0.2.9/32", udp, 53, h1),
					grant("192.0.2.9/32", tcp, 443, h1),
					grant("198.51.100.1/32", tcp, 22, h1),
					grant("192.0.2.9/32", tcp, 22, h1),
				},
			},
			want: []firewall.Element{
				elem("192.0.2.9", "192.0.2.9", tcp, 22, h1),
				elem("198.51.100.1", "198.51.100.1", tcp, 22, h1),
				elem("2001:db8::1", "2001:db8::1", tcp, 22, h1),
				elem("192.0.2.9", "192.0.2.9", tcp, 443, h1),
				elem("192.0.2.9", "192.0.2.9", udp, 53, h1),
			},
		},
		{
			name: "IPv6 nesting",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("2001:db8::/64", tcp, 22, h1),
				grant("2001:db8::8/125", tcp, 22, h2),
			}},
			want: []firewall.Element{
				elem("2001:db8::", "2001:db8::7", tcp, 22, h1),
				elem("2001:db8::8", "2001:db8::f", tcp, 22, h2),
				elem("2001:db8::10", "2001:db8::ffff:ffff:ffff:ffff", tcp, 22, h1),
			},
		},
		{
			name: "v4-mapped IPv6 sources become IPv4 and merge with IPv4 grants",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("::ffff:192.0.2.0/120", tcp, 22, h1),
				grant("192.0.2.128/25", tcp, 22, h1),
				grant("::ffff:198.51.100.7/128", tcp, 22, h2),
			}},
			want: []firewall.Element{
				elem("192.0.2.0", "192.0.2.255", tcp, 22, h1),
				elem("198.51.100.7", "198.51.100.7", tcp, 22, h2),
			},
		},
		{
			name: "whole address spaces",
			rs: firewall.Ruleset{Protected: ssh, Grants: []firewall.Grant{
				grant("0.0.0.0/0", tcp, 22, h1),
				grant("255.255.255.255/32", tcp, 22, h2),
				grant("::/0", tcp, 22, h1),
			}},
			want: []firewall.Element{
				elem("0.0.0.0", "255.255.255.254", tcp, 22, h1),
				elem("255.255.255.255", "255.255.255.255", tcp, 22, h2),
				elem("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", tcp, 22, h1),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.rs.Elements(t0)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("Elements() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestElementsMappedPrefixShorterThan96: a v4-mapped prefix shorter than /96
// reaches beyond ::ffff:0:0/96 into plain IPv6 space, so it stays IPv6; it
// once yielded an invalid range that absorbed adjacent IPv4 grants.
func TestElementsMappedPrefixShorterThan96(t *testing.T) {
	h1 := t0.Add(time.Hour)
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{{Proto: firewall.TCP, Port: 22}},
		Grants: []firewall.Grant{
			grant("::ffff:0.0.0.0/80", firewall.TCP, 22, h1),
			grant("0.0.0.0/32", firewall.TCP, 22, h1),
		},
	}
	for _, e := range rs.Elements(t0) {
		if !e.From.IsValid() || !e.To.IsValid() || e.From.BitLen() != e.To.BitLen() {
			t.Errorf("Elements() = %v: invalid range", e)
		}
	}
	st := firewall.State{Protected: rs.Protected, Elements: rs.Elements(t0)}
	if !st.Allows(netip.MustParseAddr("0.0.0.0"), firewall.TCP, 22, t0) {
		t.Error("the malformed grant took the adjacent 0.0.0.0/32 grant down")
	}
}

func TestSortedProtected(t *testing.T) {
	rs := firewall.Ruleset{Protected: []firewall.PortKey{
		{Proto: firewall.UDP, Port: 53}, {Proto: firewall.TCP, Port: 443}, {Proto: firewall.TCP, Port: 22},
		{Proto: firewall.UDP, Port: 53}, {Proto: firewall.TCP, Port: 22},
	}}
	want := []firewall.PortKey{{Proto: firewall.TCP, Port: 22}, {Proto: firewall.TCP, Port: 443}, {Proto: firewall.UDP, Port: 53}}
	if diff := cmp.Diff(want, rs.SortedProtected(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("SortedProtected() mismatch (-want +got):\n%s", diff)
	}
}

func TestStateAllows(t *testing.T) {
	h1 := t0.Add(time.Hour)
	st := firewall.State{
		Protected: []firewall.PortKey{{Proto: firewall.TCP, Port: 22}, {Proto: firewall.UDP, Port: 53}},
		Elements: []firewall.Element{
			elem("192.0.2.10", "192.0.2.20", firewall.TCP, 22, h1),
			elem("2001:db8::1", "2001:db8::1", firewall.TCP, 22, h1),
			elem("198.51.100.1", "198.51.100.1", firewall.UDP, 53, h1),
		},
	}
	tests := []struct {
		name  string
		src   string
		proto firewall.Protocol
		port  uint16
		now   time.Time
		want  bool
	}{
		{"unprotected port passes anyone", "203.0.113.1", firewall.TCP, 80, t0, true},
		{"unprotected protocol on a protected port number", "203.0.113.1", firewall.UDP, 22, t0, true},
		{"protected port refuses a stranger", "203.0.113.1", firewall.TCP, 22, t0, false},
		{"first address of a range", "192.0.2.10", firewall.TCP, 22, t0, true},
		{"last address of a range", "192.0.2.20", firewall.TCP, 22, t0, true},
		{"just below a range", "192.0.2.9", firewall.TCP, 22, t0, false},
		{"just above a range", "192.0.2.21", firewall.TCP, 22, t0, false},
		{"one instant before the deadline", "192.0.2.15", firewall.TCP, 22, h1.Add(-time.Nanosecond), true},
		{"at the deadline", "192.0.2.15", firewall.TCP, 22, h1, false},
		{"element of another port", "198.51.100.1", firewall.TCP, 22, t0, false},
		{"element of its own port", "198.51.100.1", firewall.UDP, 53, t0, true},
		{"IPv6 source", "2001:db8::1", firewall.TCP, 22, t0, true},
		{"IPv6 neighbour", "2001:db8::2", firewall.TCP, 22, t0, false},
		{"v4-mapped source matches IPv4 elements", "::ffff:192.0.2.15", firewall.TCP, 22, t0, true},
		{"IPv6 address with IPv4 bits does not match IPv4 elements", "::c000:20f", firewall.TCP, 22, t0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := st.Allows(netip.MustParseAddr(tt.src), tt.proto, tt.port, tt.now); got != tt.want {
				t.Errorf("Allows(%s, %s, %d) = %v, want %v", tt.src, tt.proto, tt.port, got, tt.want)
			}
		})
	}
}

// universe is the small address space the property and fuzz tests draw from,
// small enough to check every address against a brute-force oracle.
type universe struct{ v4, v6 netip.Prefix }

var small = universe{v4: netip.MustParsePrefix("192.0.2.0/24"), v6: netip.MustParsePrefix("2001:db8::/120")}

func (u universe) addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range []netip.Prefix{u.v4, u.v6} {
		for a := p.Addr(); p.Contains(a); a = a.Next() {
			out = append(out, a)
		}
	}
	return out
}

var ports = []firewall.PortKey{
	{Proto: firewall.TCP, Port: 22}, {Proto: firewall.UDP, Port: 22}, {Proto: firewall.TCP, Port: 80}, {Proto: firewall.TCP, Port: 443},
}

// oracle computes, one address at a time, the deadline a protected
// (proto, port) has for src at now: the latest deadline among live grants
// whose prefix contains src.
func oracle(rs firewall.Ruleset, now time.Time, src netip.Addr, k firewall.PortKey) (time.Time, bool) {
	protected := false
	for _, p := range rs.Protected {
		protected = protected || p == k
	}
	var best time.Time
	found := false
	for _, g := range rs.Grants {
		if !protected || g.Proto != k.Proto || g.Port != k.Port || !g.Expires.After(now) || !g.Source.IsValid() {
			continue
		}
		p := g.Source
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Contains(src) && (!found || g.Expires.After(best)) {
			best, found = g.Expires, true
		}
	}
	return best, found
}

// oneGrantCovers reports whether a live grant covers the end of p and the
// start of e: adjacent pieces of one overlap component, which merge.
func oneGrantCovers(rs firewall.Ruleset, now time.Time, p, e firewall.Element) bool {
	for _, g := range rs.Grants {
		from, to := firewall.RangeOf(g.Source)
		if g.Key() == p.PortKey() && g.Expires.After(now) && from.BitLen() == p.From.BitLen() &&
			from.Compare(p.To) <= 0 && to.Compare(e.From) >= 0 {
			return true
		}
	}
	return false
}

// checkElements verifies the invariants of Elements(now) for rs: well-formed
// disjoint sorted ranges, merged where possible, and every address of u
// carrying exactly the oracle's deadline.
func checkElements(t *testing.T, rs firewall.Ruleset, now time.Time, u universe) {
	t.Helper()
	els := rs.Elements(now)
	for i, e := range els {
		if !e.From.IsValid() || !e.To.IsValid() || e.From.BitLen() != e.To.BitLen() || e.To.Less(e.From) {
			t.Fatalf("element %d %v: malformed range", i, e)
		}
		if !e.Expires.After(now) {
			t.Fatalf("element %d %v: expired at %v", i, e, now)
		}
		if i == 0 {
			continue
		}
		p := els[i-1]
		if p.Proto != e.Proto || p.Port != e.Port || p.From.BitLen() != e.From.BitLen() {
			continue
		}
		if !p.To.Less(e.From) {
			t.Fatalf("elements %d %v and %d %v overlap or are out of order", i-1, p, i, e)
		}
		if p.To.Next() == e.From && p.Expires.Equal(e.Expires) && oneGrantCovers(rs, now, p, e) {
			t.Fatalf("elements %d %v and %d %v should have been merged", i-1, p, i, e)
		}
	}
	st := firewall.State{Protected: rs.Protected, Elements: els}
	for _, a := range u.addrs() {
		for _, k := range ports {
			want, wantOK := oracle(rs, now, a, k)
			var got time.Time
			n := 0
			for _, e := range els {
				if e.Proto == k.Proto && e.Port == k.Port && e.From.BitLen() == a.BitLen() && e.From.Compare(a) <= 0 && a.Compare(e.To) <= 0 {
					got = e.Expires
					n++
				}
			}
			if n > 1 {
				t.Fatalf("%s %s: covered by %d elements", a, k, n)
			}
			if (n == 1) != wantOK || !got.Equal(want) {
				t.Fatalf("%s %s: elements give deadline %v (covered %v), oracle %v (covered %v)\ngrants: %v\nelements: %v",
					a, k, got, n == 1, want, wantOK, rs.Grants, els)
			}
			// Allows must agree with the oracle on both sides of the deadline.
			protected := false
			for _, p := range rs.Protected {
				protected = protected || p == k
			}
			if wantOK {
				if !st.Allows(a, k.Proto, k.Port, want.Add(-time.Nanosecond)) || (protected && st.Allows(a, k.Proto, k.Port, want)) {
					t.Fatalf("%s %s: Allows disagrees with the deadline %v", a, k, want)
				}
			} else if st.Allows(a, k.Proto, k.Port, now) == protected {
				t.Fatalf("%s %s: Allows = %v with no grant, protected %v", a, k, !protected, protected)
			}
		}
	}
}

// randomPrefix draws a prefix inside u: IPv4, IPv6, or IPv4 written v4-mapped.
func randomPrefix(r *rand.Rand, u universe) netip.Prefix {
	switch r.IntN(3) {
	case 0:
		b := u.v4.Addr().As4()
		b[3] = byte(r.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom4(b), 24+r.IntN(9)).Masked()
	case 1:
		b := u.v6.Addr().As16()
		b[15] = byte(r.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom16(b), 120+r.IntN(9)).Masked()
	default:
		b := u.v4.Addr().As4()
		b[3] = byte(r.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom16(netip.AddrFrom4(b).As16()), 120+r.IntN(9))
	}
}

func TestElementsMatchesOracle(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	for iter := 0; iter < 300; iter++ {
		var rs firewall.Ruleset
		for _, k := range ports {
			if r.IntN(4) != 0 {
				rs.Protected = append(rs.Protected, k)
			}
		}
		for n := r.IntN(12); n > 0; n-- {
			k := ports[r.IntN(len(ports))]
			// Whole minutes around now, so deadlines tie and some are past.
			exp := t0.Add(time.Duration(r.IntN(8)-2) * time.Minute)
			rs.Grants = append(rs.Grants, firewall.Grant{Source: randomPrefix(r, small), Proto: k.Proto, Port: k.Port, Expires: exp})
		}
		checkElements(t, rs, t0, small)
	}
}

// FuzzElements decodes grants from bytes (five per grant, at most 64 grants so
// the brute-force oracle stays fast) inside the small universe and checks Elements' invariants, in particular that no two
// elements of one (proto, port, family) overlap.
func FuzzElements(f *testing.F) {
	f.Add([]byte{0, 7, 0, 3, 0})
	f.Add([]byte{0, 0, 0, 3, 8, 8, 7, 0, 5, 0})
	f.Add([]byte{1, 1, 0, 3, 0, 2, 1, 0, 4, 9, 0, 1, 1, 2, 0})
	f.Add([]byte{8, 128, 0, 2, 0, 8, 0, 0, 2, 0, 3, 255, 0, 6, 0, 2, 200, 1, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		rs := firewall.Ruleset{Protected: ports[:3]} // 443/tcp stays unprotected
		for len(data) >= 5 && len(rs.Grants) < 64 {
			g := data[:5]
			data = data[5:]
			bits := int(g[0] % 9)
			var p netip.Prefix
			switch g[0] / 9 % 3 {
			case 0:
				p = netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, g[1]}), 24+bits)
			case 1:
				b := small.v6.Addr().As16()
				b[15] = g[1]
				p = netip.PrefixFrom(netip.AddrFrom16(b), 120+bits)
			default:
				p = netip.PrefixFrom(netip.AddrFrom16(netip.AddrFrom4([4]byte{192, 0, 2, g[1]}).As16()), 120+bits)
			}
			k := ports[int(g[2])%len(ports)]
			exp := t0.Add(time.Duration(int(g[3]%16)-3) * time.Second).Add(time.Duration(g[4]%4) * time.Millisecond)
			rs.Grants = append(rs.Grants, firewall.Grant{Source: p, Proto: k.Proto, Port: k.Port, Expires: exp})
		}
		checkElements(t, rs, t0, small)
	})
}
