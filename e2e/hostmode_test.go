package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestHostMode walks one target through its life with real packets: closed by
// a policy, opened for exactly one source by a request, closed again by
// expiry (with an established ssh session surviving), by revoke, and by the
// kernel alone after every jitgate process was killed; a restart reopens
// nothing that ended and keeps what is live.
func TestHostMode(t *testing.T) {
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01", "--label", "group=prod")
	if created.EnrollToken == "" {
		t.Fatal("target add printed no enrollment token")
	}
	l.startAgent(created.EnrollToken)
	l.eventually("agent connected", 10*time.Second, func() bool {
		return cliJSON[wire.Target](l, "target", "show", "web-01").Agent.State == "connected"
	})

	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("port 22 is closed before any policy was set")
	}
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h")
	l.waitApplied("web-01")
	for _, src := range []struct{ from, to string }{{"192.0.2.1", "192.0.2.2"}, {"192.0.2.3", "192.0.2.2"}, {"2001:db8::1", "2001:db8::2"}} {
		if l.canConnect(addr(src.from), addr(src.to), 22) {
			t.Fatalf("port 22 is open from %s after the policy was set", src.from)
		}
	}
	if !l.canConnect(client1, serverIP, 8080) {
		t.Fatal("an unprotected port (8080) was closed by the policy")
	}

	t.Log("refused: a source wider than the per-request limit")
	_, stderr, err := l.cliResult("request", "web-01", "--port", "22", "--duration", "1m", "--source", "192.0.2.0/24", "--reason", "too wide")
	if err == nil || !strings.Contains(stderr, "per-request limit") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("a too-wide source: err=%v, stderr=%q; want a failure with one line naming the per-request limit", err, stderr)
	}

	t.Log("granted: open for the granted source only; ssh works; expiry keeps the established session")
	req := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "4s", "--reason", "e2e expiry", "--wait")
	if req.State != "active" || req.Source != "192.0.2.1/32" {
		t.Fatalf("request: state %q source %q, want active 192.0.2.1/32 (my-ip)", req.State, req.Source)
	}
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("granted source cannot connect while the request is active")
	}
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("a source that was not granted can connect")
	}
	if out, err := l.sshRun(client1, serverIP, "echo hello-from-jitgate"); err != nil || !strings.Contains(out, "hello-from-jitgate") {
		t.Fatalf("ssh login through the grant: %v: %s", err, out)
	}
	lines, stopSession := l.sshSession(client1, serverIP)
	select {
	case <-lines:
	case <-time.After(3 * time.Second):
		t.Fatal("the ssh session produced no output")
	}
	time.Sleep(time.Until(req.ExpiresAt))
	l.eventually("new connections refused after the deadline", 150*time.Millisecond, func() bool {
		return !l.canConnect(client1, serverIP, 22)
	})
	drain(lines)
	time.Sleep(time.Second)
	if n := drain(lines); n < 5 {
		t.Fatalf("the established ssh session got %d lines in the second after expiry, want it alive (≥ 5)", n)
	}
	stopSession()
	l.eventually("request marked expired", 10*time.Second, func() bool {
		return cliJSON[wire.Request](l, "requests", req.ID).State == "expired"
	})

	t.Log("revoke closes at once")
	req = cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e revoke", "--wait")
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("not open after the second request")
	}
	l.cli("revoke", req.ID, "--yes", "--reason", "done")
	l.eventually("closed after revoke", time.Second, func() bool { return !l.canConnect(client1, serverIP, 22) })

	t.Log("IPv6")
	req6 := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--source", "2001:db8::1", "--reason", "e2e v6", "--wait")
	if !l.canConnect(client6, server6, 22) {
		t.Fatal("IPv6 grant does not open the port")
	}
	if l.canConnect(addr("2001:db8::3"), server6, 22) {
		t.Fatal("IPv6 grant opened the port for another source")
	}
	l.cli("revoke", req6.ID, "--yes")
	l.eventually("IPv6 closed after revoke", time.Second, func() bool { return !l.canConnect(client6, server6, 22) })

	t.Log("my-ip over IPv6: the CLI talks to the server's IPv6 address and gets its own IPv6 source granted")
	mine := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e v6 my-ip", "--wait",
		"--server", "http://[2001:db8::2]:8080")
	src, err := netip.ParsePrefix(mine.Source)
	if err != nil || !src.Addr().Is6() || src.Bits() != 128 {
		t.Fatalf("my-ip over IPv6 granted %q, want the client's IPv6 address", mine.Source)
	}
	if !l.canConnect(src.Addr(), server6, 22) {
		t.Fatalf("the IPv6 my-ip grant %s does not open the port", src)
	}
	l.cli("revoke", mine.ID, "--yes")

	t.Log("kill -9 of agent and server: the kernel still closes on time; a restart reopens nothing that ended")
	short := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "4s", "--reason", "e2e crash short", "--wait")
	long := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "10m", "--source", "192.0.2.3", "--reason", "e2e crash long", "--wait")
	if short.State != "active" || long.State != "active" {
		t.Fatalf("crash setup: states %s and %s, want active", short.State, long.State)
	}
	l.agent.kill()
	l.server.kill()
	time.Sleep(time.Until(short.ExpiresAt.Add(-700 * time.Millisecond)))
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("the grant closed early after the processes were killed")
	}
	time.Sleep(time.Until(short.ExpiresAt))
	l.eventually("closed on time with no jitgate process alive", 150*time.Millisecond, func() bool {
		return !l.canConnect(client1, serverIP, 22)
	})
	if !l.canConnect(client2, serverIP, 22) {
		t.Fatal("the live grant closed while the processes were dead")
	}
	l.startServer()
	l.startAgent("")
	l.waitApplied("web-01")
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("a restart reopened an expired grant")
	}
	if !l.canConnect(client2, serverIP, 22) {
		t.Fatal("a restart closed a live grant")
	}
	l.eventually("the expired request is recorded expired after restart", 10*time.Second, func() bool {
		return cliJSON[wire.Request](l, "requests", short.ID).State == "expired"
	})
	if st := cliJSON[wire.Request](l, "requests", long.ID).State; st != "active" {
		t.Fatalf("the live request is %s after restart, want active", st)
	}

	t.Log("agent offline: the request waits, fails with a clear message, and nothing opens")
	l.agent.kill()
	_, stderr, err = l.cliResult("request", "web-01", "--port", "22", "--duration", "10m", "--reason", "e2e offline", "--wait")
	if err == nil || !strings.Contains(stderr, "did not confirm") {
		t.Fatalf("request while the agent is offline: err=%v stderr=%q; want a failure saying the agent did not confirm", err, stderr)
	}
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("port open for a request that failed")
	}
	l.startAgent("")
	l.waitApplied("web-01")
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("the returning agent opened a request that had failed")
	}

	t.Log("audit trail")
	events := cliJSON[[]wire.AuditEvent](l, "audit", "--target", "web-01", "--limit", "10000")
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Action] = true
	}
	for _, a := range []string{"target.added", "agent.enrolled", "agent.connected", "policy.set", "request.created", "request.refused",
		"request.activated", "request.expired", "request.revoked", "request.failed"} {
		if !seen[a] {
			t.Errorf("audit trail of web-01 lacks %s", a)
		}
	}

	t.Log("removing the policy opens the port again")
	l.cli("policy", "remove", "web-01", "--yes")
	l.waitApplied("web-01")
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("port still closed after the policy was removed")
	}
}

func drain(c <-chan string) int {
	n := 0
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return n
			}
			n++
		default:
			return n
		}
	}
}
