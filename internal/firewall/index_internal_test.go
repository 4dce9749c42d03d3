package firewall

import (
	"net/netip"
	"testing"
	"time"
)

// TestIndexKeepsNoEntryForRoots: a source that is its own root (every host
// grant no wider grant contains, i.e. nearly all at a million grants) costs
// the Index no root entry; members of a wider grant's component have one,
// and lose it when that grant goes.
func TestIndexKeepsNoEntryForRoots(t *testing.T) {
	now := time.Now()
	k := PortKey{Proto: TCP, Port: 22}
	rs := Ruleset{Protected: []PortKey{k}}
	for i := range 100 {
		rs.Grants = append(rs.Grants, Grant{Source: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32), Proto: k.Proto, Port: k.Port, Expires: now.Add(time.Hour)})
	}
	x := NewIndex(rs, now)
	g := x.groups[groupKey{key: k}]
	if g == nil || len(g.hosts) != 100 || len(g.deadlines) != 0 {
		t.Fatalf("index without the 100 sources: %+v", g)
	}
	if len(g.root) != 0 {
		t.Errorf("%d root entries for 100 sources that are their own roots", len(g.root))
	}
	wide := Grant{Source: netip.MustParsePrefix("10.0.0.0/24"), Proto: k.Proto, Port: k.Port, Expires: now.Add(time.Hour)}
	x.Update(nil, []Grant{wide}, now)
	if len(g.root) != 100 {
		t.Errorf("%d root entries once a /24 contains the 100 sources, want 100", len(g.root))
	}
	x.Update([]Grant{wide}, nil, now)
	if len(g.root) != 0 || x.Elements() != 100 {
		t.Errorf("after the /24 went: %d root entries, %d elements; want 0 and 100", len(g.root), x.Elements())
	}
}
