package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRevokeSurvivesRestartsInAnyOrder: a revocation made while the agent is
// dead stays unconfirmed across a crash of the server, in either restart
// order; nothing reopens, the metric counts it right after the server
// starts again, and the agent's return closes the port and confirms it
// (real packets).
func TestRevokeSurvivesRestartsInAnyOrder(t *testing.T) {
	l := newGatedLab(t)

	metric := func() string {
		t.Helper()
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.ClientNS.DialContext(ctx, &net.Dialer{}, network, addr)
		}}}
		req, _ := http.NewRequest(http.MethodGet, testlab.ServerURL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+l.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "jitgate_unconfirmed_revocations ") {
				return line
			}
		}
		t.Fatalf("no jitgate_unconfirmed_revocations in /metrics:\n%s", b)
		return ""
	}

	for _, agentFirst := range []bool{true, false} {
		t.Logf("agent restarted first: %v", agentFirst)
		req := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "30m", "--reason", "e2e restart order", "--wait")
		if !l.canConnect(client1, serverIP, 22) {
			t.Fatal("grant not open")
		}
		l.agent.kill()
		if out := l.cli("revoke", req.ID, "--yes", "--wait", "1s"); strings.Contains(out, "closed") {
			t.Fatalf("revoke with the agent dead claims closed:\n%s", out)
		}
		l.server.kill()
		if !l.canConnect(client1, serverIP, 22) {
			t.Fatal("the kernel should still hold the revoked grant with nothing running")
		}
		if agentFirst {
			// With no server to ask, the agent keeps the kernel as it is
			// (TestServerDownLeavesFirewallUntouched) until the server is back.
			l.startAgent("")
			l.startServer()
		} else {
			l.startServer()
			got := cliJSON[wire.Request](l, "requests", req.ID)
			if got.State != "revoked" || got.Removal == nil || got.Removal.State != "unconfirmed" {
				t.Fatalf("after the server restarted: %s, removal %+v; want revoked, unconfirmed", got.State, got.Removal)
			}
			if m := metric(); m != "jitgate_unconfirmed_revocations 1" {
				t.Errorf("metric right after the restart: %q, want 1", m)
			}
			if !l.canConnect(client1, serverIP, 22) {
				t.Fatal("closed with no agent alive")
			}
			l.startAgent("")
		}
		l.eventually("the returning agent closed the revoked grant", 15*time.Second, func() bool { return !l.canConnect(client1, serverIP, 22) })
		l.eventually("the removal confirmed", 15*time.Second, func() bool {
			got := cliJSON[wire.Request](l, "requests", req.ID)
			return got.State == "revoked" && got.Removal != nil && got.Removal.State == "confirmed"
		})
		if m := metric(); m != "jitgate_unconfirmed_revocations 0" {
			t.Errorf("metric after the confirmation: %q, want 0", m)
		}
		for range 5 {
			if l.canConnect(client1, serverIP, 22) {
				t.Fatal("the revoked grant reopened")
			}
		}
	}
}
