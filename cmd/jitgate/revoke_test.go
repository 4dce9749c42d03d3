package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// gatedWeb01 is a test server with target web-01, its agent enrolled (the
// returned client; it applies only when the test says so) and 22/tcp gated
// for 198.51.100.0/24.
func gatedWeb01(t *testing.T) (*cli, *client.Client) {
	t.Helper()
	srv := newTestServer(t)
	c := newCLI(t, srv)
	created := decode[wire.TargetCreated](t, c.ok("target", "add", "web-01", "-o", "json").stdout)
	agent := enrollAgent(t, srv, created.EnrollToken, wire.EnrollRequest{Hostname: "web-01"})
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.100.0/24")
	return c, agent
}

// requestApplied asks for web-01's 22 from src for an hour with the CLI and
// has agent apply the desired state that holds it.
func requestApplied(t *testing.T, c *cli, agent *client.Client, src string) wire.Request {
	t.Helper()
	req := decode[wire.Request](t, c.ok("request", "web-01", "--port", "22", "--duration", "1h", "--source", src, "--reason", "x", "-o", "json").stdout)
	applyDesired(t, agent)
	return req
}

// TestRevokeUnconfirmed: 'jitgate revoke' never says "closes now" before the
// agent confirmed; it says since when the removal waits, and the kernel
// deadline that closes the grant anyway. With the agent answering, it says
// the agent confirmed.
func TestRevokeUnconfirmed(t *testing.T) {
	c, agent := gatedWeb01(t)
	ctx := context.Background()
	applyAll := func() { t.Helper(); applyDesired(t, agent) }
	request := func(src string) wire.Request { t.Helper(); return requestApplied(t, c, agent, src) }

	t.Log("the agent does not apply the revocation: unconfirmed, with the kernel deadline")
	req := request("198.51.100.7")
	r := c.ok("revoke", req.ID, "--yes", "--wait", "0")
	full := decode[wire.Request](t, c.ok("requests", req.ID, "-o", "json").stdout)
	for _, w := range []string{"request " + req.ID + " revoked", "removal not yet confirmed by the agent of web-01", "connected, last seen",
		"since " + fmtTime(full.Removal.Since), "the kernel closes 22/tcp by " + fmtTime(full.ExpiresAt), "at the latest"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("revoke output lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "closes now") || strings.Contains(r.stdout, "closed") {
		t.Errorf("revoke claims the port is closed before the agent confirmed it:\n%s", r.stdout)
	}
	if r := c.ok("requests", req.ID); !strings.Contains(r.stdout, "Removal:") || !strings.Contains(r.stdout, "removal not yet confirmed") {
		t.Errorf("requests ID does not show the unconfirmed removal:\n%s", r.stdout)
	}
	if r := c.ok("requests", "--target", "web-01"); !strings.Contains(r.stdout, "revoked (removal unconfirmed)") {
		t.Errorf("requests list does not show the unconfirmed removal:\n%s", r.stdout)
	}

	t.Log("the agent applies it while the CLI waits: confirmed")
	applyAll()
	req = request("198.51.100.8")
	held, err := agent.Desired(ctx, 0, 0)
	if err != nil || len(held.Grants) != 1 {
		t.Fatalf("desired state before the revoke: %v, %+v", err, held)
	}
	done := make(chan error, 1)
	go func() {
		// The agent's long-poll answers with the revision without the grant.
		ds, err := agent.Desired(ctx, held.Revision, 10*time.Second)
		for err == nil && len(ds.Grants) > 0 {
			ds, err = agent.Desired(ctx, ds.Revision, 10*time.Second)
		}
		if err == nil {
			err = agent.Report(ctx, wire.AgentReport{Revision: ds.Revision})
		}
		done <- err
	}()
	r = c.ok("revoke", req.ID, "--yes")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.stdout, "22/tcp closed: the agent of web-01 confirmed it at") {
		t.Errorf("revoke with the agent answering:\n%s", r.stdout)
	}

	t.Log("policy removal: unconfirmed until the agent applies it")
	r = c.ok("policy", "remove", "web-01", "--yes", "--wait", "0")
	if !strings.Contains(r.stdout, "not yet confirmed by the agent of web-01") || strings.Contains(r.stdout, "no longer gated") {
		t.Errorf("policy remove before the agent applied it:\n%s", r.stdout)
	}
	if r := c.ok("target", "show", "web-01"); !strings.Contains(r.stdout, "Policy removal:") {
		t.Errorf("target show lacks the unconfirmed policy removal:\n%s", r.stdout)
	}
	applyAll()
	if r := c.ok("target", "show", "web-01"); !strings.Contains(r.stdout, "no longer gated: the agent of web-01 confirmed it") {
		t.Errorf("target show after the agent applied the policy removal:\n%s", r.stdout)
	}
}

// TestRevokeExtendedRequest: revoking a request that was extended (asked for
// again: its grant moved to the newer request) said "request A revoked;
// 22/tcp closed" at once, although the grant lived on in the newer request
// and the port stayed open. It says which request carried the grant, and
// that its removal is not confirmed yet.
func TestRevokeExtendedRequest(t *testing.T) {
	c, agent := gatedWeb01(t)
	first := requestApplied(t, c, agent, "198.51.100.7")
	second := requestApplied(t, c, agent, "198.51.100.7") // extends first's grant: first is superseded
	r := c.ok("revoke", first.ID, "--yes", "--wait", "0")
	if strings.Contains(r.stdout, "closed") {
		t.Errorf("revoke of an extended request claims the port closed before the agent confirmed it:\n%s", r.stdout)
	}
	for _, w := range []string{"request " + first.ID + " was extended by request " + second.ID, second.ID + " revoked", "removal not yet confirmed"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("revoke output lacks %q:\n%s", w, r.stdout)
		}
	}
}
