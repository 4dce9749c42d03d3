package inventory

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientSide(t *testing.T) {
	// eth0: the client link (public address 192.0.2.254); eth1, eth2:
	// protected networks; 10.0.5.0/24 is carved out of eth0's 10.0.0.0/16
	// and reached through eth2; eth3 carries the default route.
	inv := &Host{Links: []Link{
		{Name: "eth0", Prefixes: []string{"10.0.0.0/16", "192.0.2.0/24", "2001:db8::/64"}},
		{Name: "eth1", Prefixes: []string{"172.16.0.0/16", "198.51.100.0/24", "2001:db8:100::/64"}},
		{Name: "eth2", Prefixes: []string{"10.0.5.0/24"}},
		{Name: "eth3", Prefixes: []string{"100.64.0.0/24"}, Default: true},
	}}
	public := netip.MustParseAddr("192.0.2.254")
	for _, tc := range []struct {
		addr   string
		public netip.Addr
		inv    *Host
		want   string // "" when not on the client side, else words of the reason
	}{
		{"192.0.2.50", public, inv, "interface eth0, 192.0.2.0/24, where clients reach the public address 192.0.2.254"},
		{"2001:db8::50", public, inv, "interface eth0, 2001:db8::/64"},
		{"10.0.9.1", public, inv, "interface eth0, 10.0.0.0/16"},
		{"::ffff:192.0.2.50", public, inv, "192.0.2.50 is on the client side"},
		{"10.0.5.7", public, inv, ""},
		{"198.51.100.10", public, inv, ""},
		{"2001:db8:100::10", public, inv, ""},
		{"172.16.3.4", public, inv, ""},
		{"100.64.0.9", public, inv, "interface eth3, 100.64.0.0/24, where a default route leaves"},
		{"192.0.2.50", netip.Addr{}, inv, ""},                               // no public address: eth0 is not known as client side
		{"192.0.2.50", public, &Host{Routes: []string{"192.0.2.0/24"}}, ""}, // no links reported
		{"192.0.2.50", public, nil, ""},
	} {
		b, ok := ClientSide(tc.inv, tc.public, netip.MustParseAddr(tc.addr))
		msg := b.Explain("gw-1")
		switch {
		case tc.want == "" && ok:
			t.Errorf("%s (public %v): on the client side: %s; want not", tc.addr, tc.public, msg)
		case tc.want != "" && (!ok || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "gateway gw-1")):
			t.Errorf("%s (public %v): %v %q; want on the client side, saying %q", tc.addr, tc.public, ok, msg, tc.want)
		}
	}
}

// FuzzClientSide feeds arbitrary links and addresses (an agent's report is
// untrusted input): ClientSide never panics, and when it says an address is
// on the client side, the prefix it names holds the address, belongs to the
// link it names, is the most specific one holding it, and that link holds a
// default route or the public address.
func FuzzClientSide(f *testing.F) {
	f.Add("eth0", "192.0.2.0/24", false, "eth1", "198.51.100.0/24", true, "192.0.2.254", "192.0.2.50")
	f.Add("eth0", "2001:db8::/64", false, "eth1", "2001:db8::/48", false, "2001:db8::fe", "2001:db8:0:1::5")
	f.Add("eth0", "10.0.0.0/8", true, "eth0", "not a prefix", false, "", "10.1.2.3")
	f.Add("a", "::ffff:192.0.2.0/120", false, "b", "0.0.0.0/0", false, "::ffff:192.0.2.1", "192.0.2.9")
	f.Fuzz(func(t *testing.T, l1, p1 string, d1 bool, l2, p2 string, d2 bool, public, addr string) {
		inv := &Host{Links: []Link{{Name: l1, Prefixes: []string{p1}, Default: d1}, {Name: l2, Prefixes: []string{p2}, Default: d2}}}
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return
		}
		pub, _ := netip.ParseAddr(public)
		b, ok := ClientSide(inv, pub, a)
		if !ok {
			return
		}
		if !b.Prefix.Contains(a.Unmap()) || b.Address != a.Unmap() {
			t.Fatalf("ClientSide(%s) = %+v: the prefix does not hold the address", a, b)
		}
		owner := false
		for _, l := range inv.Links {
			for _, s := range l.Prefixes {
				p, err := netip.ParsePrefix(s)
				if err != nil || !p.Contains(a.Unmap()) {
					continue
				}
				if p.Bits() > b.Prefix.Bits() {
					t.Fatalf("ClientSide(%s) = %+v, but %s on %s is more specific", a, b, p, l.Name)
				}
				if l.Name == b.Link && p == b.Prefix {
					owner = true
				}
			}
		}
		if !owner || b.Why == "" {
			t.Fatalf("ClientSide(%s) = %+v: link and prefix do not match the report %+v", a, b, inv.Links)
		}
		if msg := b.Explain("gw"); !strings.Contains(msg, b.Link) {
			t.Fatalf("Explain = %q", msg)
		}
	})
}
