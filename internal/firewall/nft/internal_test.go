package nft

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/testenv"
)

var ssh = firewall.PortKey{Proto: firewall.TCP, Port: 22}

func newTestBackend(t *testing.T) (*Backend, *testenv.Netns) {
	t.Helper()
	ns := testenv.NewNetns(t)
	b, err := New(WithNetNSFd(ns.FD()))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b, ns
}

func sampleRuleset(now time.Time) firewall.Ruleset {
	grant := func(src string, k firewall.PortKey, d time.Duration) firewall.Grant {
		return firewall.Grant{Source: netip.MustParsePrefix(src), Proto: k.Proto, Port: k.Port, Expires: now.Add(d)}
	}
	dns := firewall.PortKey{Proto: firewall.UDP, Port: 53}
	return firewall.Ruleset{
		Protected: []firewall.PortKey{ssh, dns},
		Grants: []firewall.Grant{
			grant("192.0.2.0/24", ssh, time.Hour),
			grant("192.0.2.7/32", ssh, 2*time.Hour),
			grant("198.51.100.16/28", ssh, 90*time.Second),
			grant("2001:db8::/64", dns, time.Minute),
			grant("2001:db8:1::5/128", ssh, 10*time.Minute),
		},
	}
}

// gatewayRuleset protects two IPv4 destinations and one IPv6 one, closes
// established sessions on one, and publishes two of them.
func gatewayRuleset(now time.Time) firewall.Ruleset {
	web, db, web6 := netip.MustParseAddr("198.51.100.10"), netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("2001:db8:100::10")
	at := func(d netip.Addr, k firewall.PortKey) firewall.PortKey { k.Dest = d; return k }
	grant := func(src string, k firewall.PortKey, d time.Duration) firewall.Grant {
		return firewall.Grant{Source: netip.MustParsePrefix(src), Dest: k.Dest, Proto: k.Proto, Port: k.Port, Expires: now.Add(d)}
	}
	dns := firewall.PortKey{Proto: firewall.UDP, Port: 53}
	return firewall.Ruleset{
		Mode:             firewall.GatewayMode,
		Protected:        []firewall.PortKey{at(web, ssh), at(db, ssh), at(db, dns), at(web6, ssh)},
		CloseEstablished: []firewall.PortKey{at(db, ssh)},
		Grants: []firewall.Grant{
			grant("192.0.2.0/24", at(web, ssh), time.Hour),
			grant("192.0.2.7/32", at(db, ssh), 2*time.Hour),
			grant("203.0.113.5/32", at(db, dns), 90*time.Second),
			grant("2001:db8::/64", at(web6, ssh), 10*time.Minute),
		},
		Published: []firewall.Mapping{
			{Target: at(web, ssh), Public: netip.MustParseAddr("203.0.113.1"), PublicPort: 2201},
			{Target: at(db, dns), Public: netip.MustParseAddr("203.0.113.1"), PublicPort: 5353},
			{Target: at(web6, ssh), Public: netip.MustParseAddr("2001:db8:ffff::1"), PublicPort: 2201},
		},
		SampleRate: 20,
	}
}

func mustApply(t *testing.T, b *Backend, rs firewall.Ruleset) firewall.ApplyResult {
	t.Helper()
	res, err := b.Apply(context.Background(), rs, time.Now())
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func TestApplySendsOneBatch(t *testing.T) {
	b, _ := newTestBackend(t)
	rs := sampleRuleset(time.Now())
	for i := 0; i < 3000; i++ { // several chunks per set
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 14: byte(i >> 8), 15: byte(i)})
		rs.Grants = append(rs.Grants, firewall.Grant{Source: netip.PrefixFrom(a, 128), Proto: ssh.Proto, Port: ssh.Port, Expires: time.Now().Add(time.Hour + time.Duration(i%2)*time.Second)})
	}
	mustApply(t, b, rs)
	if b.flushes != 1 {
		t.Errorf("creating the table with 3,000 elements took %d batches, want 1", b.flushes)
	}
	mustApply(t, b, rs)
	if b.flushes != 1 {
		t.Errorf("a no-op Apply sent a batch")
	}
}

// TestFailedBatchLeavesState makes the kernel refuse the batch (a deletion of
// an element that does not exist) and checks nothing of it was applied.
func TestFailedBatchLeavesState(t *testing.T) {
	b, _ := newTestBackend(t)
	now := time.Now()
	before := sampleRuleset(now)
	mustApply(t, b, before)
	want, err := b.State(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}

	b.beforeFlush = bogusDelete
	after := before
	after.Protected = before.Protected[:1]
	after.Grants = append(after.Grants[:1:1], firewall.Grant{Source: netip.MustParsePrefix("203.0.113.9/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)})
	if _, err := b.Apply(context.Background(), after, time.Now()); err == nil {
		t.Fatal("Apply with a refused batch succeeded")
	}
	if b.flushes != 1+maxApplyAttempts {
		t.Errorf("batches sent = %d, want 1 + %d attempts", b.flushes, maxApplyAttempts)
	}
	got, err := b.State(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Protected) != 2 || len(got.Elements) != len(want.Elements) {
		t.Errorf("a refused batch changed the gate: before %v, after %v", want, got)
	}

	// The backend recovers: the next Apply works.
	b.beforeFlush = nil
	if res := mustApply(t, b, after); !res.Changed {
		t.Error("Apply after a refused batch changed nothing")
	}
}

// TestRetriesWhenAnElementExpiresInFlight simulates the race where an element
// Apply deletes expires in the kernel before the batch lands (ENOENT).
func TestRetriesWhenAnElementExpiresInFlight(t *testing.T) {
	b, _ := newTestBackend(t)
	mustApply(t, b, sampleRuleset(time.Now()))
	b.beforeFlush = func(c *nftables.Conn, l layout) {
		bogusDelete(c, l)
		b.beforeFlush = nil // once
	}
	rs := sampleRuleset(time.Now())
	rs.Grants = rs.Grants[1:]
	if res := mustApply(t, b, rs); res.Removed == 0 {
		t.Errorf("Apply after retry = %+v, want a removal", res)
	}
	if b.flushes != 3 {
		t.Errorf("batches = %d, want 3 (create, refused, retried)", b.flushes)
	}
}

func bogusDelete(c *nftables.Conn, l layout) {
	k := grantKeyBytes(netip.MustParseAddr("203.0.113.250"), firewall.PortKey{Proto: firewall.TCP, Port: 9})
	c.SetDeleteElements(l.spec(roleGrants, false).nftSet(l.table), []nftables.SetElement{{Key: k, KeyEnd: k}})
}

func TestRepairsChain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, ns *testenv.Netns) string
	}{
		{"flushed", fixed("flush chain inet jitgate input")},
		{"drop rule deleted", func(t *testing.T, ns *testenv.Netns) string {
			for _, line := range strings.Split(ns.Run(t, "nft", "-a", "list", "chain", "inet", "jitgate", "input"), "\n") {
				if _, h, ok := strings.Cut(line, `"jitgate:v3:9" # handle `); ok {
					return "delete rule inet jitgate input handle " + h
				}
			}
			t.Fatal("drop rule not found")
			return ""
		}},
		{"rule inserted", fixed("insert rule inet jitgate input tcp dport 22 accept")},
		{"rule appended", fixed("add rule inet jitgate input tcp dport 22 accept")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ns := newTestBackend(t)
			rs := sampleRuleset(time.Now())
			mustApply(t, b, rs)
			want := listChain(t, ns)
			load(t, ns, tc.tamper(t, ns))
			res := mustApply(t, b, rs)
			if want := (firewall.ApplyResult{Changed: true, Elements: res.Elements}); res != want || res.Elements == 0 {
				t.Errorf("repairing Apply = %+v, want %+v (elements untouched)", res, want)
			}
			if got := listChain(t, ns); got != want {
				t.Errorf("chain after repair:\n%s\nwant:\n%s", got, want)
			}
			if res := mustApply(t, b, rs); res.Changed {
				t.Errorf("Apply after repair changed again: %+v", res)
			}
		})
	}
}

func fixed(cmd string) func(*testing.T, *testenv.Netns) string {
	return func(*testing.T, *testenv.Netns) string { return cmd }
}

// listChain lists our chain without counters and handles.
func listChain(t *testing.T, ns *testenv.Netns) string {
	t.Helper()
	out := ns.Run(t, "nft", "list", "chain", "inet", "jitgate", "input")
	return strings.Join(strings.Fields(out), " ")
}

func TestRebuildsForeignLayout(t *testing.T) {
	for _, tc := range []struct{ name, preload string }{
		{"wrong priority", "table inet jitgate { chain input { type filter hook input priority 0; policy accept; }; }"},
		{"drop policy", "table inet jitgate { chain input { type filter hook input priority -10; policy drop; }; }"},
		{"extra chain", "table inet jitgate { chain extra { type filter hook output priority 0; }; }"},
		{"wrong set type", "table inet jitgate { set grants4 { type ipv4_addr; flags interval; }; }"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, ns := newTestBackend(t)
			load(t, ns, tc.preload)
			rs := sampleRuleset(time.Now())
			res := mustApply(t, b, rs)
			if !res.Changed || res.Added != len(rs.Elements(time.Now())) {
				t.Errorf("rebuilding Apply = %+v", res)
			}
			fresh, freshNS := newTestBackend(t)
			mustApply(t, fresh, rs)
			if got, want := listTable(t, ns), listTable(t, freshNS); got != want {
				t.Errorf("rebuilt table:\n%s\nwant:\n%s", got, want)
			}
			if res := mustApply(t, b, rs); res.Changed {
				t.Errorf("Apply after rebuild changed again: %+v", res)
			}
		})
	}
}

// listTable lists our table's structure: no elements, counters or handles.
func listTable(t *testing.T, ns *testenv.Netns) string {
	t.Helper()
	var keep []string
	for _, line := range strings.Split(ns.Run(t, "nft", "-t", "list", "table", "inet", "jitgate"), "\n") {
		keep = append(keep, strings.TrimSpace(line))
	}
	return strings.Join(keep, "\n")
}

func load(t *testing.T, ns *testenv.Netns, ruleset string) {
	t.Helper()
	cmd := ns.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s\n%s", err, out, ruleset)
	}
}

func TestLeavesOtherTablesAlone(t *testing.T) {
	b, ns := newTestBackend(t)
	const others = `table ip jitgate {
	chain input {
		type filter hook input priority 0; policy accept;
		tcp dport 22 drop
	}
}
table inet other {
	set s {
		type ipv4_addr
		elements = { 192.0.2.1 }
	}
	chain c {
		type filter hook input priority 0; policy accept;
	}
}
`
	load(t, ns, others)
	before := ns.Run(t, "nft", "list", "table", "ip", "jitgate") + ns.Run(t, "nft", "list", "table", "inet", "other")
	mustApply(t, b, sampleRuleset(time.Now()))
	mustApply(t, b, firewall.Ruleset{})
	if err := b.Remove(context.Background()); err != nil {
		t.Fatal(err)
	}
	after := ns.Run(t, "nft", "list", "table", "ip", "jitgate") + ns.Run(t, "nft", "list", "table", "inet", "other")
	if before != after {
		t.Errorf("other tables changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestRemove(t *testing.T) {
	b, ns := newTestBackend(t)
	ctx := context.Background()
	if err := b.Remove(ctx); err != nil {
		t.Fatalf("Remove of an absent table: %v", err)
	}
	mustApply(t, b, sampleRuleset(time.Now()))
	if err := b.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out := ns.Run(t, "nft", "list", "tables"); strings.Contains(out, "inet jitgate") {
		t.Errorf("table still there after Remove: %s", out)
	}
	st, err := b.State(ctx, time.Now())
	if err != nil || len(st.Protected)+len(st.Elements) != 0 {
		t.Errorf("State after Remove = %+v, %v; want empty", st, err)
	}
	if res := mustApply(t, b, firewall.Ruleset{}); !res.Changed {
		t.Error("Apply after Remove did not reinstall the gate")
	}
}

func TestCloseLeavesTable(t *testing.T) {
	b, ns := newTestBackend(t)
	rs := sampleRuleset(time.Now())
	mustApply(t, b, rs)
	before := listTable(t, ns)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if after := listTable(t, ns); after != before {
		t.Errorf("Close changed the table:\n%s\nwant:\n%s", after, before)
	}
	// A new backend picks the table up as its own.
	b2, err := New(WithNetNSFd(ns.FD()))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if res := mustApply(t, b2, rs); res.Changed {
		t.Errorf("a new backend rewrote the table: %+v", res)
	}
}

func TestMakePlanTolerance(t *testing.T) {
	want := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rs := firewall.Ruleset{Protected: []firewall.PortKey{ssh}, Grants: []firewall.Grant{
		{Source: netip.MustParsePrefix("192.0.2.1/32"), Proto: firewall.TCP, Port: 22, Expires: want},
	}}
	for _, tc := range []struct {
		held    time.Duration // off the desired deadline
		updates int
	}{
		{0, 0},
		{Tolerance, 0},
		{-Tolerance, 0},
		{Tolerance + time.Millisecond, 1},
		{-Tolerance - time.Millisecond, 1},
		{forever, 1},
	} {
		d := desiredState(rs, want.Add(-time.Hour), false)
		ks := kernelState{tableExists: true, layoutOK: true, rulesOK: true, sets: map[string]*setElems{}}
		for name, s := range d.sets {
			held := newSetElems(s.spec)
			for _, id := range s.ids() {
				e := s.byID[id]
				if d := e.deadline(); !d.IsZero() {
					e.setDeadline(d.Add(tc.held))
				}
				held.put(e)
			}
			ks.sets[name] = held
		}
		p := makePlan(ks, d)
		grants := d.layout.spec(roleHosts, false).name // a single address
		if len(p.del[grants]) != tc.updates || len(p.add[grants]) != tc.updates || p.rebuild || p.empty() != (tc.updates == 0) {
			t.Errorf("kernel deadline off by %v: plan deletes %d, adds %d, rebuild %v; want %d update(s)", tc.held, len(p.del[grants]), len(p.add[grants]), p.rebuild, tc.updates)
		}
	}
}

func TestShouldRebuild(t *testing.T) {
	for _, tc := range []struct {
		del, held, want int
		rebuild         bool
	}{
		{1, 100000, 100000, false},
		{15, 5000, 0, false},
		{50, 5000, 4950, false},
		{500, 5000, 4500, true},
		{2500, 5000, 2500, true},
		{300, 100000, 99700, false},
		{2000, 100000, 98000, true},
	} {
		if got := shouldRebuild(tc.del, tc.held, tc.want); got != tc.rebuild {
			t.Errorf("shouldRebuild(del %d, held %d, want %d) = %v, want %v", tc.del, tc.held, tc.want, got, tc.rebuild)
		}
	}
}

// TestDropCounterSurvives checks that refilling the chain and rebuilding the
// table carry the drop rule's counter over.
func TestDropCounterSurvives(t *testing.T) {
	b, ns := newTestBackend(t)
	now := time.Now()
	rs := sampleRuleset(now)
	load(t, ns, strings.Replace(Render(rs, now), "counter drop", "counter packets 7 bytes 420 drop", 1))
	for _, tamper := range []string{
		"add rule inet jitgate input tcp dport 22 accept", // refill the chain
		"add chain inet jitgate extra",                    // rebuild the table
	} {
		load(t, ns, tamper)
		if res := mustApply(t, b, rs); !res.Changed {
			t.Fatalf("Apply after %q changed nothing", tamper)
		}
		if out := ns.Run(t, "nft", "list", "chain", "inet", "jitgate", "input"); !strings.Contains(out, "counter packets 7 bytes 420 drop") {
			t.Errorf("after %q the drop counter was reset:\n%s", tamper, out)
		}
	}
}

func TestChunksFitOneAttribute(t *testing.T) {
	l := newLayout(firewall.GatewayMode, 0)
	for _, s := range append(l.specs, newLayout(firewall.HostMode, 0).specs...) {
		var sizes []int
		queueElements(nil, l, s, make([]elem, 2500), time.Time{}, func(_ *nftables.Set, els []nftables.SetElement) error {
			sizes = append(sizes, len(els))
			return nil
		})
		total, perElem := 0, elementSize(s)
		for _, n := range sizes {
			total += n
			if n > 1000 || n*perElem > 65535 {
				t.Errorf("set %s: chunk of %d elements (%d bytes)", s.name, n, n*perElem)
			}
		}
		if total != 2500 {
			t.Errorf("set %s: chunks hold %d elements, want 2500", s.name, total)
		}
	}
}

// TestApplyDeltaReadsNothing: a delta is one batch and no read of the table,
// keeps the cache, so the next full Apply still reads nothing, and leaves
// the kernel as a full Apply of the same grants would.
func TestApplyDeltaReadsNothing(t *testing.T) {
	b, _ := newTestBackend(t)
	now := time.Now()
	rs := sampleRuleset(now)
	mustApply(t, b, rs)
	reads, flushes := b.reads, b.flushes
	x := firewall.NewIndex(rs, now)
	add := []firewall.Grant{{Source: netip.MustParsePrefix("203.0.113.9/32"), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)}}
	d := x.Update([]firewall.Grant{rs.Grants[0]}, add, now)
	if _, err := b.ApplyDelta(context.Background(), d, now); err != nil {
		t.Fatalf("ApplyDelta: %v", err)
	}
	if b.reads != reads || b.flushes != flushes+1 {
		t.Errorf("ApplyDelta read the table %d times and sent %d batches; want 0 and 1", b.reads-reads, b.flushes-flushes)
	}
	rs.Grants = append(rs.Grants[1:len(rs.Grants):len(rs.Grants)], add...)
	res, err := b.Apply(context.Background(), rs, time.Now())
	if err != nil || res.Changed {
		t.Errorf("a full Apply after the delta = %+v, %v; want no change", res, err)
	}
	if b.reads != reads {
		t.Errorf("the full Apply after a delta read the table: the delta dropped the cache")
	}
}

// TestApplyDeltaAsksNothingFirst: the grant path does not wait for a
// netlink round trip before its batch. A delta asks the kernel's ruleset
// generation once, after the batch (before, it also asked before it, to
// know whether its cache still held); and the check after it alone still
// catches a change someone else made before the delta: the cache is
// dropped, and the next full Apply reads the table and repairs it.
func TestApplyDeltaAsksNothingFirst(t *testing.T) {
	b, ns := newTestBackend(t)
	now := time.Now()
	rs := sampleRuleset(now)
	mustApply(t, b, rs)
	x := firewall.NewIndex(rs, now)
	grant := func(src string) firewall.Grant {
		return firewall.Grant{Source: netip.MustParsePrefix(src), Proto: ssh.Proto, Port: ssh.Port, Expires: now.Add(time.Hour)}
	}
	gens := b.genReads
	if _, err := b.ApplyDelta(context.Background(), x.Update(nil, []firewall.Grant{grant("203.0.113.9/32")}, now), now); err != nil {
		t.Fatalf("ApplyDelta: %v", err)
	}
	if n := b.genReads - gens; n != 1 {
		t.Errorf("ApplyDelta asked the ruleset generation %d times, want once (after its batch)", n)
	}
	if b.cache == nil {
		t.Fatal("ApplyDelta dropped the cache with no one else changing the table")
	}

	// Someone else deletes an element, then a delta: the cache cannot
	// follow, and the next Apply reads and re-adds the element.
	load(t, ns, "delete element inet jitgate hosts4 { 203.0.113.9 . tcp . 22 }")
	if _, err := b.ApplyDelta(context.Background(), x.Update(nil, []firewall.Grant{grant("203.0.113.10/32")}, now), now); err != nil {
		t.Fatalf("ApplyDelta: %v", err)
	}
	if b.cache != nil {
		t.Fatal("a delta after someone else's change kept the cache")
	}
	rs.Grants = append(rs.Grants, grant("203.0.113.9/32"), grant("203.0.113.10/32"))
	reads := b.reads
	res, err := b.Apply(context.Background(), rs, time.Now())
	if err != nil || res.Added != 1 || b.reads != reads+1 {
		t.Errorf("the Apply after it = %+v, %v, %d reads; want the deleted element re-added after one read", res, err, b.reads-reads)
	}
}
