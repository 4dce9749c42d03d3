package firewalltest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Gateway destinations (RFC 5737 and RFC 3849 documentation addresses
// stand in for the hosts behind the gateway and for its public address).
var (
	web4    = netip.MustParseAddr("198.51.100.10")
	db4     = netip.MustParseAddr("198.51.100.20")
	web6    = netip.MustParseAddr("2001:db8:100::10")
	public4 = netip.MustParseAddr("203.0.113.1")
	public6 = netip.MustParseAddr("2001:db8:ffff::1")
)

func at(dest netip.Addr, k firewall.PortKey) firewall.PortKey {
	k.Dest = dest
	return k
}

func gw(src string, dest netip.Addr, k firewall.PortKey, exp time.Time) firewall.Grant {
	gr := g(src, k, exp)
	gr.Dest = dest
	return gr
}

type flow struct {
	src  string
	dst  netip.Addr
	k    firewall.PortKey
	at   time.Duration
	want bool
}

func checkFlows(t *testing.T, st firewall.State, ref time.Time, flows []flow) {
	t.Helper()
	for _, f := range flows {
		if got := st.AllowsTo(netip.MustParseAddr(f.src), f.dst, f.k.Proto, f.k.Port, ref.Add(f.at)); got != f.want {
			t.Errorf("AllowsTo(%s -> %s %s at +%v) = %v, want %v", f.src, f.dst, f.k, f.at, got, f.want)
		}
	}
}

func testHostCloseEstablished(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected:        []firewall.PortKey{ssh, dns, https},
		CloseEstablished: []firewall.PortKey{ssh, dns, {Proto: firewall.TCP, Port: 8443}}, // 8443 is not protected: ignored
		Grants:           []firewall.Grant{g("192.0.2.1/32", ssh, now.Add(time.Hour))},
	}
	checkResult(t, "close established", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 1, ProtectedAdded: 3})
	checkHolds(t, b, rs, now)
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
	rs.CloseEstablished = []firewall.PortKey{ssh}
	checkResult(t, "keep established on dns", apply(t, b, rs), firewall.ApplyResult{Changed: true})
	checkHolds(t, b, rs, now)
	rs.CloseEstablished = nil
	checkResult(t, "keep established everywhere", apply(t, b, rs), firewall.ApplyResult{Changed: true})
	checkHolds(t, b, rs, now)
}

func testSampleRate(t *testing.T, b firewall.Backend) {
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
	apply(t, b, rs)
	rs.SampleRate = firewall.DefaultSampleRate
	checkResult(t, "the default rate, spelt out", apply(t, b, rs), firewall.ApplyResult{})
	rs.SampleRate = 100
	checkResult(t, "another rate", apply(t, b, rs), firewall.ApplyResult{Changed: true})
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
}

func testInvalidRuleset(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{g("192.0.2.1/32", ssh, now.Add(time.Hour))}}
	apply(t, b, rs)
	for name, bad := range map[string]firewall.Ruleset{
		"host mode with a destination":     {Protected: []firewall.PortKey{at(web4, ssh)}},
		"gateway port without destination": {Mode: firewall.GatewayMode, Protected: []firewall.PortKey{ssh}},
		"mapping of an unprotected target": {Mode: firewall.GatewayMode, Protected: []firewall.PortKey{at(web4, ssh)},
			Published: []firewall.Mapping{{Target: at(db4, ssh), Public: public4, PublicPort: 2222}}},
		"two mappings on one public port": {Mode: firewall.GatewayMode, Protected: []firewall.PortKey{at(web4, ssh), at(db4, ssh)},
			Published: []firewall.Mapping{{Target: at(web4, ssh), Public: public4, PublicPort: 2222}, {Target: at(db4, ssh), Public: public4, PublicPort: 2222}}},
		"mapping across families": {Mode: firewall.GatewayMode, Protected: []firewall.PortKey{at(web4, ssh)},
			Published: []firewall.Mapping{{Target: at(web4, ssh), Public: public6, PublicPort: 2222}}},
	} {
		if _, err := b.Apply(context.Background(), bad, time.Now()); !errors.Is(err, firewall.ErrInvalidRuleset) {
			t.Errorf("%s: Apply = %v, want ErrInvalidRuleset", name, err)
		}
	}
	checkHolds(t, b, rs, now) // nothing changed
}

func gatewayRuleset(now time.Time) firewall.Ruleset {
	return firewall.Ruleset{
		Mode:      firewall.GatewayMode,
		Protected: []firewall.PortKey{at(web4, ssh), at(db4, ssh), at(web4, dns)},
		Grants: []firewall.Grant{
			gw("192.0.2.0/24", web4, ssh, now.Add(time.Hour)),
			gw("192.0.2.7/32", web4, ssh, now.Add(2*time.Hour)),
			gw("192.0.2.7/32", db4, ssh, now.Add(30*time.Minute)),
			gw("203.0.113.9/32", web4, dns, now.Add(time.Hour)),
			gw("192.0.2.8/32", web4, https, now.Add(time.Hour)),  // unprotected: not installed
			gw("2001:db8::1/128", web4, ssh, now.Add(time.Hour)), // across families: not installed
			gw("192.0.2.9/32", web6, ssh, now.Add(time.Hour)),    // unprotected destination
			g("192.0.2.10/32", ssh, now.Add(time.Hour)),          // no destination: matches nothing
		},
	}
}

func testGatewayGrants(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := gatewayRuleset(now)
	if n := len(rs.Elements(now)); n != 5 {
		t.Fatalf("test setup: want 5 elements, got %d: %v", n, rs.Elements(now))
	}
	checkResult(t, "gateway grants", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 5, ProtectedAdded: 3})
	st := checkHolds(t, b, rs, now)
	if st.Mode != firewall.GatewayMode {
		t.Errorf("State.Mode = %v, want gateway", st.Mode)
	}
	checkFlows(t, st, now, []flow{
		{"192.0.2.1", web4, ssh, 59 * time.Minute, true},
		{"192.0.2.1", web4, ssh, 61 * time.Minute, false},
		{"192.0.2.7", web4, ssh, 119 * time.Minute, true},
		{"192.0.2.1", db4, ssh, time.Minute, false}, // granted web, not db
		{"192.0.2.7", db4, ssh, 29 * time.Minute, true},
		{"192.0.2.7", db4, ssh, 31 * time.Minute, false},
		{"203.0.113.9", web4, dns, time.Minute, true},
		{"203.0.113.9", db4, dns, time.Minute, true}, // not protected on db
		{"192.0.2.8", web4, https, time.Minute, true},
		{"198.51.100.99", web4, ssh, time.Minute, false},
	})
	if !st.Allows(netip.MustParseAddr("192.0.2.1"), ssh.Proto, ssh.Port, now) {
		t.Error("Allows without destination on a gateway: the gateway's own port 22 is not protected")
	}
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})

	// Revoke one destination's grant; the other stays.
	rs.Grants = append(rs.Grants[:2:2], rs.Grants[3:]...)
	checkResult(t, "revoke db", apply(t, b, rs), firewall.ApplyResult{Changed: true, Removed: 1})
	st = checkHolds(t, b, rs, now)
	checkFlows(t, st, now, []flow{{"192.0.2.7", db4, ssh, 0, false}, {"192.0.2.7", web4, ssh, 0, true}})

	// Stop protecting db: its grants go with it.
	rs.Protected = []firewall.PortKey{at(web4, ssh), at(web4, dns)}
	checkResult(t, "unprotect db", apply(t, b, rs), firewall.ApplyResult{Changed: true, ProtectedRemoved: 1})
	checkHolds(t, b, rs, now)
}

func testGatewayIPv6(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Mode:      firewall.GatewayMode,
		Protected: []firewall.PortKey{at(web6, ssh), at(web4, ssh)},
		Grants: []firewall.Grant{
			gw("2001:db8::/64", web6, ssh, now.Add(time.Hour)),
			gw("2001:db8::7/128", web6, ssh, now.Add(2*time.Hour)),
			gw("::ffff:192.0.2.5/128", web4, ssh, now.Add(time.Hour)), // v4-mapped source: an IPv4 element
		},
	}
	checkResult(t, "IPv6 gateway grants", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 4, ProtectedAdded: 2})
	st := checkHolds(t, b, rs, now)
	checkFlows(t, st, now, []flow{
		{"2001:db8::1", web6, ssh, 59 * time.Minute, true},
		{"2001:db8::7", web6, ssh, 119 * time.Minute, true},
		{"2001:db8::8", web6, ssh, 61 * time.Minute, false},
		{"2001:db8:1::1", web6, ssh, 0, false},
		{"192.0.2.5", web4, ssh, 0, true},
		{"192.0.2.6", web4, ssh, 0, false},
	})
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
}

// testGatewayDualStack protects a dual-stack host behind the gateway (web4
// and web6 are its two addresses) the way the server describes it: every
// address protected, each grant given for the addresses of its source's
// family. The IPv6 address stays closed to everyone, IPv6 sources included,
// while only IPv4 sources are granted, even with the IPv4 grant also listed
// for the IPv6 address (across families: nothing installed); it opens for
// exactly the IPv6 source granted later, and closes with that grant's
// revocation while the IPv4 grant stays.
func testGatewayDualStack(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Mode:      firewall.GatewayMode,
		Protected: []firewall.PortKey{at(web4, ssh), at(web6, ssh)},
		Grants: []firewall.Grant{
			gw("192.0.2.7/32", web4, ssh, now.Add(time.Hour)),
			gw("192.0.2.7/32", web6, ssh, now.Add(time.Hour)), // across families: not installed
		},
	}
	checkResult(t, "dual-stack host, IPv4 grant", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 1, ProtectedAdded: 2})
	st := checkHolds(t, b, rs, now)
	checkFlows(t, st, now, []flow{
		{"192.0.2.7", web4, ssh, 0, true},
		{"192.0.2.8", web4, ssh, 0, false},
		{"2001:db8::7", web6, ssh, 0, false},
		{"2001:db8::8", web6, ssh, 0, false},
	})
	rs.Grants = append(rs.Grants, gw("2001:db8::7/128", web6, ssh, now.Add(30*time.Minute)))
	checkResult(t, "IPv6 grant", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 1})
	st = checkHolds(t, b, rs, now)
	checkFlows(t, st, now, []flow{
		{"192.0.2.7", web4, ssh, 0, true},
		{"2001:db8::7", web6, ssh, 29 * time.Minute, true},
		{"2001:db8::7", web6, ssh, 31 * time.Minute, false},
		{"2001:db8::8", web6, ssh, 0, false},
	})
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
	rs.Grants = rs.Grants[:2]
	checkResult(t, "revoke the IPv6 grant", apply(t, b, rs), firewall.ApplyResult{Changed: true, Removed: 1})
	st = checkHolds(t, b, rs, now)
	checkFlows(t, st, now, []flow{{"2001:db8::7", web6, ssh, 0, false}, {"192.0.2.7", web4, ssh, 0, true}})
}

func testGatewayPublished(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := gatewayRuleset(now)
	rs.Protected = append(rs.Protected, at(web6, ssh))
	rs.Grants = append(rs.Grants, gw("2001:db8::/64", web6, ssh, now.Add(time.Hour)))
	webSSH := firewall.Mapping{Target: at(web4, ssh), Public: public4, PublicPort: 2201}
	dbSSH := firewall.Mapping{Target: at(db4, ssh), Public: public4, PublicPort: 2202}
	web6SSH := firewall.Mapping{Target: at(web6, ssh), Public: public6, PublicPort: 2201}
	rs.Published = []firewall.Mapping{dbSSH, webSSH, web6SSH, webSSH}
	if n := len(rs.Translations(now)); n != 5 {
		t.Fatalf("test setup: want 5 translations, got %d: %v", n, rs.Translations(now))
	}
	checkResult(t, "publish", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 6, ProtectedAdded: 4})
	st := checkHolds(t, b, rs, now)
	for _, tc := range []struct {
		src    string
		public netip.Addr
		port   uint16
		at     time.Duration
		want   firewall.PortKey // zero: not translated
	}{
		{"192.0.2.1", public4, 2201, 59 * time.Minute, at(web4, ssh)},
		{"192.0.2.1", public4, 2201, 61 * time.Minute, firewall.PortKey{}},
		{"192.0.2.7", public4, 2201, 119 * time.Minute, at(web4, ssh)},
		{"192.0.2.7", public4, 2202, 29 * time.Minute, at(db4, ssh)},
		{"192.0.2.1", public4, 2202, 0, firewall.PortKey{}}, // granted web, not db
		{"198.51.100.99", public4, 2201, 0, firewall.PortKey{}},
		{"2001:db8::5", public6, 2201, 0, at(web6, ssh)},
		{"2001:db8:1::5", public6, 2201, 0, firewall.PortKey{}},
		{"192.0.2.1", public4, 2203, 0, firewall.PortKey{}}, // not published
	} {
		got, ok := st.Translates(netip.MustParseAddr(tc.src), tc.public, firewall.TCP, tc.port, now.Add(tc.at))
		if ok != (tc.want != firewall.PortKey{}) || got != tc.want {
			t.Errorf("Translates(%s -> %s:%d at +%v) = %v, %v; want %v", tc.src, tc.public, tc.port, tc.at, got, ok, tc.want)
		}
	}
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})

	// Revoking a grant removes its translation; extending one moves it.
	rs.Grants = rs.Grants[1:] // 192.0.2.0/24 -> web
	checkResult(t, "revoke", apply(t, b, rs), firewall.ApplyResult{Changed: true, Removed: 2})
	st = checkHolds(t, b, rs, now)
	if _, ok := st.Translates(netip.MustParseAddr("192.0.2.1"), public4, firewall.TCP, 2201, now); ok {
		t.Error("a revoked source is still translated")
	}
	// Unpublishing keeps the forward-path grants.
	rs.Published = []firewall.Mapping{dbSSH}
	checkResult(t, "unpublish", apply(t, b, rs), firewall.ApplyResult{Changed: true})
	st = checkHolds(t, b, rs, now)
	checkFlows(t, st, now, []flow{{"192.0.2.7", web4, ssh, 0, true}})
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
}

func testGatewayCloseEstablished(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := gatewayRuleset(now)
	rs.CloseEstablished = []firewall.PortKey{at(web4, ssh), at(web6, ssh), ssh} // only web4 is protected
	apply(t, b, rs)
	st := checkHolds(t, b, rs, now)
	if want := []firewall.PortKey{at(web4, ssh)}; !cmp.Equal(st.CloseEstablished, want, cmpOpts) {
		t.Errorf("CloseEstablished = %v, want %v", st.CloseEstablished, want)
	}
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
}

func testModeSwitch(t *testing.T, b firewall.Backend) {
	now := time.Now()
	host := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{g("192.0.2.1/32", ssh, now.Add(time.Hour))}}
	apply(t, b, host)
	gate := gatewayRuleset(now)
	checkResult(t, "to gateway", apply(t, b, gate), firewall.ApplyResult{Changed: true, Added: 5, Removed: 1, ProtectedAdded: 3, ProtectedRemoved: 1})
	checkHolds(t, b, gate, now)
	checkResult(t, "back to host", apply(t, b, host), firewall.ApplyResult{Changed: true, Added: 1, Removed: 5, ProtectedAdded: 1, ProtectedRemoved: 3})
	st := checkHolds(t, b, host, now)
	if st.Mode != firewall.HostMode {
		t.Errorf("State.Mode = %v, want host", st.Mode)
	}
}

// testBlockedCounters checks the counters' shape: one zeroed counter per
// protected port and published endpoint. Every backend must count (the
// agent reports blocked attempts), so one that cannot fails the suite. Counting
// real packets is the packet tests' business.
func testBlockedCounters(t *testing.T, b firewall.Backend) {
	bc, ok := b.(firewall.BlockedCounter)
	if !ok {
		t.Fatal("backend does not implement firewall.BlockedCounter")
	}
	rs := gatewayRuleset(time.Now())
	rs.Published = []firewall.Mapping{{Target: at(web4, ssh), Public: public4, PublicPort: 2201}}
	apply(t, b, rs)
	got, err := bc.Blocked(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []firewall.Blocked{
		{Port: at(web4, ssh)}, {Port: at(db4, ssh)}, {Port: at(web4, dns)},
		{Port: firewall.PortKey{Proto: firewall.TCP, Port: 2201, Dest: public4}, Published: true},
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("Blocked() mismatch (-want +got):\n%s", diff)
	}
	apply(t, b, firewall.Ruleset{Protected: []firewall.PortKey{ssh, dns}})
	got, err = bc.Blocked(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]firewall.Blocked{{Port: ssh}, {Port: dns}}, got, cmpOpts); diff != "" {
		t.Errorf("Blocked() in host mode mismatch (-want +got):\n%s", diff)
	}
}
