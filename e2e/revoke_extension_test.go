package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRevokeClosesPortsTakenOverByAnExtension: asking again for one of a
// live request's ports moves that port's grant to the new request. Revoking
// the first request used to close only the ports it still held: 22 stayed
// open through the newer request, while the revocation was confirmed (real
// packets). Revoking a request ends every request that carries one of its
// grants, so every port it opened closes.
func TestRevokeClosesPortsTakenOverByAnExtension(t *testing.T) {
	l := newLab(t)
	// A second service on the target, next to sshd.
	ln, err := l.ServerNS.Listen("tcp", "0.0.0.0:2222")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, ln, func(c net.Conn) { c.Close() })
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01")
	l.startAgent(created.EnrollToken)
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--port", "2222/tcp", "--max", "1h")
	l.waitApplied("web-01")
	if l.canConnect(client1, serverIP, 22) || l.canConnect(client1, serverIP, 2222) {
		t.Fatal("ports open before any grant")
	}

	first := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--port", "2222", "--duration", "30m", "--reason", "e2e extension", "--wait")
	second := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--duration", "1h", "--reason", "e2e extension again", "--wait")
	if first.State != "active" || second.State != "active" || !l.canConnect(client1, serverIP, 22) || !l.canConnect(client1, serverIP, 2222) {
		t.Fatalf("grants: %s %s, 22 open %v, 2222 open %v; want both active and open", first.State, second.State,
			l.canConnect(client1, serverIP, 22), l.canConnect(client1, serverIP, 2222))
	}
	if got := cliJSON[wire.Request](l, "requests", first.ID); got.State != "active" {
		t.Fatalf("first request after the extension of 22: %s, want active (it still holds 2222)", got.State)
	}

	out := l.cli("revoke", first.ID, "--yes")
	if !strings.Contains(out, "closed: the agent of web-01 confirmed it") {
		t.Fatalf("revoke:\n%s", out)
	}
	// Confirmed means applied: both ports are closed now.
	for _, port := range []uint16{2222, 22} {
		if l.canConnect(client1, serverIP, port) {
			t.Errorf("port %d still open after the revocation of the request that opened it was confirmed", port)
		}
	}
	if got := cliJSON[wire.Request](l, "requests", second.ID); got.State != "revoked" {
		t.Errorf("the request that took over 22: %s, want revoked with the request it extended", got.State)
	}
	l.eventually("no active request", 5*time.Second, func() bool {
		return len(cliJSON[[]wire.Request](l, "requests", "--active")) == 0
	})
}
