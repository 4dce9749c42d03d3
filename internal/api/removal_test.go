package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// activate creates a request for target's 22/tcp and has agent report the
// revision that holds it; it returns the active request.
func activate(t *testing.T, e *env, agent *client.Client, target, source string) wire.Request {
	t.Helper()
	ctx := context.Background()
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"22"}, Source: source, Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	applyDesired(t, agent)
	if r, err = e.c.Request(ctx, r.ID); err != nil || r.State != "active" {
		t.Fatalf("request %s: %v, state %s; want active", r.ID, err, r.State)
	}
	return r
}

// wantRemoval checks a request's removal as the API shows it.
func wantRemoval(t *testing.T, what string, r wire.Request, state, agent string) {
	t.Helper()
	rm := r.Removal
	if rm == nil {
		t.Fatalf("%s: request %s (%s) shows no removal, want %s", what, r.ID, r.State, state)
	}
	if rm.State != state || rm.Agent != agent || rm.ClosesBy == nil || !rm.ClosesBy.Equal(r.ExpiresAt) || rm.Revision == 0 {
		t.Errorf("%s: removal %+v, want %s by the agent of %q, closing by %v", what, *rm, state, agent, r.ExpiresAt)
	}
	if (state == "confirmed") != (rm.ConfirmedAt != nil && r.RemovalConfirmedAt != nil) {
		t.Errorf("%s: confirmed_at %v / removal_confirmed_at %v with state %s", what, rm.ConfirmedAt, r.RemovalConfirmedAt, state)
	}
}

func metricLine(t *testing.T, e *env, name string) string {
	t.Helper()
	status, b := e.raw(t, "GET", "/metrics", e.admin, "", nil)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// TestRevocationConfirmed: a revocation is unconfirmed until the agent
// reports a revision without the grant, in the answer to the revoke, in
// GET and list, and in the metric; so is a policy removal.
func TestRevocationConfirmed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	r := activate(t, e, agent, "web-01", "198.51.100.7")
	if r.Removal != nil {
		t.Errorf("active request shows a removal: %+v", *r.Removal)
	}
	if l := metricLine(t, e, "jitgate_unconfirmed_revocations"); l != "jitgate_unconfirmed_revocations 0" {
		t.Errorf("metric before the revoke: %q", l)
	}

	// The agent is away: the revoke answers at once, unconfirmed.
	rv, err := e.c.Revoke(ctx, r.ID, "done")
	if err != nil {
		t.Fatal(err)
	}
	wantRemoval(t, "revoke answer", rv, "unconfirmed", "web-01")
	if rv.Removal.AgentState == "" || rv.Removal.AgentLastSeen == nil {
		t.Errorf("revoke answer does not say when the agent was last seen: %+v", *rv.Removal)
	}
	got, _ := e.c.Request(ctx, r.ID)
	wantRemoval(t, "GET", got, "unconfirmed", "web-01")
	list, err := e.c.Requests(ctx, client.RequestFilter{Target: "web-01"})
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v, %d requests", err, len(list))
	}
	wantRemoval(t, "list", list[0], "unconfirmed", "web-01")
	if l := metricLine(t, e, "jitgate_unconfirmed_revocations"); l != "jitgate_unconfirmed_revocations 1" {
		t.Errorf("metric after the revoke: %q, want 1", l)
	}

	// The agent reports the revision without it: confirmed, and a client
	// following the request's version wakes up.
	woke := make(chan wire.Request, 1)
	go func() {
		next, _ := e.c.WaitRequestVersion(ctx, r.ID, got.Version, "10s")
		woke <- next
	}()
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil || len(ds.Grants) != 0 || ds.Revision != rv.Removal.Revision {
		t.Fatalf("desired after the revoke: %v, %+v; want no grants at revision %d", err, ds, rv.Removal.Revision)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	select {
	case next := <-woke:
		wantRemoval(t, "follower", next, "confirmed", "web-01")
	case <-time.After(10 * time.Second):
		t.Fatal("a client following the request was not woken by the confirmation")
	}
	if l := metricLine(t, e, "jitgate_unconfirmed_revocations"); l != "jitgate_unconfirmed_revocations 0" {
		t.Errorf("metric after the confirmation: %q, want 0", l)
	}

	// Policy removal: unconfirmed (its ports may still be closed) until the
	// agent applies it.
	if err := e.c.RemovePolicy(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	tg, _ := e.c.Target(ctx, "web-01")
	if tg.PolicyRemoval == nil || tg.PolicyRemoval.State != "unconfirmed" || tg.PolicyRemoval.Agent != "web-01" || tg.PolicyRemoval.Revision != tg.Agent.Revision {
		t.Fatalf("target after the policy removal: %+v, want an unconfirmed removal at revision %d", tg.PolicyRemoval, tg.Agent.Revision)
	}
	if l := metricLine(t, e, "jitgate_unconfirmed_policy_removals"); l != "jitgate_unconfirmed_policy_removals 1" {
		t.Errorf("policy metric: %q, want 1", l)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: tg.Agent.Revision}); err != nil {
		t.Fatal(err)
	}
	if tg, _ = e.c.Target(ctx, "web-01"); tg.PolicyRemoval == nil || tg.PolicyRemoval.State != "confirmed" || tg.PolicyRemoval.ConfirmedAt == nil {
		t.Errorf("policy removal after the report: %+v, want confirmed", tg.PolicyRemoval)
	}
	if l := metricLine(t, e, "jitgate_unconfirmed_policy_removals"); l != "jitgate_unconfirmed_policy_removals 0" {
		t.Errorf("policy metric after the report: %q, want 0", l)
	}
}

// TestTargetRemovalRevocations: removing a target revokes its requests;
// with its own agent no one will confirm them (the agent stands down on
// 410), so they stay unconfirmed until the kernel deadline; behind a
// gateway, the gateway's agent confirms them and stops gating the target.
func TestTargetRemovalRevocations(t *testing.T) {
	e, gw := gatewayEnv(t)
	ctx := context.Background()
	host := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	hr := activate(t, e, host, "web-01", "198.51.100.7")

	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01", Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	gr := activate(t, e, gw, "db-01", "198.51.100.8")
	before, err := gw.Desired(ctx, 0, 0)
	if err != nil || len(before.Grants) != 1 || len(before.Protected) != 1 {
		t.Fatalf("gateway state before: %v %+v", err, before)
	}

	for _, name := range []string{"web-01", "db-01"} {
		if err := e.c.RemoveTarget(ctx, name); err != nil {
			t.Fatalf("RemoveTarget(%s): %v", name, err)
		}
	}
	got, _ := e.c.Request(ctx, hr.ID)
	if got.State != "revoked" {
		t.Fatalf("request of the removed host: %s", got.State)
	}
	wantRemoval(t, "removed host target", got, "unconfirmed", "")

	// The gateway gets a revision without the removed target at once...
	after, err := gw.Desired(ctx, before.Revision, time.Second)
	if err != nil || after.Revision <= before.Revision || len(after.Grants) != 0 || len(after.Protected) != 0 {
		t.Fatalf("gateway state after removing db-01: %v, revision %d (before %d), %d grants, %d protected; want a new revision without them",
			err, after.Revision, before.Revision, len(after.Grants), len(after.Protected))
	}
	got, _ = e.c.Request(ctx, gr.ID)
	wantRemoval(t, "removed gateway target, before the report", got, "unconfirmed", "gw-1")
	// ...and its agent confirms the revocation.
	if err := gw.Report(ctx, wire.AgentReport{Revision: after.Revision}); err != nil {
		t.Fatal(err)
	}
	got, _ = e.c.Request(ctx, gr.ID)
	wantRemoval(t, "removed gateway target, after the report", got, "confirmed", "gw-1")
	if l := metricLine(t, e, "jitgate_unconfirmed_revocations"); l != "jitgate_unconfirmed_revocations 1" {
		t.Errorf("metric: %q, want 1 (the removed host's grant, until its deadline)", l)
	}
}
