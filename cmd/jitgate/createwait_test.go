package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestRequestWaitOneExchange: 'jitgate request --wait' for a port its agent
// opens at once makes one exchange with the server (the create, which waits
// for the agent: POST ?wait=), not two (the create, then a long-poll on the
// request), and prints the request active.
func TestRequestWaitOneExchange(t *testing.T) {
	srv := newTestServer(t)
	c := newCLI(t, srv)
	created := decode[wire.TargetCreated](t, c.ok("target", "add", "web-01", "-o", "json").stdout)
	agent := enrollAgent(t, srv, created.EnrollToken, wire.EnrollRequest{Hostname: "web-01"})
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.100.0/24")
	ctx := context.Background()
	cur, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The agent: applies the new grant as soon as it is there.
	applied := make(chan error, 1)
	go func() {
		ds, err := agent.Desired(ctx, cur.Revision, 20*time.Second)
		if err == nil {
			err = agent.Report(ctx, wire.AgentReport{Revision: ds.Revision})
		}
		applied <- err
	}()
	before := srv.requestCalls.Load()
	r := c.ok("request", "web-01", "--port", "22", "--duration", "1h", "--source", "198.51.100.7", "--reason", "x", "--wait")
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	if n := srv.requestCalls.Load() - before; n != 1 {
		t.Errorf("request --wait made %d exchanges on /api/v1/requests, want 1", n)
	}
	if !strings.Contains(r.stdout, "active") {
		t.Errorf("request --wait did not print the request active:\n%s", r.stdout)
	}
}
