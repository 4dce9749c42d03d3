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
