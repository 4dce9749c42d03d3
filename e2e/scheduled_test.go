package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestScheduledRequest (issue 15, item 1): two requests scheduled 3 s ahead
// with real packets. alice's is closed at +2.5 s, open at +3.1 s and
// closed again after its end (start + duration, by the kernel's timeout);
// bob loses his requester role before the start, so his never opens and
// ends failed, saying why. Each check is one fresh connection attempt at
// that moment (a dropped SYN is retried by the kernel only after a second,
// so an attempt started early cannot pass late).
func TestScheduledRequest(t *testing.T) {
	l := newGatedLab(t)
	l.cli("role", "bind", "user:alice", "--role", "requester", "--scope", "web-01")
	l.cli("role", "bind", "user:bob", "--role", "requester", "--scope", "web-01")
	alice := cliJSON[wire.TokenCreated](l, "token", "create", "--user", "alice", "--name", "e2e", "--ttl", "1h").Secret
	bob := cliJSON[wire.TokenCreated](l, "token", "create", "--user", "bob", "--name", "e2e", "--ttl", "1h").Secret
	as := func(token string, args ...string) []string {
		return append(args, "--server", testlab.ServerURL, "--token", token, "--output", "json")
	}
	const duration = 4 * time.Second
	t0 := time.Now()
	start := t0.Add(3 * time.Second).UTC().Format(time.RFC3339Nano)
	ask := func(token string, src string) wire.Request {
		t.Helper()
		out := l.cli(as(token, "request", "web-01", "--port", "22", "--source", src, "--duration", duration.String(),
			"--reason", "change window", "--start", start)...)
		return decode[wire.Request](t, out)
	}
	ra := ask(alice, client1.String())
	rb := ask(bob, client2.String())
	for _, r := range []wire.Request{ra, rb} {
		if r.State != "scheduled" || r.StartsAt == nil {
			t.Fatalf("request %s: state %s, starts_at %v; want scheduled with a start", r.ID, r.State, r.StartsAt)
		}
	}
	if want := ra.StartsAt.Add(duration); !ra.ExpiresAt.Equal(want) {
		t.Fatalf("deadline %s, want start + duration = %s", ra.ExpiresAt, want)
	}
	// bob's role goes before his start.
	l.cli("role", "unbind", "user:bob", "--role", "requester", "--scope", "web-01")

	at := func(d time.Duration) {
		t.Helper()
		if late := time.Since(t0.Add(d)); late > 100*time.Millisecond {
			t.Fatalf("the machine is too slow for this test: the check due at +%s came %s late", d, late)
		}
		time.Sleep(time.Until(t0.Add(d)))
	}
	at(2500 * time.Millisecond)
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("alice's port is open at +2.5 s, before its start at +3 s")
	}
	at(3100 * time.Millisecond)
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatalf("alice's port is not open at +3.1 s (started at +3 s): %+v", cliJSON[wire.Request](l, "requests", ra.ID))
	}
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("bob's port opened although he lost his role before the start")
	}
	got := cliJSON[wire.Request](l, "requests", rb.ID)
	if got.State != "failed" || !strings.Contains(got.Message, "no longer holds a role") {
		t.Fatalf("bob's request: %s %q; want failed, saying he no longer holds the role", got.State, got.Message)
	}
	if a := cliJSON[wire.Request](l, "requests", ra.ID); a.State != "active" {
		t.Fatalf("alice's request is %s at +3.1 s, want active", a.State)
	}
	// It closes at start + duration: the kernel's element timeout.
	time.Sleep(time.Until(t0.Add(3*time.Second + duration)))
	l.eventually("alice's port closes at its end", 2*time.Second, func() bool { return !l.canConnect(client1, serverIP, 22) })
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("bob's port is open")
	}
	// The trail says why bob's never opened.
	audit := l.cli("audit", "--target", "web-01", "--output", "json")
	if !strings.Contains(audit, "request.started") || !strings.Contains(audit, "not started: bob no longer holds a role") {
		t.Fatalf("audit trail lacks request.started or bob's refusal at start:\n%s", audit)
	}
}

// TestScheduledApproverUnbound (issue 15, item 1; attack): two requests
// scheduled 4 s ahead on a rule with one approver, each approved before
// its start; dave, who approved bob's, loses his approver role before the
// start. With real packets at +4.2 s: alice's (approved by carol, still an
// approver) is open, bob's is closed and failed, saying whose approval no
// longer counts.
func TestScheduledApproverUnbound(t *testing.T) {
	l := newGatedLab(t)
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--approval", "manual", "--approvals", "1")
	for _, b := range [][2]string{{"alice", "requester"}, {"bob", "requester"}, {"carol", "approver"}, {"dave", "approver"}} {
		l.cli("role", "bind", "user:"+b[0], "--role", b[1], "--scope", "web-01")
	}
	tokens := map[string]string{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		tokens[u] = cliJSON[wire.TokenCreated](l, "token", "create", "--user", u, "--name", "e2e", "--ttl", "1h").Secret
	}
	as := func(user string, args ...string) []string {
		return append(args, "--server", testlab.ServerURL, "--token", tokens[user], "--output", "json")
	}
	t0 := time.Now()
	start := t0.Add(4 * time.Second).UTC().Format(time.RFC3339Nano)
	ask := func(user, src string) wire.Request {
		t.Helper()
		return decode[wire.Request](t, l.cli(as(user, "request", "web-01", "--port", "22", "--source", src, "--duration", "1m",
			"--reason", "change window", "--start", start)...))
	}
	ra, rb := ask("alice", client1.String()), ask("bob", client2.String())
	l.cli(as("carol", "approve", ra.ID, "--reason", "ok")...)
	l.cli(as("dave", "approve", rb.ID, "--reason", "ok")...)
	for _, id := range []string{ra.ID, rb.ID} {
		if r := cliJSON[wire.Request](l, "requests", id); r.State != "scheduled" {
			t.Fatalf("request %s after its approval: %s, want scheduled", id, r.State)
		}
	}
	l.cli("role", "unbind", "user:dave", "--role", "approver", "--scope", "web-01")
	if late := time.Since(t0.Add(4 * time.Second)); late > 0 {
		t.Fatalf("the machine is too slow for this test: the setup ended %s after the start", late)
	}
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("alice's port is open before her start")
	}
	time.Sleep(time.Until(t0.Add(4 * time.Second))) // the start itself: nothing to poll for before it
	l.eventually("alice's port opens at her start", 3*time.Second, func() bool { return l.canConnect(client1, serverIP, 22) })
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("bob's port opened on the approval of dave, who lost his approver role before the start")
	}
	got := cliJSON[wire.Request](l, "requests", rb.ID)
	if got.State != "failed" || !strings.Contains(got.Message, "dave no longer holds a role") {
		t.Fatalf("bob's request: %s %q; want failed, saying dave's approval no longer counts", got.State, got.Message)
	}
}
