package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// utcWindow writes a window that opens at from and closes at to (less than
// a day later), on from's weekday in UTC; overnight when it crosses midnight.
func utcWindow(from, to time.Time) string {
	from, to = from.UTC(), to.UTC()
	return fmt.Sprintf("%s %s-%s UTC", from.Format("Mon"), from.Format("15:04"), to.Format("15:04"))
}

var nftExpires = regexp.MustCompile(`expires ([0-9a-z.]+)`)

// kernelExpires reads the time left on the one grant element in the
// agent's nftables table, as the kernel reports it.
func kernelExpires(t *testing.T, l *lab) time.Duration {
	t.Helper()
	out, err := l.ServerNS.Command(context.Background(), "nft", "list", "table", "inet", "jitgate").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	m := nftExpires.FindAllStringSubmatch(string(out), -1)
	if len(m) != 1 {
		t.Fatalf("want one element with a timeout in the table, found %d:\n%s", len(m), out)
	}
	d, err := time.ParseDuration(m[0][1])
	if err != nil {
		t.Fatalf("kernel expiry %q: %v", m[0][1], err)
	}
	return d
}

// TestTimeWindowEndToEnd (issue 15, item 2): with a real server, agent and
// nftables, a request for a port whose window is closed is refused with
// the next opening and the port stays closed; a request inside another
// rule's window is granted with its deadline clipped to the window's end:
// the port opens for the requester's address, and the kernel element's
// timeout is the clipped remaining time, not the hour asked for.
func TestTimeWindowEndToEnd(t *testing.T) {
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01")
	l.startAgent(created.EnrollToken)
	now := time.Now().UTC().Truncate(time.Minute)
	closedWin := utcWindow(now.Add(2*time.Hour), now.Add(3*time.Hour))
	end := now.Add(5 * time.Minute)
	l.cli("policy", "set", "web-01", "--port", "22/tcp", "--max", "3h", "--window", closedWin)
	l.waitApplied("web-01")

	_, stderr, err := l.cliResult("request", "web-01", "--port", "22", "--source", client1.String(), "--duration", "1h", "--reason", "x")
	if err == nil || !strings.Contains(stderr, "outside the rule's time windows") || !strings.Contains(stderr, now.Add(2*time.Hour).Format("2006-01-02 15:04")+" UTC") {
		t.Fatalf("a request outside the window: err=%v stderr=%q; want a refusal naming the next opening", err, stderr)
	}
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("the port is open after a refused request")
	}

	l.cli("policy", "set", "web-01", "--port", "22/tcp", "--max", "3h", "--window", utcWindow(now.Add(-time.Minute), end))
	l.waitApplied("web-01")
	r := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--source", client1.String(), "--duration", "1h", "--reason", "x")
	if r.WindowEnd == nil || !r.WindowEnd.Equal(end) || !r.ExpiresAt.Equal(end) {
		t.Fatalf("granted inside the window: expires %s, window end %v; want both %s", r.ExpiresAt, r.WindowEnd, end)
	}
	l.eventually("the port opens for the requester", 5*time.Second, func() bool { return l.canConnect(client1, serverIP, 22) })
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("the grant opened the port for another source")
	}
	left, want := kernelExpires(t, l), time.Until(end)
	if diff := left - want; diff > 3*time.Second || diff < -3*time.Second {
		t.Fatalf("kernel element expires in %s, want the clipped remaining %s (not the hour asked for)", left, want)
	}
	shown := l.cli("requests", r.ID)
	if !strings.Contains(shown, "window") {
		t.Errorf("requests %s does not say the deadline was clipped to the window:\n%s", r.ID, shown)
	}
}

// TestGroupApprovalEndToEnd (issue 15, item 4): a rule that needs one
// approval from group:dba and one from group:security. After a dba member
// approves, the request still awaits approval, says security is missing,
// and the port stays closed; a second dba member is refused; once a
// security member approves, the port opens for the requester's address.
func TestGroupApprovalEndToEnd(t *testing.T) {
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "db-01")
	l.startAgent(created.EnrollToken)
	l.cli("policy", "set", "db-01", "--port", "22/tcp", "--max", "1h", "--approvals-from", "group:dba", "--approvals-from", "group:security")
	l.waitApplied("db-01")
	l.cli("role", "bind", "user:alice", "--role", "requester", "--scope", "*")
	// alice approves too, and is in both groups, but never counts on her
	// own request.
	for _, u := range []string{"alice", "bob", "erin", "carol"} {
		l.cli("role", "bind", "user:"+u, "--role", "approver", "--scope", "*")
	}
	// Group membership comes from the identity provider (an SSO session's
	// groups); these tokens carry groups as a session's would.
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, l.DBPath(), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	token := func(user string, groups ...string) string {
		secret, _, err := st.CreateToken(ctx, store.Actor{Name: "e2e"}, store.TokenSpec{Kind: store.KindPersonal, Subject: user, Name: "e2e", Groups: groups, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	alice, bob, erin, carol := token("alice", "dba", "security"), token("bob", "dba"), token("erin", "dba"), token("carol", "security")
	st.Close()
	as := func(token string, args ...string) []string {
		return append(args, "--server", testlab.ServerURL, "--token", token)
	}

	r := cliJSON[wire.Request](l, as(alice, "request", "db-01", "--port", "22", "--source", client1.String(), "--duration", "10m", "--reason", "x", "--output", "json")...)
	if r.State != "pending_approval" || len(r.MissingApprovals) != 2 {
		t.Fatalf("request: %s, missing %+v; want awaiting dba and security", r.State, r.MissingApprovals)
	}
	if _, stderr, err := l.cliResult(as(alice, "approve", r.ID)...); err == nil || !strings.Contains(stderr, "own request") {
		t.Fatalf("alice approving her own request: err=%v stderr=%q", err, stderr)
	}
	l.cli(as(bob, "approve", r.ID)...)
	got := cliJSON[wire.Request](l, "requests", r.ID)
	if got.State != "pending_approval" || len(got.MissingApprovals) != 1 || got.MissingApprovals[0].From != "group:security" {
		t.Fatalf("after dba approved: %s, missing %+v; want awaiting security", got.State, got.MissingApprovals)
	}
	if shown := l.cli("requests", r.ID); !strings.Contains(shown, "waiting for 1 more approval (1 from group:security)") {
		t.Errorf("requests %s does not say security is missing:\n%s", r.ID, shown)
	}
	if inbox := l.cli("requests", "--pending", "-o", "wide"); !strings.Contains(inbox, "1/2 missing 1 group:security") {
		t.Errorf("the inbox does not say security is missing:\n%s", inbox)
	}
	if _, stderr, err := l.cliResult(as(erin, "approve", r.ID)...); err == nil || !strings.Contains(stderr, "1 more from group:security") {
		t.Fatalf("a second dba approver: err=%v stderr=%q; want a refusal saying security is missing", err, stderr)
	}
	// Give the agent time to apply anything it was (wrongly) sent: the
	// target's revision must not have moved, and the port stays closed.
	l.waitApplied("db-01")
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("the port opened with only the dba approval")
	}
	l.cli(as(carol, "approve", r.ID)...)
	l.eventually("the port opens after security approves", 5*time.Second, func() bool { return l.canConnect(client1, serverIP, 22) })
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("the approval opened the port for another source")
	}
}

// TestTightenedRuleEndToEnd: a rule tightened while a request awaits
// approval binds that request. alice asks under a rule wanting one dba
// approval; the rule then also wants security; bob's dba approval leaves
// the port closed (before the fix it opened it), and carol's security
// approval — a group the request did not name when made — opens it.
func TestTightenedRuleEndToEnd(t *testing.T) {
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "db-01")
	l.startAgent(created.EnrollToken)
	l.cli("policy", "set", "db-01", "--port", "22/tcp", "--max", "1h", "--approvals-from", "group:dba")
	l.waitApplied("db-01")
	l.cli("role", "bind", "user:alice", "--role", "requester", "--scope", "*")
	for _, u := range []string{"bob", "carol"} {
		l.cli("role", "bind", "user:"+u, "--role", "approver", "--scope", "*")
	}
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, l.DBPath(), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	token := func(user string, groups ...string) string {
		secret, _, err := st.CreateToken(ctx, store.Actor{Name: "e2e"}, store.TokenSpec{Kind: store.KindPersonal, Subject: user, Name: "e2e", Groups: groups, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	alice, bob, carol := token("alice"), token("bob", "dba"), token("carol", "security")
	st.Close()
	as := func(token string, args ...string) []string {
		return append(args, "--server", testlab.ServerURL, "--token", token)
	}

	r := cliJSON[wire.Request](l, as(alice, "request", "db-01", "--port", "22", "--source", client1.String(), "--duration", "10m", "--reason", "x", "--output", "json")...)
	if r.State != "pending_approval" || len(r.MissingApprovals) != 1 {
		t.Fatalf("request: %s, missing %+v; want awaiting dba", r.State, r.MissingApprovals)
	}
	l.cli("policy", "set", "db-01", "--port", "22/tcp", "--max", "1h", "--approvals-from", "group:dba", "--approvals-from", "group:security")
	l.waitApplied("db-01")
	l.cli(as(bob, "approve", r.ID)...)
	got := cliJSON[wire.Request](l, "requests", r.ID)
	if got.State != "pending_approval" || len(got.MissingApprovals) != 1 || got.MissingApprovals[0].From != "group:security" {
		t.Fatalf("after dba approved under the tightened rule: %s, missing %+v; want awaiting security", got.State, got.MissingApprovals)
	}
	l.waitApplied("db-01")
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("the port opened on the dba approval alone after the rule was tightened")
	}
	l.cli(as(carol, "approve", r.ID)...)
	l.eventually("the port opens after security approves", 5*time.Second, func() bool { return l.canConnect(client1, serverIP, 22) })
}
