package firewalltest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/firewall"
)

// Run is the conformance suite every firewall.Backend must pass.
//
// newBackend is called once per subtest, possibly from parallel subtests,
// and must return an independent, empty gate that is closed when the test
// ends (t.Cleanup). Subtests use the real clock: a real backend's kernel
// ages elements by it. Addresses come from the documentation ranges
// (RFC 5737, RFC 3849).
func Run(t *testing.T, newBackend func(t *testing.T) firewall.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b firewall.Backend)
	}{
		{"EmptyGate", testEmptyGate},
		{"ProtectPorts", testProtectPorts},
		{"GrantDeadlines", testGrantDeadlines},
		{"OverlappingGrantsNormalised", testOverlapping},
		{"Revoke", testRevoke},
		{"Extend", testExtend},
		{"ReapplyIsNoop", testReapplyIsNoop},
		{"Unprotect", testUnprotect},
		{"ExpiredGrantsNotAdded", testExpiredNotAdded},
		{"ExpiryWithoutApply", testExpiryWithoutApply},
		{"IPv6", testIPv6},
		{"ManyElements", testManyElements},
		{"Allows", testAllows},
		{"MalformedGrant", testMalformedGrant},
		{"CanceledContext", testCanceledContext},
		{"Close", testClose},
		{"HostCloseEstablished", testHostCloseEstablished},
		{"SampleRate", testSampleRate},
		{"InvalidRuleset", testInvalidRuleset},
		{"GatewayGrants", testGatewayGrants},
		{"GatewayIPv6", testGatewayIPv6},
		{"GatewayDualStack", testGatewayDualStack},
		{"GatewayPublished", testGatewayPublished},
		{"GatewayCloseEstablished", testGatewayCloseEstablished},
		{"ModeSwitch", testModeSwitch},
		{"BlockedCounters", testBlockedCounters},
		{"Delta", testDelta},
		{"GatewayDelta", testGatewayDelta},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newBackend(t))
		})
	}
}

var (
	ssh   = firewall.PortKey{Proto: firewall.TCP, Port: 22}
	https = firewall.PortKey{Proto: firewall.TCP, Port: 443}
	dns   = firewall.PortKey{Proto: firewall.UDP, Port: 53}
)

func g(src string, k firewall.PortKey, exp time.Time) firewall.Grant {
	return firewall.Grant{Source: netip.MustParsePrefix(src), Proto: k.Proto, Port: k.Port, Expires: exp}
}

func apply(t *testing.T, b firewall.Backend, rs firewall.Ruleset) firewall.ApplyResult {
	t.Helper()
	res, err := b.Apply(context.Background(), rs, time.Now())
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// Elements is what the gate holds afterwards (ignoring grants that
	// expire in between, which the suite's deadlines are far from).
	if n := len(state(t, b).Elements); res.Elements != n {
		t.Errorf("Apply reported %d elements, the gate holds %d", res.Elements, n)
	}
	return res
}

func state(t *testing.T, b firewall.Backend) firewall.State {
	t.Helper()
	st, err := b.State(context.Background(), time.Now())
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	return st
}

var cmpOpts = cmp.Options{
	cmpopts.EquateComparable(netip.Addr{}),
	cmpopts.EquateApproxTime(Tolerance),
	cmpopts.EquateEmpty(),
}

// checkResult compares an ApplyResult.
func checkResult(t *testing.T, what string, got, want firewall.ApplyResult) {
	t.Helper()
	// Elements is checked by apply against the gate itself.
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(firewall.ApplyResult{}, "Elements")); diff != "" {
		t.Errorf("%s: ApplyResult mismatch (-want +got):\n%s", what, diff)
	}
}

// checkHolds verifies that the gate holds exactly rs as of now.
func checkHolds(t *testing.T, b firewall.Backend, rs firewall.Ruleset, now time.Time) firewall.State {
	t.Helper()
	st := state(t, b)
	want := firewall.State{Mode: rs.Mode, Protected: rs.SortedProtected(), CloseEstablished: rs.SortedCloseEstablished(),
		Elements: rs.Elements(now), Published: rs.SortedPublished(), Translations: rs.Translations(now)}
	if diff := cmp.Diff(want, st, cmpOpts); diff != "" {
		t.Errorf("State mismatch (-want +got):\n%s", diff)
	}
	return st
}

type probe struct {
	src  string
	k    firewall.PortKey
	at   time.Duration // after the reference time
	want bool
}

func checkAllows(t *testing.T, st firewall.State, ref time.Time, probes []probe) {
	t.Helper()
	for _, p := range probes {
		if got := st.Allows(netip.MustParseAddr(p.src), p.k.Proto, p.k.Port, ref.Add(p.at)); got != p.want {
			t.Errorf("Allows(%s -> %s at +%v) = %v, want %v", p.src, p.k, p.at, got, p.want)
		}
	}
}

func testEmptyGate(t *testing.T, b firewall.Backend) {
	if diff := cmp.Diff(firewall.State{}, state(t, b), cmpOpts); diff != "" {
		t.Errorf("State before any Apply (-want +got):\n%s", diff)
	}
	checkResult(t, "first Apply installs the gate", apply(t, b, firewall.Ruleset{}), firewall.ApplyResult{Changed: true})
	checkHolds(t, b, firewall.Ruleset{}, time.Now())
	checkResult(t, "second Apply", apply(t, b, firewall.Ruleset{}), firewall.ApplyResult{})
}

func testProtectPorts(t *testing.T, b firewall.Backend) {
	rs := firewall.Ruleset{Protected: []firewall.PortKey{dns, ssh, ssh}}
	checkResult(t, "protect", apply(t, b, rs), firewall.ApplyResult{Changed: true, ProtectedAdded: 2})
	st := checkHolds(t, b, rs, time.Now())
	checkAllows(t, st, time.Now(), []probe{
		{"203.0.113.9", ssh, 0, false},
		{"203.0.113.9", dns, 0, false},
		{"2001:db8::9", ssh, 0, false},
		{"203.0.113.9", https, 0, true},
		{"203.0.113.9", firewall.PortKey{Proto: firewall.UDP, Port: 22}, 0, true},
	})
	rs.Protected = append(rs.Protected, https)
	checkResult(t, "protect one more", apply(t, b, rs), firewall.ApplyResult{Changed: true, ProtectedAdded: 1})
	checkHolds(t, b, rs, time.Now())
}

func testGrantDeadlines(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{ssh, dns},
		Grants: []firewall.Grant{
			g("192.0.2.10/32", ssh, now.Add(time.Hour)),
			g("198.51.100.0/24", ssh, now.Add(30*time.Minute)),
			g("203.0.113.7/32", dns, now.Add(90*time.Second)),
			g("2001:db8::10/128", ssh, now.Add(2*time.Hour)),
		},
	}
	checkResult(t, "grant", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 4, ProtectedAdded: 2})
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, now, []probe{
		{"192.0.2.10", ssh, time.Minute, true},
		{"192.0.2.10", ssh, 61 * time.Minute, false},
		{"192.0.2.11", ssh, time.Minute, false},
		{"198.51.100.200", ssh, 29 * time.Minute, true},
		{"198.51.100.200", ssh, 31 * time.Minute, false},
		{"203.0.113.7", dns, time.Minute, true},
		{"203.0.113.7", ssh, time.Minute, false},
		{"2001:db8::10", ssh, 119 * time.Minute, true},
	})
}

func testOverlapping(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{ssh},
		Grants: []firewall.Grant{
			g("192.0.2.0/24", ssh, now.Add(time.Hour)),
			g("192.0.2.128/25", ssh, now.Add(2*time.Hour)),
			g("192.0.2.200/32", ssh, now.Add(3*time.Hour)),
			g("192.0.2.0/25", ssh, now.Add(time.Hour)),
		},
	}
	if n := len(rs.Elements(now)); n != 4 {
		t.Fatalf("test setup: want 4 normalised elements, got %d", n)
	}
	checkResult(t, "overlapping grants", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 4, ProtectedAdded: 1})
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, now, []probe{
		{"192.0.2.1", ssh, 59 * time.Minute, true},
		{"192.0.2.1", ssh, 61 * time.Minute, false},
		{"192.0.2.130", ssh, 119 * time.Minute, true},
		{"192.0.2.200", ssh, 179 * time.Minute, true},
		{"192.0.2.201", ssh, 121 * time.Minute, false},
	})

	// A new grant that splits an existing range replaces it in one Apply.
	rs.Grants = append(rs.Grants, g("192.0.2.7/32", ssh, now.Add(4*time.Hour)))
	checkResult(t, "split a range", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 3, Removed: 1})
	checkHolds(t, b, rs, now)
}

func testRevoke(t *testing.T, b firewall.Backend) {
	now := time.Now()
	keep := g("192.0.2.1/32", ssh, now.Add(time.Hour))
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{keep, g("192.0.2.3/32", ssh, now.Add(time.Hour))}}
	apply(t, b, rs)
	rs.Grants = []firewall.Grant{keep}
	checkResult(t, "revoke", apply(t, b, rs), firewall.ApplyResult{Changed: true, Removed: 1})
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, time.Now(), []probe{{"192.0.2.1", ssh, 0, true}, {"192.0.2.3", ssh, 0, false}})
}

func testExtend(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{g("192.0.2.1/32", ssh, now.Add(time.Minute))}}
	apply(t, b, rs)
	rs.Grants[0].Expires = now.Add(time.Hour)
	checkResult(t, "extend", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 1, Removed: 1})
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, now, []probe{{"192.0.2.1", ssh, 59 * time.Minute, true}})

	rs.Grants[0].Expires = now.Add(30 * time.Second)
	checkResult(t, "shorten", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 1, Removed: 1})
	st = checkHolds(t, b, rs, now)
	checkAllows(t, st, now, []probe{{"192.0.2.1", ssh, time.Minute, false}})
}

func testReapplyIsNoop(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{ssh, dns},
		Grants: []firewall.Grant{
			g("192.0.2.0/24", ssh, now.Add(time.Hour)),
			g("192.0.2.9/32", ssh, now.Add(2*time.Hour)),
			g("2001:db8::/64", dns, now.Add(time.Hour)),
		},
	}
	apply(t, b, rs)
	for i := range 3 {
		time.Sleep(10 * time.Millisecond) // the kernel's clock moves; deadlines must still match
		checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
		if t.Failed() {
			t.Fatalf("re-apply %d changed something", i)
		}
	}
	checkHolds(t, b, rs, now)
}

func testUnprotect(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{ssh, https},
		Grants:    []firewall.Grant{g("192.0.2.1/32", ssh, now.Add(time.Hour)), g("192.0.2.1/32", https, now.Add(time.Hour))},
	}
	apply(t, b, rs)
	rs.Protected = []firewall.PortKey{ssh}
	checkResult(t, "unprotect", apply(t, b, rs), firewall.ApplyResult{Changed: true, Removed: 1, ProtectedRemoved: 1})
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, time.Now(), []probe{
		{"203.0.113.1", https, 0, true},
		{"203.0.113.1", ssh, 0, false},
		{"192.0.2.1", ssh, 0, true},
	})
}

func testExpiredNotAdded(t *testing.T, b firewall.Backend) {
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
	apply(t, b, rs)
	now := time.Now()
	rs.Grants = []firewall.Grant{
		g("192.0.2.1/32", ssh, now.Add(-time.Second)),
		g("192.0.2.2/32", ssh, now),
		g("192.0.2.3/32", ssh, now.Add(500*time.Microsecond)), // under the 1 ms resolution
	}
	res, err := b.Apply(context.Background(), rs, now)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, "expired grants", res, firewall.ApplyResult{})
	checkHolds(t, b, firewall.Ruleset{Protected: rs.Protected}, now)
}

func testExpiryWithoutApply(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{
		g("192.0.2.1/32", ssh, now.Add(300*time.Millisecond)),
		g("192.0.2.2/32", ssh, now.Add(time.Hour)),
	}}
	res, err := b.Apply(context.Background(), rs, now)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, "grant", res, firewall.ApplyResult{Changed: true, Added: 2, ProtectedAdded: 1})
	time.Sleep(time.Until(now.Add(400 * time.Millisecond)))
	// The short grant is gone with nobody calling Apply.
	st := checkHolds(t, b, rs, time.Now())
	if len(st.Elements) != 1 {
		t.Errorf("after expiry the gate holds %d elements, want 1", len(st.Elements))
	}
	checkAllows(t, st, time.Now(), []probe{{"192.0.2.1", ssh, 0, false}, {"192.0.2.2", ssh, 0, true}})
	// Re-applying the same ruleset has nothing left to remove.
	checkResult(t, "re-apply after expiry", apply(t, b, rs), firewall.ApplyResult{})
}

func testIPv6(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{ssh},
		Grants: []firewall.Grant{
			g("2001:db8::/64", ssh, now.Add(time.Hour)),
			g("2001:db8::1/128", ssh, now.Add(2*time.Hour)),
			g("2001:db8:1::/48", ssh, now.Add(time.Hour)),
			g("::ffff:192.0.2.5/128", ssh, now.Add(time.Hour)), // v4-mapped: an IPv4 element
		},
	}
	checkResult(t, "IPv6 grants", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 5, ProtectedAdded: 1})
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, now, []probe{
		{"2001:db8::1", ssh, 119 * time.Minute, true},
		{"2001:db8::2", ssh, 59 * time.Minute, true},
		{"2001:db8::2", ssh, 61 * time.Minute, false},
		{"2001:db8:1:ffff::1", ssh, time.Minute, true},
		{"2001:db8:2::1", ssh, time.Minute, false},
		{"192.0.2.5", ssh, time.Minute, true},
		{"::ffff:192.0.2.5", ssh, time.Minute, true},
		{"192.0.2.6", ssh, time.Minute, false},
	})
}

// testManyElements applies thousands of elements in one Apply. The nft
// backend must split them across messages (google/nftables v0.3.0 silently
// drops elements past ~64 KiB per message) and still send one batch.
func testManyElements(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
	// Alternate deadlines so that neighbouring addresses do not merge.
	add := func(a netip.Addr, i int) {
		exp := now.Add(time.Hour + time.Duration(i%2)*time.Second)
		rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(a, a.BitLen()), Proto: ssh.Proto, Port: ssh.Port, Expires: exp})
	}
	for _, p := range []string{"192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"} {
		pfx := netip.MustParsePrefix(p)
		for a := pfx.Addr(); pfx.Contains(a); a = a.Next() {
			add(a, len(rs.Grants))
		}
	}
	for a := netip.MustParseAddr("2001:db8::"); len(rs.Grants) < 5000; a = a.Next() {
		add(a, len(rs.Grants))
	}
	if n := len(rs.Elements(now)); n != 5000 {
		t.Fatalf("test setup: want 5000 elements, got %d", n)
	}
	checkResult(t, "5000 grants", apply(t, b, rs), firewall.ApplyResult{Changed: true, Added: 5000, ProtectedAdded: 1})
	if n := len(state(t, b).Elements); n != 5000 {
		t.Fatalf("gate holds %d elements after adding 5000", n)
	}
	checkHolds(t, b, rs, now)

	// Drop every other grant: 2,500 deletions in one Apply.
	var half []firewall.Grant
	for i, gr := range rs.Grants {
		if i%2 == 0 {
			half = append(half, gr)
		}
	}
	rs.Grants = half
	checkResult(t, "revoke half", apply(t, b, rs), firewall.ApplyResult{Changed: true, Removed: 2500})
	if n := len(state(t, b).Elements); n != 2500 {
		t.Fatalf("gate holds %d elements after revoking 2500 of 5000", n)
	}
	checkResult(t, "re-apply", apply(t, b, rs), firewall.ApplyResult{})
}

func testAllows(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{
		Protected: []firewall.PortKey{ssh, dns},
		Grants: []firewall.Grant{
			g("198.51.100.0/28", ssh, now.Add(10*time.Minute)),
			g("198.51.100.8/29", ssh, now.Add(20*time.Minute)),
			g("198.51.100.9/32", dns, now.Add(5*time.Minute)),
			g("2001:db8:abcd::/64", dns, now.Add(10*time.Minute)),
			g("203.0.113.1/32", https, now.Add(10*time.Minute)), // unprotected: not installed
		},
	}
	apply(t, b, rs)
	st := checkHolds(t, b, rs, now)
	checkAllows(t, st, now, []probe{
		{"198.51.100.0", ssh, 9 * time.Minute, true},
		{"198.51.100.7", ssh, 11 * time.Minute, false},
		{"198.51.100.8", ssh, 11 * time.Minute, true},
		{"198.51.100.15", ssh, 19 * time.Minute, true},
		{"198.51.100.15", ssh, 21 * time.Minute, false},
		{"198.51.100.16", ssh, 0, false},
		{"198.51.100.9", dns, 4 * time.Minute, true},
		{"198.51.100.9", dns, 6 * time.Minute, false},
		{"198.51.100.10", dns, 0, false},
		{"2001:db8:abcd::53", dns, 9 * time.Minute, true},
		{"2001:db8:abcd::53", ssh, 0, false},
		{"203.0.113.1", https, 0, true},
		{"203.0.113.2", https, 0, true},
	})
	if len(st.Elements) != 4 {
		t.Errorf("gate holds %d elements, want 4 (the grant on an unprotected port is not installed)", len(st.Elements))
	}
}

// testMalformedGrant applies a v4-mapped prefix shorter than /96. It reaches
// beyond ::ffff:0:0/96, so it is an IPv6 grant (::/80 once masked): it must
// neither fail the Apply, nor end up as a malformed element, nor take the
// IPv4 grants next to it down.
func testMalformedGrant(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{
		g("::ffff:0.0.0.0/80", ssh, now.Add(time.Hour)),
		g("0.0.0.0/32", ssh, now.Add(time.Hour)),
		g("192.0.2.1/32", ssh, now.Add(time.Hour)),
	}}
	apply(t, b, rs)
	st := state(t, b)
	for _, e := range st.Elements {
		if !e.From.IsValid() || !e.To.IsValid() || e.From.BitLen() != e.To.BitLen() || e.To.Less(e.From) {
			t.Errorf("gate holds a malformed element %v", e)
		}
	}
	checkAllows(t, st, now, []probe{
		{"0.0.0.0", ssh, time.Minute, true},
		{"192.0.2.1", ssh, time.Minute, true},
		{"192.0.2.2", ssh, time.Minute, false},
		{"::1", ssh, time.Minute, true},
		{"2001:db8::1", ssh, time.Minute, false},
	})
}

func testCanceledContext(t *testing.T, b firewall.Backend) {
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}}
	apply(t, b, rs)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Apply(ctx, firewall.Ruleset{}, time.Now()); err == nil {
		t.Error("Apply with a canceled context succeeded")
	}
	if _, err := b.State(ctx, time.Now()); err == nil {
		t.Error("State with a canceled context succeeded")
	}
	// The backend is still usable and unchanged.
	checkHolds(t, b, rs, time.Now())
}

func testClose(t *testing.T, b firewall.Backend) {
	apply(t, b, firewall.Ruleset{Protected: []firewall.PortKey{ssh}})
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.Apply(context.Background(), firewall.Ruleset{}, time.Now()); err == nil {
		t.Error("Apply after Close succeeded")
	}
}
