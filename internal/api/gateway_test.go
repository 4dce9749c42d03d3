package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// gatewayEnv has gateway gw-1 (public 203.0.113.10 on its client side,
// eth0: 203.0.113.0/24 and 2001:db8:1::/64; routing 10.0.0.0/24 and
// 2001:db8:10::/64 on eth1, behind it) whose agent reported gateway mode,
// its routes and links, and its own addresses.
func gatewayEnv(t *testing.T) (*env, *client.Client) {
	t.Helper()
	e := newEnv(t)
	ctx := context.Background()
	gw := e.createEnrolled(t, wire.TargetCreate{Name: "gw-1", PublicAddress: "203.0.113.10"})
	if err := gw.Report(ctx, wire.AgentReport{Revision: 0, Mode: "gateway", Inventory: gatewayInventory(false),
		Addresses: []string{"203.0.113.10", "2001:db8:1::fe", "10.0.0.254", "2001:db8:10::fe"}}); err != nil {
		t.Fatalf("gateway report: %v", err)
	}
	return e, gw
}

// gatewayInventory is what gw-1 reports; with defaultVia1, its default
// route leaves through eth1 instead of nowhere.
func gatewayInventory(defaultVia1 bool) *wire.Inventory {
	return &wire.Inventory{CanEnforce: true,
		Routes: []string{"10.0.0.0/24", "2001:db8:10::/64", "203.0.113.0/24", "2001:db8:1::/64"},
		Links: []wire.Link{
			{Name: "eth0", Prefixes: []string{"203.0.113.0/24", "2001:db8:1::/64"}},
			{Name: "eth1", Prefixes: []string{"10.0.0.0/24", "2001:db8:10::/64"}, Default: defaultVia1},
		}}
}

func TestGatewayTargets(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		in   wire.TargetCreate
		want int
		msg  string
	}{
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "10.9.0.5"}, 422, "not routed by gateway gw-1"},
		{wire.TargetCreate{Name: "web-01", Gateway: "nope", Address: "10.0.0.5"}, 422, "no target"},
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1"}, 422, "needs both"},
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "not-an-ip"}, 422, "not an IPv4 or IPv6 address"},
	} {
		before, _ := e.c.Targets(ctx)
		_, err := e.c.CreateTarget(ctx, tc.in)
		if client.StatusOf(err) != tc.want || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("CreateTarget(%+v) = %v; want %d mentioning %q", tc.in, err, tc.want, tc.msg)
		}
		if after, _ := e.c.Targets(ctx); len(after) != len(before) {
			t.Errorf("a refused target was created")
		}
	}
	tc, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "10.0.0.5", Labels: map[string]string{"group": "prod"}})
	if err != nil || tc.EnrollToken != "" || tc.Target.Gateway != "gw-1" {
		t.Fatalf("a target behind the gateway: %v, token %q", err, tc.EnrollToken)
	}
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-02", Gateway: "gw-1", Address: "10.0.0.6"}); err != nil {
		t.Fatal(err)
	}
	// IPv6 sources in a rule for an IPv4 target are refused.
	_, err = e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, AllowedSources: []string{"2001:db8::/32"}}}})
	if client.StatusOf(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "cannot reach web-01") {
		t.Errorf("IPv6 source for an IPv4 target: %v", err)
	}
	// Published ports get stable mapped ports without clashes.
	if _, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}, {Port: 3389, Publish: true, MappedPort: 23389}}}); err != nil {
		t.Fatal(err)
	}
	_, err = e.c.SetPolicy(ctx, "web-02", wire.Policy{Rules: []wire.PortRule{{Port: 3389, Publish: true, MappedPort: 23389}}})
	if client.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "taken by web-01") {
		t.Errorf("clashing mapped port: %v, want 409 naming web-01", err)
	}
	if _, err := e.c.SetPolicy(ctx, "web-02", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}}}); err != nil {
		t.Fatal(err)
	}
	w1, _ := e.c.Target(ctx, "web-01")
	w2, _ := e.c.Target(ctx, "web-02")
	if len(w1.Mappings) != 2 || w1.Mappings[0].MappedPort != 20000 || w1.Mappings[1].MappedPort != 23389 || len(w2.Mappings) != 1 || w2.Mappings[0].MappedPort != 20001 {
		t.Fatalf("mappings: web-01 %+v, web-02 %+v", w1.Mappings, w2.Mappings)
	}
	// Setting the policy again keeps the mapped ports.
	if _, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true, MaxDuration: wire.Duration(time.Hour)}, {Port: 3389, Publish: true, MappedPort: 23389}}}); err != nil {
		t.Fatal(err)
	}
	if again, _ := e.c.Target(ctx, "web-01"); again.Mappings[0].MappedPort != 20000 {
		t.Errorf("mapped port moved to %d", again.Mappings[0].MappedPort)
	}

	// The gateway's desired state holds the targets behind it.
	ds, err := gw.Desired(ctx, 0, 0)
	if err != nil || ds.Mode != "gateway" || len(ds.Protected) != 3 || len(ds.Published) != 3 {
		t.Fatalf("gateway desired state: %v %+v", err, ds)
	}
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Connect) != 1 || !strings.Contains(r.Connect[0], "ssh -p 20000 203.0.113.10") {
		t.Errorf("contact information %v, want ssh -p 20000 203.0.113.10", r.Connect)
	}
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "2001:db8::7", Duration: wire.Duration(time.Hour), Reason: "x"}); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("IPv6 source to an IPv4 target behind a gateway: %v, want 422", err)
	}
	ds, err = gw.Desired(ctx, ds.Revision, 0)
	if err != nil || len(ds.Grants) != 1 || ds.Grants[0].Destination != "10.0.0.5" {
		t.Fatalf("gateway grants: %v %+v", err, ds.Grants)
	}
	if err := gw.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Request(ctx, r.ID); got.State != "active" {
		t.Errorf("a request behind the gateway is %s after the gateway applied, want active", got.State)
	}
	// The gateway cannot be removed while targets are behind it.
	if err := e.c.RemoveTarget(ctx, "gw-1"); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("removing a gateway with targets behind it: %v, want 409", err)
	}
}

func TestInventoryClassesAndEnable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mk := func(name, group string, inv *wire.Inventory) *client.Client {
		ag := e.createEnrolled(t, wire.TargetCreate{Name: name, Labels: map[string]string{"group": group}})
		if inv != nil {
			if err := ag.Report(ctx, wire.AgentReport{Revision: 0, Mode: "host", Inventory: inv}); err != nil {
				t.Fatal(err)
			}
		}
		return ag
	}
	mk("web-01", "prod", &wire.Inventory{CanEnforce: true, Listening: []wire.Listener{{Address: "0.0.0.0", Port: 22, Protocol: "tcp"}}})
	mk("web-02", "prod", &wire.Inventory{CanEnforce: true})
	mk("old-01", "legacy", &wire.Inventory{CanEnforce: false, Reason: "running without CAP_NET_ADMIN"})
	mk("db-01", "dev", nil)
	e.setPolicy(t, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 5432}}})

	classes := map[string]string{}
	ts, err := e.c.Targets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range ts {
		classes[tg.Name] = tg.Class
		if tg.Name == "web-01" && !strings.Contains(tg.Recommendation, "22") {
			t.Errorf("web-01 recommendation %q does not flag port 22", tg.Recommendation)
		}
		if tg.Name == "old-01" && tg.ClassReason != "running without CAP_NET_ADMIN" {
			t.Errorf("old-01 reason %q", tg.ClassReason)
		}
	}
	want := map[string]string{"web-01": "not-configured", "web-02": "not-configured", "old-01": "unsupported", "db-01": "configured"}
	for n, c := range want {
		if classes[n] != c {
			t.Errorf("%s is %q, want %q", n, classes[n], c)
		}
	}
	nc, err := e.c.TargetsIn(ctx, "not-configured")
	if err != nil || len(nc) != 2 {
		t.Fatalf("not-configured: %d, %v", len(nc), err)
	}
	if _, err := e.c.EnablePolicy(ctx, "group=nope", false); client.StatusOf(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "matches no target") {
		t.Errorf("a selector matching nothing: %v", err)
	}
	res, err := e.c.EnablePolicy(ctx, "group=prod", false)
	if err != nil || len(res.Enabled) != 2 || !res.Enabled[0].Changed {
		t.Fatalf("enable: %v %+v", err, res)
	}
	if len(res.Enabled[0].Policy.Rules) != 4 {
		t.Errorf("default policy has %d rules, want 22, 3389, 5985, 5986", len(res.Enabled[0].Policy.Rules))
	}
	if again, _ := e.c.EnablePolicy(ctx, "group=prod", false); len(again.Enabled) != 0 || len(again.Skipped) != 2 {
		t.Errorf("enabling twice: %+v, want both skipped", again)
	}
	if cf, _ := e.c.TargetsIn(ctx, "configured"); len(cf) != 3 {
		t.Errorf("configured after enable: %d, want 3", len(cf))
	}
}

func TestBlockedAttempts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ag := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	now := time.Now()
	var srcs []wire.BlockedSource
	srcs = append(srcs, wire.BlockedSource{Source: "203.0.113.66", Protocol: "tcp", Port: 22, Count: 25, LastSeen: now})
	srcs = append(srcs, wire.BlockedSource{Source: "203.0.113.7", Protocol: "tcp", Port: 22, Count: 2, LastSeen: now})
	if err := ag.Report(ctx, wire.AgentReport{Revision: 0, Blocked: []wire.BlockedCounter{{Protocol: "tcp", Port: 22, Packets: 40, Connections: 27}}, BlockedSources: srcs}); err != nil {
		t.Fatal(err)
	}
	tg, err := e.c.Target(ctx, "web-01")
	if err != nil || tg.Blocked == nil || len(tg.Blocked.Counters) != 1 || tg.Blocked.Counters[0].Connections != 27 {
		t.Fatalf("blocked counters: %v %+v", err, tg.Blocked)
	}
	if len(tg.Blocked.TopSources) != 2 || tg.Blocked.TopSources[0].Source != "203.0.113.66" {
		t.Fatalf("top blocked sources %+v", tg.Blocked.TopSources)
	}
	es, _ := e.c.Audit(ctx, client.AuditFilter{Action: "attack.suspected"})
	if len(es) != 1 || !strings.Contains(es[0].Reason, "203.0.113.66") {
		t.Fatalf("brute-force events %+v, want one naming 203.0.113.66", es)
	}
	// Reported again within the hour: no second alert.
	if err := ag.Report(ctx, wire.AgentReport{Revision: 0, BlockedSources: srcs[:1]}); err != nil {
		t.Fatal(err)
	}
	if es, _ := e.c.Audit(ctx, client.AuditFilter{Action: "attack.suspected"}); len(es) != 1 {
		t.Errorf("%d brute-force events after a second report, want 1", len(es))
	}
}

// createEnrolled creates a target and enrolls its agent; it returns the
// agent's client.
func (e *env) createEnrolled(t *testing.T, in wire.TargetCreate) *client.Client {
	t.Helper()
	ctx := context.Background()
	tc, err := e.c.CreateTarget(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.srv.URL, "")
	er, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: in.Name, Version: "test"})
	if err != nil {
		t.Fatalf("Enroll %s: %v", in.Name, err)
	}
	e.creds[in.Name] = er.Credential
	return anon.WithToken(er.Credential)
}

// TestGatewayMappedPortRange: an explicit mapped port outside the range
// gateways publish on (20000-29999) is refused with 422 and changes nothing;
// the bounds themselves are accepted. Without the check a policy-admin could
// map a target onto the gateway's own sshd or jitgate's API port.
func TestGatewayMappedPortRange(t *testing.T) {
	e, _ := gatewayEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		port uint16
		ok   bool
	}{{22, false}, {8443, false}, {19999, false}, {30000, false}, {65535, false}, {20000, true}, {29999, true}} {
		_, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true, MappedPort: tc.port}}})
		tg, _ := e.c.Target(ctx, "web-01")
		if tc.ok {
			if err != nil || len(tg.Mappings) != 1 || tg.Mappings[0].MappedPort != tc.port {
				t.Errorf("mapped port %d: %v, mappings %+v; want it used", tc.port, err, tg.Mappings)
			}
			if err := e.c.RemovePolicy(ctx, "web-01"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if client.StatusOf(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "mapped_port") || !strings.Contains(err.Error(), "outside the range 20000-29999") {
			t.Errorf("mapped port %d: %v; want 422 naming mapped_port and the range 20000-29999", tc.port, err)
		}
		if tg.Policy != nil || len(tg.Mappings) != 0 {
			t.Errorf("mapped port %d was refused but web-01 has policy %+v and mappings %+v", tc.port, tg.Policy, tg.Mappings)
		}
	}
}

// TestGatewayUnpublish: a port that stops being published (publish turned
// off, its rule dropped, or the policy removed) loses its DNAT mapping on the
// gateway and its contact information; its mapped port becomes free again.
func TestGatewayUnpublish(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	published := func(ds wire.DesiredState) []string {
		var out []string
		for _, m := range ds.Published {
			out = append(out, fmt.Sprintf("%d/%s->%d", m.Port, m.Protocol, m.MappedPort))
		}
		return out
	}
	mappings := func() []string {
		tg, err := e.c.Target(ctx, "web-01")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, m := range tg.Mappings {
			out = append(out, fmt.Sprintf("%d/%s->%d", m.Port, m.Protocol, m.MappedPort))
		}
		return out
	}
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}, {Port: 3389, Publish: true, MappedPort: 23389}}})
	ds, err := gw.Desired(ctx, 0, 0)
	if err != nil || len(ds.Published) != 2 || len(mappings()) != 2 {
		t.Fatalf("published both: %v, desired %v, mappings %v", err, published(ds), mappings())
	}
	for _, step := range []struct {
		name   string
		change func() error
		want   []string // mappings left, as in the desired state
	}{
		{"publish turned off on 3389", func() error {
			_, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}, {Port: 3389}}})
			return err
		}, []string{"22/tcp->20000"}},
		{"3389 republished on its old mapped port by another rule set", func() error {
			_, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}, {Port: 3389, Publish: true, MappedPort: 23389}}})
			return err
		}, []string{"22/tcp->20000", "3389/tcp->23389"}},
		{"rule 3389 dropped", func() error {
			_, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}}})
			return err
		}, []string{"22/tcp->20000"}},
		{"policy removed", func() error { return e.c.RemovePolicy(ctx, "web-01") }, nil},
	} {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		ds, err = gw.Desired(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := published(ds); fmt.Sprint(got) != fmt.Sprint(step.want) {
			t.Errorf("%s: the gateway publishes %v, want %v", step.name, got, step.want)
		}
		if got := mappings(); fmt.Sprint(got) != fmt.Sprint(step.want) {
			t.Errorf("%s: web-01 shows mappings %v, want %v", step.name, got, step.want)
		}
	}
	// Contact information follows: 3389 protected but not published is
	// reached at the target's address, not at a mapped port.
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true}, {Port: 3389}}})
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"3389"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Connect) != 1 || strings.Contains(r.Connect[0], "203.0.113.10") || !strings.Contains(r.Connect[0], "10.0.0.5") {
		t.Errorf("contact information for an unpublished port: %q; want the target's address, not the gateway's", r.Connect)
	}
}

// TestGatewayClientSide: a target whose address is on the gateway's client
// side (the link of its public address) is refused with 422 and a message
// that says why, and so is one of the gateway's own addresses; nothing is
// created. When the gateway later reports that a target's network became its
// client side, the target shows as unsupported, with the reason.
func TestGatewayClientSide(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		in  wire.TargetCreate
		msg string
	}{
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "203.0.113.50"},
			"203.0.113.50 is on the client side of gateway gw-1 (interface eth0, 203.0.113.0/24, where clients reach the public address 203.0.113.10)"},
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "2001:db8:1::50"}, "2001:db8:1::50 is on the client side of gateway gw-1"},
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Addresses: []string{"10.0.0.5", "2001:db8:1::5"}}, "addresses[1]: 2001:db8:1::5 is on the client side"},
		{wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "10.0.0.254"}, "10.0.0.254 is an address of gateway gw-1 itself"},
	} {
		_, err := e.c.CreateTarget(ctx, tc.in)
		if client.StatusOf(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("CreateTarget(%+v) = %v; want 422 saying %q", tc.in, err, tc.msg)
		}
		if _, err := e.c.Target(ctx, "web-01"); client.StatusOf(err) != http.StatusNotFound {
			t.Errorf("a refused target exists: %v", err)
		}
	}
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	if tg, _ := e.c.Target(ctx, "web-01"); tg.Class == "unsupported" {
		t.Fatalf("web-01 behind the gateway is unsupported: %s", tg.ClassReason)
	}
	// The gateway's default route now leaves through eth1: clients arrive
	// on web-01's own network.
	if err := gw.Report(ctx, wire.AgentReport{Revision: 0, Mode: "gateway", Inventory: gatewayInventory(true)}); err != nil {
		t.Fatal(err)
	}
	tg, err := e.c.Target(ctx, "web-01")
	if err != nil || tg.Class != "unsupported" || !strings.Contains(tg.ClassReason, "10.0.0.5 is on the client side of gateway gw-1 (interface eth1, 10.0.0.0/24, where a default route leaves)") {
		t.Errorf("web-01 after the gateway's default route moved to its network: %v, class %q (%s); want unsupported with the reason", err, tg.Class, tg.ClassReason)
	}
}

// TestGatewayDualStack: a target behind a gateway with an IPv4 and an IPv6
// address has both gated: the gateway protects each, a grant opens the
// addresses of its source's family only, and a published port maps to the
// address of the public address's family.
func TestGatewayDualStack(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	tc, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Gateway: "gw-1", Addresses: []string{"10.0.0.5", "2001:db8:10::5"}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(tc.Target.Addresses) != "[10.0.0.5 2001:db8:10::5]" || tc.Target.Address != "10.0.0.5" {
		t.Fatalf("web-01 addresses %v (address %q), want both", tc.Target.Addresses, tc.Target.Address)
	}
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-02", Gateway: "gw-1", Address: "2001:db8:10::5"}); client.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "web-01") {
		t.Errorf("another target at web-01's IPv6 address: %v, want 409 naming web-01", err)
	}
	// Sources of both families may be allowed.
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true, AllowedSources: []string{"198.51.100.0/24", "2001:db8:99::/48"}}}})
	ds, err := gw.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var protected []string
	for _, p := range ds.Protected {
		protected = append(protected, fmt.Sprintf("%s %d/%s", p.Destination, p.Port, p.Protocol))
	}
	if fmt.Sprint(protected) != "[10.0.0.5 22/tcp 2001:db8:10::5 22/tcp]" {
		t.Errorf("the gateway protects %v; want both addresses of web-01", protected)
	}
	if len(ds.Published) != 1 || ds.Published[0].Destination != "10.0.0.5" || ds.Published[0].PublicAddress != "203.0.113.10" {
		t.Errorf("published %+v; want one mapping from the IPv4 public address to the IPv4 address", ds.Published)
	}
	grants := func(after int64) []string {
		t.Helper()
		ds, err := gw.Desired(ctx, after, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, g := range ds.Grants {
			out = append(out, g.Source+" -> "+g.Destination)
		}
		return out
	}
	r4, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got := grants(0); fmt.Sprint(got) != "[198.51.100.7/32 -> 10.0.0.5]" {
		t.Errorf("an IPv4 grant opens %v; want the IPv4 address only (the IPv6 one stays closed)", got)
	}
	r6, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "2001:db8:99::7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatalf("an IPv6 source to the dual-stack target: %v", err)
	}
	if got := grants(0); fmt.Sprint(got) != "[198.51.100.7/32 -> 10.0.0.5 2001:db8:99::7/128 -> 2001:db8:10::5]" {
		t.Errorf("grants %v; want each source to its own family's address", got)
	}
	if !strings.Contains(fmt.Sprint(r4.Connect), "ssh -p 20000 203.0.113.10") || !strings.Contains(fmt.Sprint(r6.Connect), "ssh 2001:db8:10::5") {
		t.Errorf("contact information: IPv4 %q, IPv6 %q; want the mapped port for IPv4 and the IPv6 address for IPv6", r4.Connect, r6.Connect)
	}
	// An IPv6-only target refuses IPv4 sources, as before.
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-03", Gateway: "gw-1", Address: "2001:db8:10::6"}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "web-03", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-03", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"}); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("an IPv4 source to an IPv6-only target: %v, want 422", err)
	}
}

// TestGatewayBastionDesired checks what a gateway's agent is told for a
// bastion port of a target behind it: the port's access, and each live
// bastion grant once per address of the target (what the agent may dial),
// with nothing opened in the kernel for it; a direct grant names no
// bastion entry.
func TestGatewayBastionDesired(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "win-01", Gateway: "gw-1", Addresses: []string{"10.0.0.5", "2001:db8:10::5"}}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "win-01", wire.Policy{Rules: []wire.PortRule{{Port: 3389, Access: "bastion"}, {Port: 22}}})
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "win-01", Ports: []string{"3389"}, Bastion: true, Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "win-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	ds, err := gw.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var protected, bastion, grants []string
	for _, p := range ds.Protected {
		protected = append(protected, fmt.Sprintf("%s %d %s", p.Destination, p.Port, p.Access))
	}
	for _, g := range ds.Bastion {
		if g.RequestID != r.ID || g.Principal == "" {
			t.Errorf("bastion grant %+v, want request %s with its principal", g, r.ID)
		}
		bastion = append(bastion, fmt.Sprintf("%s %d", g.Destination, g.Port))
	}
	for _, g := range ds.Grants {
		grants = append(grants, fmt.Sprintf("%s -> %s %d", g.Source, g.Destination, g.Port))
	}
	if want := "[10.0.0.5 3389 bastion 2001:db8:10::5 3389 bastion 10.0.0.5 22  2001:db8:10::5 22 ]"; fmt.Sprint(protected) != want {
		t.Errorf("protected %v, want %s", protected, want)
	}
	if want := "[10.0.0.5 3389 2001:db8:10::5 3389]"; fmt.Sprint(bastion) != want {
		t.Errorf("bastion grants %v, want %s", bastion, want)
	}
	if want := "[198.51.100.7/32 -> 10.0.0.5 22]"; fmt.Sprint(grants) != want {
		t.Errorf("kernel grants %v, want only the direct one: %s", grants, want)
	}
}
