package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestBreakGlassOnline: a principal holding only the breakglass role opens
// a port whose rule wants an approver, at once (real packets: its source
// only), and raises an alert that an admin's review clears.
func TestBreakGlassOnline(t *testing.T) {
	l := newGatedLab(t)
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--approval", "manual", "--approvals", "1")
	l.waitApplied("web-01")
	l.cli("role", "bind", "user:carol", "--role", "breakglass", "--scope", "*")
	carol := cliJSON[wire.TokenCreated](l, "token", "create", "--name", "bg", "--ttl", "1h", "--user", "carol")
	admin := l.Token

	// An ordinary request waits for an approver: nothing opens.
	req := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--source", client2.String(), "--duration", "10m", "--reason", "routine")
	if req.State != "pending_approval" {
		t.Fatalf("ordinary request is %s, want pending_approval", req.State)
	}

	l.Token = carol.Secret
	if _, stderr, err := l.cliResult("breakglass", "open", "web-01", "--port", "22", "--source", client1.String(), "--duration", "10m", "--reason", " "); err == nil || !strings.Contains(stderr, "--reason") {
		t.Fatalf("break-glass without a reason: err %v, stderr %q; want a refusal naming --reason", err, stderr)
	}
	// Beyond the server's cap (1 h by default) and the rule's maximum.
	if _, stderr, err := l.cliResult("breakglass", "open", "web-01", "--port", "22", "--source", client1.String(), "--duration", "2h", "--reason", "x"); err == nil || !strings.Contains(stderr, "cap of 1h") {
		t.Fatalf("break-glass over the cap: err %v, stderr %q", err, stderr)
	}
	out := cliJSON[wire.BreakGlassOpened](l, "breakglass", "open", "web-01", "--port", "22", "--source", client1.String(), "--duration", "10m", "--reason", "INC-42: primary down")
	l.Token = admin
	if out.Request.ApprovalsRequired != 0 || out.Alert.ID == "" {
		t.Fatalf("break-glass answer %+v", out)
	}
	l.eventually("break-glass source let in", 10*time.Second, func() bool { return l.canConnect(client1, serverIP, 22) })
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("another source got in")
	}
	alerts := cliJSON[[]wire.BreakGlassAlert](l, "breakglass", "alerts")
	if len(alerts) != 1 || alerts[0].ID != out.Alert.ID || alerts[0].Actor != "carol" {
		t.Fatalf("open alerts %+v; want carol's", alerts)
	}
	if !strings.Contains(l.cli("breakglass", "review", out.Alert.ID, "--note", "called carol"), "reviewed") {
		t.Fatal("review did not say so")
	}
	if alerts := cliJSON[[]wire.BreakGlassAlert](l, "breakglass", "alerts"); len(alerts) != 0 {
		t.Fatalf("alerts still open after the review: %+v", alerts)
	}
	events := cliJSON[[]wire.AuditEvent](l, "audit", "--target", "web-01")
	var actions []string
	for _, e := range events {
		actions = append(actions, e.Action)
	}
	for _, want := range []string{"breakglass.opened", "breakglass.reviewed"} {
		if !slices.Contains(actions, want) {
			t.Errorf("no %s in the trail: %v", want, actions)
		}
	}
}

// agentBreakGlass runs `jitgate agent breakglass` as root on the protected
// host (the server's namespace) and returns its output and error.
func (l *lab) agentBreakGlass(token, source, duration string) (stdout, stderr string, err error) {
	cmd := l.ServerNS.Command(context.Background(), l.Binary, "agent", "breakglass", "--state-dir", filepath.Join(l.Dir, "agent"),
		"--token", token, "--source", source, "--duration", duration, "--reason", "server down, INC-43")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// TestBreakGlassOffline: with the server process killed, an offline token
// opens web-01's 22/tcp for its source only; a second use, an expired and a
// forged token are refused in one line with nothing opened; the agent,
// restarted too while the server is down, keeps the opening, and so does its
// full apply once the server is back; the use reaches the audit trail; the
// token's revocation closes it.
func TestBreakGlassOffline(t *testing.T) {
	l := newGatedLab(t)
	issued := cliJSON[wire.BreakGlassTokenCreated](l, "breakglass", "issue", "--target", "web-01", "--port", "22/tcp", "--max-duration", "30m", "--expires", "90d")
	short := cliJSON[wire.BreakGlassTokenCreated](l, "breakglass", "issue", "--target", "web-01", "--port", "22/tcp", "--max-duration", "30m", "--expires", "1s")
	// The agent persists the server's key with its next desired state.
	l.eventually("agent learned the break-glass key", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(l.Dir, "agent", "breakglass.pub"))
		return err == nil
	})
	l.server.kill()
	l.eventually("server gone", 5*time.Second, func() bool { return !l.canConnect(client1, serverIP, 8080) })
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("22/tcp open before the break-glass")
	}

	refused := func(what, token, duration, says string) {
		t.Helper()
		stdout, stderr, err := l.agentBreakGlass(token, client2.String(), duration)
		line := strings.TrimSpace(stderr)
		if err == nil || strings.Contains(line, "\n") || !strings.Contains(line, says) {
			t.Errorf("%s: err %v, stdout %q, stderr %q; want one line saying %q", what, err, stdout, stderr, says)
		}
		if l.canConnect(client2, serverIP, 22) {
			t.Errorf("%s opened the port", what)
		}
	}
	refused("duration too long", issued.Text, "31m", "exceeds the token's maximum")
	l.eventually("short token expired", 5*time.Second, func() bool { return time.Now().After(short.Token.ExpiresAt) })
	refused("expired token", short.Text, "5m", "expired")
	forged := issued.Text[:len(issued.Text)-6] + "AAAAAA"
	refused("forged token", forged, "5m", "does not verify")
	refused("malformed token", "jgbg1.not-a-token", "5m", "malformed")

	if _, stderr, err := l.agentBreakGlass(issued.Text, client1.String(), "30m"); err != nil {
		t.Fatalf("offline break-glass: %v\n%s", err, stderr)
	}
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("the token's source is not let in")
	}
	if l.canConnect(client2, serverIP, 22) {
		t.Fatal("another source got in")
	}
	refused("second use", issued.Text, "5m", "already used")

	// The agent restarts while the server is still down: nothing changes.
	l.agent.kill()
	l.startAgent("")
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("closed by the agent's restart")
	}

	// The server returns: the agent applies its state (which knows nothing
	// of the break-glass) and keeps the opening, and reports the use.
	l.startServer()
	l.eventually("use in the audit trail", 20*time.Second, func() bool {
		for _, e := range cliJSON[[]wire.AuditEvent](l, "audit", "--action", "breakglass.used") {
			if e.Target == "web-01" && e.Details["token"] == issued.Token.ID {
				return true
			}
		}
		return false
	})
	l.waitApplied("web-01")
	if !l.canConnect(client1, serverIP, 22) {
		t.Fatal("the agent's apply after the server returned closed a valid break-glass")
	}
	toks := cliJSON[[]wire.BreakGlassToken](l, "breakglass", "list")
	if i := slices.IndexFunc(toks, func(x wire.BreakGlassToken) bool { return x.ID == issued.Token.ID }); i < 0 || toks[i].UsedTarget != "web-01" {
		t.Errorf("token not marked used on web-01: %+v", toks)
	}
	if alerts := cliJSON[[]wire.BreakGlassAlert](l, "breakglass", "alerts"); len(alerts) != 1 || alerts[0].Kind != "offline" {
		t.Errorf("open alerts %+v, want the offline use", alerts)
	}

	// Revoking the token closes what it opened.
	l.cli("breakglass", "revoke", issued.Token.ID)
	l.eventually("revoked break-glass closed", 15*time.Second, func() bool { return !l.canConnect(client1, serverIP, 22) })
}
