package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/inventory"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// newGateway creates gateway gw (clients reach its mappings at public)
// whose agent has reported gateway mode and the routes it forwards to.
func newGateway(t *testing.T, s *store.Store, gw, public string, routes ...string) {
	t.Helper()
	if _, _, err := s.CreateTargetSpec(t.Context(), alice, store.TargetSpec{Name: gw, PublicAddress: public}, t0, enrollTTL); err != nil {
		t.Fatalf("CreateTargetSpec(%s): %v", gw, err)
	}
	r := store.AgentReport{Mode: store.ModeGateway, Inventory: &inventory.Host{Hostname: gw, Routes: routes}}
	if err := s.RecordAgentReport(t.Context(), gw, r, t0); err != nil {
		t.Fatalf("RecordAgentReport(%s): %v", gw, err)
	}
}

// testGateway: placement behind a gateway (refused where the gateway cannot
// enforce), published ports mapped on the gateway, and the gateway's
// desired state and confirmations carrying the grants of the targets
// behind it.
func testGateway(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newGateway(t, s, "gw", "192.0.2.1", "10.20.0.0/24")
	newTarget(t, s, "host-1", t0)

	placements := []struct {
		name string
		spec store.TargetSpec
	}{
		{"an address the gateway does not route", store.TargetSpec{Name: "x1", Gateway: "gw", Addresses: []string{"10.99.0.5"}}},
		{"a gateway that is not in gateway mode", store.TargetSpec{Name: "x2", Gateway: "host-1", Addresses: []string{"10.20.0.5"}}},
		{"no such gateway", store.TargetSpec{Name: "x3", Gateway: "nope", Addresses: []string{"10.20.0.5"}}},
		{"not an address", store.TargetSpec{Name: "x4", Gateway: "gw", Addresses: []string{"app.example"}}},
	}
	for _, p := range placements {
		_, _, err := s.CreateTargetSpec(ctx, alice, p.spec, t0, enrollTTL)
		var fe *policy.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("placing behind %s: error = %v, want a *policy.FieldError", p.name, err)
		}
		if _, err := s.GetTarget(ctx, p.spec.Name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a refused placement (%s) left target %s: %v", p.name, p.spec.Name, err)
		}
	}

	app, tok, err := s.CreateTargetSpec(ctx, alice, store.TargetSpec{Name: "app", Gateway: "gw", Addresses: []string{"10.20.0.5"}}, t0, enrollTTL)
	if err != nil {
		t.Fatalf("CreateTargetSpec(app behind gw): %v", err)
	}
	if tok != "" || app.Gateway != "gw" {
		t.Errorf("target behind a gateway: token %q, gateway %q; want no token (it has no agent), gateway gw", tok, app.Gateway)
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), MaxDuration: time.Hour, Publish: true},
		{Port: tcp(5432), MaxDuration: time.Hour},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, alice, "app", pol, at(time.Minute)); err != nil {
		t.Fatalf("SetPolicy(app): %v", err)
	}
	ms, err := s.Mappings(ctx, "gw", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].Target != "app" || ms[0].Port != tcp(22) || ms[0].Destination != "10.20.0.5" || !ms[0].Published() ||
		ms[0].MappedPort < store.MappedPortMin || ms[0].MappedPort > store.MappedPortMax {
		t.Fatalf("mappings of gw = %+v, want 22/tcp of app published at 192.0.2.1:[%d-%d] to 10.20.0.5", ms, store.MappedPortMin, store.MappedPortMax)
	}

	// A request on the target behind moves the gateway's revision, and the
	// gateway's confirmation activates it.
	before := mustTarget(t, s, "gw").Revision
	r := mustRequest(t, s, alice, "app", ask("198.51.100.7/32", 30*time.Minute, tcp(22)), at(2*time.Minute))
	g, err := s.Desired(ctx, "gw", at(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !g.Gateway || g.Revision <= before {
		t.Errorf("desired state of gw: gateway %v, revision %d after a request behind it; want a gateway above %d", g.Gateway, g.Revision, before)
	}
	if len(g.Targets) != 1 || g.Targets[0].Name != "app" || len(g.Targets[0].Policy.Rules) != 2 ||
		!cmp.Equal(g.Targets[0].Addresses, []string{"10.20.0.5"}) {
		t.Errorf("targets enforced by gw = %+v, want app at 10.20.0.5 with its two rules", g.Targets)
	}
	wantGrants := []store.GrantRow{{Target: "app", Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(32 * time.Minute)}}
	if diff := cmp.Diff(wantGrants, g.Grants, cmpOpts, cmpopts.IgnoreFields(store.GrantRow{}, "ID")); diff != "" {
		t.Errorf("grants enforced by gw (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ms, g.Published); diff != "" {
		t.Errorf("published by gw (-want +got):\n%s", diff)
	}
	host, err := s.Desired(ctx, "host-1", at(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if host.Gateway || len(host.Targets) != 1 || host.Targets[0].Name != "host-1" || host.Targets[0].Addresses != nil || len(host.Published) != 0 {
		t.Errorf("desired state of a host = %+v, want itself as the one target, no addresses, nothing published", host)
	}
	if got := mustReport(t, s, "gw", g.Revision, at(3*time.Minute)); len(got) != 1 || got[0].ID != r.ID {
		t.Errorf("the gateway's confirmation activated %+v, want %s", got, r.ID)
	}
	wantState(t, s, r.ID, access.Active)

	// Unpublishing removes the mapping.
	pol.Rules[0].Publish, pol.Rules[0].MappedPort = false, 0
	if _, err := s.SetPolicy(ctx, alice, "app", pol, at(4*time.Minute)); err != nil {
		t.Fatalf("SetPolicy(app, unpublished): %v", err)
	}
	if ms, err := s.Mappings(ctx, "gw", true); err != nil || len(ms) != 0 {
		t.Errorf("mappings after unpublishing = %+v, %v; want none", ms, err)
	}
}
