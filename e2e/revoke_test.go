package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestRevokeWithAgentDown: a revoke while the agent is dead is recorded at
// once, but the CLI and the API say the removal is not confirmed, since when,
// and the kernel deadline that closes the grant anyway — never "closes now"
// while the port is in fact still open (real packets). The kernel closes it
// by that deadline at the latest; a restarted agent closes it at once and
// confirms.
func TestRevokeWithAgentDown(t *testing.T) {
	l := newGatedLab(t)

	t.Log("the agent is up: revoke waits for its confirmation")
	req := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e revoke up", "--wait")
	if out := l.cli("revoke", req.ID, "--yes"); !strings.Contains(out, "22/tcp closed: the agent of web-01 confirmed it") {
		t.Fatalf("revoke with the agent up:\n%s", out)
	}
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("open after a confirmed revoke")
	}

	t.Log("the agent is dead: revoke says unconfirmed, with the deadline; the port is indeed still open")
	long := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e revoke down", "--wait")
	short := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "15s", "--source", "192.0.2.3", "--reason", "e2e revoke down short", "--wait")
	if !l.canConnect(client1, serverIP, 22) || !l.canConnect(client2, serverIP, 22) {
		t.Fatal("grants not open before the agent was killed")
	}
	l.agent.kill()
	for _, r := range []wire.Request{short, long} {
		// The server may still count the agent connected for its grace
		// period, so the CLI waits for a confirmation; 1 s is enough here.
		out := l.cli("revoke", r.ID, "--yes", "--reason", "agent down", "--wait", "1s")
		for _, w := range []string{"removal not yet confirmed by the agent of web-01", "the kernel closes 22/tcp by " + fmtUTC(r.ExpiresAt), "at the latest"} {
			if !strings.Contains(out, w) {
				t.Errorf("revoke of %s with the agent dead lacks %q:\n%s", r.ID, w, out)
			}
		}
		if strings.Contains(out, "closes now") || strings.Contains(out, "closed") {
			t.Errorf("revoke with the agent dead claims the port closed:\n%s", out)
		}
		got := cliJSON[wire.Request](l, "requests", r.ID)
		if got.State != "revoked" || got.Removal == nil || got.Removal.State != "unconfirmed" || got.Removal.ClosesBy == nil ||
			!got.Removal.ClosesBy.Equal(r.ExpiresAt) || got.Removal.Agent != "web-01" || got.RemovalConfirmedAt != nil {
			t.Fatalf("API after revoking %s with the agent dead: state %s, removal %+v; want revoked, unconfirmed, closing by %v", r.ID, got.State, got.Removal, r.ExpiresAt)
		}
	}
	// The truth the output told: the kernel still holds both grants.
	if !l.canConnect(client1, serverIP, 22) || !l.canConnect(client2, serverIP, 22) {
		t.Fatal("a grant closed with no agent alive before its deadline: the kernel should still hold it")
	}

	t.Log("the kernel closes the short grant at its deadline, with no agent")
	time.Sleep(time.Until(short.ExpiresAt))
	l.eventually("the kernel closed the revoked grant by its deadline", 150*time.Millisecond, func() bool {
		return !l.canConnect(client2, serverIP, 22)
	})
	if got := cliJSON[wire.Request](l, "requests", short.ID); got.Removal == nil || got.Removal.State != "deadline_passed" {
		t.Errorf("removal of %s after its deadline: %+v, want deadline_passed", short.ID, got.Removal)
	}
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("the long grant closed before its deadline with no agent alive")
	}

	t.Log("the agent comes back: it closes the long grant at once and confirms")
	l.startAgent("")
	l.eventually("the restarted agent closed the revoked grant", 10*time.Second, func() bool {
		return !l.canConnect(client1, serverIP, 22)
	})
	l.eventually("the removal confirmed", 10*time.Second, func() bool {
		got := cliJSON[wire.Request](l, "requests", long.ID)
		return got.Removal != nil && got.Removal.State == "confirmed" && got.RemovalConfirmedAt != nil
	})
	if out := l.cli("requests", long.ID); !strings.Contains(out, "22/tcp closed: the agent of web-01 confirmed it") {
		t.Errorf("requests ID after the confirmation:\n%s", out)
	}

	t.Log("target removed while the agent is away: the table stays until the agent comes back, which then removes it and stops")
	live := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e remove", "--wait")
	l.agent.kill()
	l.cli("target", "remove", "web-01", "--yes")
	if got := cliJSON[[]wire.Request](l, "requests", "--target", "web-01"); len(got) == 0 {
		t.Fatal("no requests listed for the removed target")
	}
	got := cliJSON[wire.Request](l, "requests", live.ID)
	if got.State != "revoked" || got.Removal == nil || got.Removal.State != "unconfirmed" || got.Removal.Agent != "" {
		t.Errorf("request of the removed target: %s, removal %+v; want revoked, unconfirmed, no agent to confirm", got.State, got.Removal)
	}
	if !l.canConnect(client1, serverIP, 22) || l.canConnect(client2, serverIP, 22) {
		t.Fatal("with the agent away, the kernel table should be as it was: the grant open, other sources dropped")
	}
	l.startAgent("")
	select {
	case <-l.Agent.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the agent of the removed target did not stop")
	}
	if !l.canConnect(client2, serverIP, 22) {
		t.Fatal("the returning agent of a removed target left its table: port 22 still gated")
	}
	if !strings.Contains(l.Agent.Output(), "removing the firewall table") {
		t.Errorf("the agent did not say it removed its table:\n%s", l.Agent.Output())
	}
}

// fmtUTC is how the CLI prints an instant.
func fmtUTC(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }
