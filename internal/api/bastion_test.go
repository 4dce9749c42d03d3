package api_test

import (
	"context"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestBastionGrantOpensNothingInKernel checks stage 1 of the bastion: a
// request without a source on a bastion-only port is created with no source,
// the agent's desired state carries it as a bastion grant (request id,
// principal, port, deadline) and holds no kernel element for it; on a port
// reached both ways a sourced request yields both.
func TestBastionGrantOpensNothingInKernel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"},
		{Port: 443, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "both"},
		{Port: 3389, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)},
	}})
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(30 * time.Minute), Reason: "x"})
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	if req.Source != "" || req.State != "pending" {
		t.Fatalf("request = %+v, want pending with no source", req)
	}
	both, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"443"}, Source: "192.0.2.7", Duration: wire.Duration(30 * time.Minute)})
	if err != nil {
		t.Fatalf("CreateRequest 443: %v", err)
	}
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Grants) != 1 || ds.Grants[0].Port != 443 || ds.Grants[0].Source != "192.0.2.7/32" {
		t.Errorf("kernel grants = %+v, want only 192.0.2.7/32 -> 443", ds.Grants)
	}
	want := map[uint16]string{22: req.ID, 443: both.ID}
	if len(ds.Bastion) != 2 {
		t.Fatalf("bastion grants = %+v, want 22 and 443", ds.Bastion)
	}
	for _, g := range ds.Bastion {
		if want[g.Port] != g.RequestID || g.Principal != "alice" || g.ExpiresAt.IsZero() {
			t.Errorf("bastion grant %+v: want request %s of alice with a deadline", g, want[g.Port])
		}
	}
	// A bastion request on a port reached only directly is refused, and
	// an explicit bastion request with a source is malformed.
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"3389"}, Bastion: true, Duration: wire.Duration(time.Minute)}); err == nil {
		t.Error("bastion request on a direct-only port: accepted")
	}
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"443"}, Bastion: true, Source: "192.0.2.7", Duration: wire.Duration(time.Minute)}); err == nil {
		t.Error("bastion request with a source: accepted")
	}
	// Activation works as for any grant: the agent reports the revision.
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Request(ctx, req.ID); got.State != "active" {
		t.Errorf("bastion request state %q after report, want active", got.State)
	}
}
