package firewalltest

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
)

// applyDelta moves the gate from rs to next through an Index's Delta (the
// agent's incremental path) and checks it then holds exactly next, as a full
// Apply would have left it, and that a full Apply of next changes nothing.
func applyDelta(t *testing.T, b firewall.Backend, x *firewall.Index, next firewall.Ruleset, del, add []firewall.Grant) firewall.ApplyResult {
	t.Helper()
	da, ok := b.(firewall.DeltaApplier)
	if !ok {
		t.Fatalf("%T does not implement firewall.DeltaApplier", b)
	}
	now := time.Now()
	d := x.Update(del, add, now)
	res, err := da.ApplyDelta(context.Background(), d, now)
	if err != nil {
		t.Fatalf("ApplyDelta(%+v): %v", d, err)
	}
	checkHolds(t, b, next, now)
	checkResult(t, "full apply after the delta", apply(t, b, next), firewall.ApplyResult{})
	return res
}

// testDelta: grants added, extended and removed through deltas, including
// nested prefixes that split and merge elements, leave the gate as a full
// Apply would; a delta before any Apply and one the gate cannot take (an
// element it does not hold) are refused and change nothing.
func testDelta(t *testing.T, b firewall.Backend) {
	now := time.Now()
	da := b.(firewall.DeltaApplier)
	if _, err := da.ApplyDelta(context.Background(), firewall.Delta{Add: []firewall.Element{{}}}, now); !errors.Is(err, firewall.ErrNeedFullApply) {
		t.Fatalf("ApplyDelta before any Apply: %v, want ErrNeedFullApply", err)
	}
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh, dns}, Grants: []firewall.Grant{
		g("192.0.2.7/32", ssh, now.Add(time.Hour)),
		g("2001:db8::7/128", ssh, now.Add(time.Hour)),
	}}
	apply(t, b, rs)
	x := firewall.NewIndex(rs, now)
	step := func(name string, del, add []firewall.Grant) {
		t.Helper()
		next := rs
		next.Grants = append(without(rs.Grants, del), add...)
		if res := applyDelta(t, b, x, next, del, add); !res.Changed {
			t.Errorf("%s: ApplyDelta reports no change", name)
		}
		rs = next
	}
	step("add", nil, []firewall.Grant{g("192.0.2.8/32", ssh, now.Add(time.Hour)), g("198.51.100.0/24", dns, now.Add(time.Hour))})
	step("extend", []firewall.Grant{rs.Grants[0]}, []firewall.Grant{g("192.0.2.7/32", ssh, now.Add(2*time.Hour))})
	step("a wider grant over hosts", nil, []firewall.Grant{g("192.0.2.0/24", ssh, now.Add(90*time.Minute))})
	step("the wider grant revoked", []firewall.Grant{rs.Grants[len(rs.Grants)-1]}, nil)
	step("revoke", []firewall.Grant{rs.Grants[0]}, nil)

	// A delta deleting an element the gate does not hold is refused whole:
	// the element it would add does not appear.
	bad := firewall.Delta{
		Del: []firewall.Element{{From: mustAddr("203.0.113.1"), To: mustAddr("203.0.113.1"), Proto: firewall.TCP, Port: 22, Expires: now.Add(time.Hour)}},
		Add: []firewall.Element{{From: mustAddr("203.0.113.2"), To: mustAddr("203.0.113.2"), Proto: firewall.TCP, Port: 22, Expires: now.Add(time.Hour)}},
	}
	if _, err := da.ApplyDelta(context.Background(), bad, time.Now()); err == nil {
		t.Fatal("a delta deleting an element the gate does not hold was applied")
	}
	checkHolds(t, b, rs, now)
}

// without returns gs without one occurrence of each grant of del.
func without(gs, del []firewall.Grant) []firewall.Grant {
	del = append([]firewall.Grant(nil), del...)
	var out []firewall.Grant
	for _, gr := range gs {
		if i := slices.Index(del, gr); i >= 0 {
			del = slices.Delete(del, i, i+1)
			continue
		}
		out = append(out, gr)
	}
	return out
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// testGatewayDelta: in gateway mode a delta carries the DNAT translations of
// a published target's grants along with them.
func testGatewayDelta(t *testing.T, b firewall.Backend) {
	now := time.Now()
	rs := gatewayRuleset(now)
	rs.Published = []firewall.Mapping{{Target: at(web4, ssh), Public: public4, PublicPort: 2201}}
	apply(t, b, rs)
	x := firewall.NewIndex(rs, now)
	add := []firewall.Grant{gw("198.51.100.7/32", web4, ssh, now.Add(time.Hour)), gw("198.51.100.8/32", db4, ssh, now.Add(time.Hour))}
	next := rs
	next.Grants = append(append([]firewall.Grant(nil), rs.Grants...), add...)
	applyDelta(t, b, x, next, nil, add)
	st := state(t, b)
	if got, ok := st.Translates(mustAddr("198.51.100.7"), public4, firewall.TCP, 2201, now); !ok || got != at(web4, ssh) {
		t.Errorf("a source granted by a delta is not translated: %v %v", got, ok)
	}
	// Revoked through a delta: no longer translated.
	rs = next
	next.Grants = without(next.Grants, add)
	applyDelta(t, b, x, next, add, nil)
	if _, ok := state(t, b).Translates(mustAddr("198.51.100.7"), public4, firewall.TCP, 2201, now); ok {
		t.Error("a source revoked by a delta is still translated")
	}
}
