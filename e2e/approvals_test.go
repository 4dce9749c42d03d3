package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestApprovalEndToEnd: a rule that needs one approval. alice (a requester)
// asks with --wait and sees she waits for an approval; the port stays closed;
// bob (an approver in scope) approves with the CLI and the port opens for
// alice's address only; alice cannot approve her own request.
func TestApprovalEndToEnd(t *testing.T) {
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01", "--label", "group=prod")
	l.startAgent(created.EnrollToken)
	l.cli("policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--approval", "manual", "--approvals", "1", "--reason-pattern", "^INC-[0-9]+")
	l.waitApplied("web-01")
	l.cli("role", "bind", "user:alice", "--role", "requester", "--scope", "group=prod")
	l.cli("role", "bind", "user:bob", "--role", "approver", "--scope", "group=prod")
	// alice approves too, but never her own requests.
	l.cli("role", "bind", "user:alice", "--role", "approver", "--scope", "group=prod")
	alice := cliJSON[wire.TokenCreated](l, "token", "create", "--user", "alice", "--name", "e2e", "--ttl", "1h").Secret
	bob := cliJSON[wire.TokenCreated](l, "token", "create", "--user", "bob", "--name", "e2e", "--ttl", "1h").Secret

	as := func(token string, args ...string) []string {
		return append(args, "--server", testlab.ServerURL, "--token", token)
	}
	_, stderr, err := l.cliResult(as(alice, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "disk full")...)
	if err == nil || !strings.Contains(stderr, "must match") {
		t.Fatalf("a reason without a ticket number: err=%v stderr=%q; want a refusal naming the pattern", err, stderr)
	}
	waiting := l.Start(l.ClientNS, "alice's request --wait", l.Binary,
		as(alice, "request", "web-01", "--port", "22", "--duration", "10m", "--reason", "INC-7 disk full", "--wait", "--output", "json")...)
	var id string
	l.eventually("alice's request is recorded", 5*time.Second, func() bool {
		rs := cliJSON[[]wire.Request](l, "requests", "--pending")
		if len(rs) == 1 {
			id = rs[0].ID
		}
		return id != ""
	})
	l.eventually("--wait says it waits for an approval", 5*time.Second, func() bool {
		return strings.Contains(waiting.Output(), "waiting for 1 more approval")
	})
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("the port opened before anyone approved")
	}
	if _, stderr, err := l.cliResult(as(alice, "approve", id)...); err == nil || !strings.Contains(stderr, "own request") {
		t.Fatalf("alice approving her own request: err=%v stderr=%q", err, stderr)
	}
	l.cli(as(bob, "approve", id, "--reason", "ticket checked")...)
	l.eventually("the port opens for alice after bob's approval", 5*time.Second, func() bool {
		return l.canConnect(client1, serverIP, 22)
	})
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("the approval opened the port for another source")
	}
	select {
	case <-waiting.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("alice's request --wait did not end once the port was open")
	}
	if !strings.Contains(waiting.Output(), `"state": "active"`) {
		t.Fatalf("alice's --wait output lacks the active request:\n%s", waiting.Output())
	}
	// bob denies after all: the port closes at once.
	l.cli(as(bob, "deny", id, "--reason", "wrong server")...)
	l.eventually("closed after the denial", time.Second, func() bool { return !l.canConnect(client1, serverIP, 22) })
	if st := cliJSON[wire.Request](l, "requests", id).State; st != "denied" {
		t.Fatalf("request state %s after the denial, want denied", st)
	}
}
