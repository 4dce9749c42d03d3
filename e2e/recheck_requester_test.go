package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestApprovalRechecksRequester: real packets. alice and dave each ask
// for 22 on a rule that needs one approval; alice's requester binding is
// removed while hers waits. bob's approval of hers is refused ("no longer
// may ask") and her request fails; his approval of dave's opens the port
// for dave's address, while alice's address stays closed.
func TestApprovalRechecksRequester(t *testing.T) {
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01", "--label", "group=prod")
	l.startAgent(created.EnrollToken)
	l.cli("policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--approval", "manual", "--approvals", "1")
	l.waitApplied("web-01")
	for _, b := range [][]string{{"user:alice", "requester"}, {"user:dave", "requester"}, {"user:bob", "approver"}} {
		l.cli("role", "bind", b[0], "--role", b[1], "--scope", "group=prod")
	}
	token := func(user string) string {
		return cliJSON[wire.TokenCreated](l, "token", "create", "--user", user, "--name", "e2e", "--ttl", "1h").Secret
	}
	alice, dave, bob := token("alice"), token("dave"), token("bob")
	as := func(token string, args ...string) []string {
		return append(args, "--server", testlab.ServerURL, "--token", token)
	}
	ra := cliJSON[wire.Request](l, as(alice, "request", "web-01", "--port", "22", "--source", client1.String(), "--duration", "10m", "--reason", "disk")...)
	rd := cliJSON[wire.Request](l, as(dave, "request", "web-01", "--port", "22", "--source", client2.String(), "--duration", "10m", "--reason", "disk")...)
	if ra.State != "pending_approval" || rd.State != "pending_approval" {
		t.Fatalf("requests: %s, %s; want both awaiting approval", ra.State, rd.State)
	}
	l.cli("role", "unbind", "user:alice", "--role", "requester", "--scope", "group=prod")
	if _, stderr, err := l.cliResult(as(bob, "approve", ra.ID)...); err == nil || !strings.Contains(stderr, "no longer may ask") {
		t.Fatalf("bob approving the request of unbound alice: err=%v stderr=%q; want a refusal saying she no longer may ask", err, stderr)
	}
	l.cli(as(bob, "approve", rd.ID)...)
	l.eventually("the port opens for dave after bob's approval", 5*time.Second, func() bool {
		return l.canConnect(client2, serverIP, 22)
	})
	// The agent has applied the state with dave's grant: alice's is not in it.
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("the approval opened the port for alice, whose requester role was removed")
	}
	if got := cliJSON[wire.Request](l, "requests", ra.ID); got.State != "failed" || !strings.Contains(got.Message, "no longer holds a role") {
		t.Fatalf("alice's request: %s (%q), want failed saying she no longer holds a role", got.State, got.Message)
	}
}
