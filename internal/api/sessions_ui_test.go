package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// bastionTunnel gives web-01 a bastion-only rule for a loopback echo
// service (rule edited by edit, may be nil), grants it to alice, connects
// a relay agent and returns a function that opens a tunnel to it.
func bastionTunnel(t *testing.T, e *env, edit func(*wire.PortRule)) (open func() net.Conn, req wire.Request) {
	t.Helper()
	port := testenv.Echo(t)
	agent := bastionTarget(t, e, port, edit)
	req = grantBastion(t, e.c, port)
	applyDesired(t, agent)
	relayAgent(t, e, agent)
	return func() net.Conn {
		t.Helper()
		return openTunnel(t, e.c, port)
	}, req
}

// echo sends line through c and reads it back.
func echo(t *testing.T, c net.Conn, line string) {
	t.Helper()
	fmt.Fprint(c, line)
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != line {
		t.Fatalf("echo through the tunnel = %q, %v", got, err)
	}
}

// metric reads one unlabelled sample from /metrics.
func metric(t *testing.T, e *env, name string) float64 {
	t.Helper()
	status, body := e.raw(t, "GET", "/metrics", e.admin, "", nil)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s:\n%s", name, body)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSessionMetricsAndWebhooks: /metrics counts live bastion sessions and
// the bytes relayed each way (kept after a session ends), and every
// session's start, kill and end goes through the webhook outbox like the
// request events, with the session, principal, end reason and bytes in the
// payload.
func TestSessionMetricsAndWebhooks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	wh, err := e.c.CreateWebhook(ctx, wire.WebhookCreate{URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}
	open, req := bastionTunnel(t, e, nil)
	if got := metric(t, e, "jitgate_bastion_sessions_live"); got != 0 {
		t.Fatalf("live sessions before any tunnel: %v", got)
	}
	conn := open()
	echo(t, conn, "hello\n")
	if got := metric(t, e, "jitgate_bastion_sessions_live"); got != 1 {
		t.Errorf("live sessions with one tunnel: %v, want 1", got)
	}
	in, out := metric(t, e, "jitgate_bastion_bytes_in_total"), metric(t, e, "jitgate_bastion_bytes_out_total")
	if in != 6 || out != 6 {
		t.Errorf("bytes in/out with one tunnel: %v/%v, want 6/6", in, out)
	}
	live := sessionByID(t, e.c, "")
	if _, err := e.c.KillSession(ctx, live.ID, "test"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, conn, "kill")
	second := open()
	echo(t, second, "again, longer\n")
	second.Close()
	for metric(t, e, "jitgate_bastion_sessions_live") != 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if got := metric(t, e, "jitgate_bastion_bytes_in_total"); got != 20 {
		t.Errorf("bytes in after both sessions ended: %v, want 20 (counters keep ended sessions)", got)
	}
	if got := metric(t, e, "jitgate_bastion_bytes_out_total"); got != 20 {
		t.Errorf("bytes out after both sessions ended: %v, want 20", got)
	}

	items, err := e.st.ClaimOutbox(ctx, time.Now().Add(time.Minute), time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, it := range items {
		if it.WebhookID != wh.Webhook.ID || !strings.HasPrefix(it.Event, "session.") {
			continue
		}
		body, err := notify.Body(it)
		if err != nil {
			t.Fatal(err)
		}
		var p wire.WebhookPayload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		if p.Event != it.Event || p.Target != "web-01" || p.RequestID != req.ID || p.Details["session"] == nil {
			t.Errorf("%s payload %+v: want web-01, request %s and the session", it.Event, p, req.ID)
		}
		switch p.Event {
		case "session.killed":
			if p.Actor != "alice" || p.Reason != "test" || p.Details["end_reason"] != "killed" || p.Details["bytes_in"] != float64(6) {
				t.Errorf("session.killed payload %+v", p)
			}
		case "session.ended":
			if p.Details["end_reason"] != "closed" || p.Details["principal"] != "alice" || p.Details["bytes_out"] != float64(14) {
				t.Errorf("session.ended payload %+v", p)
			}
		}
		events = append(events, p.Event)
	}
	if want := []string{"session.started", "session.killed", "session.started", "session.ended"}; !slices.Equal(events, want) {
		t.Errorf("session webhook deliveries %q, want %q", events, want)
	}
}

// TestSessionListVisibility: GET /api/v1/sessions never refuses, but lists
// alice's session on web-01 (group=prod) only to those whose roles read
// others' requests on web-01 (approver, policy-admin, auditor, admin in
// scope); a reader or requester, or anyone bound out of scope, sees none.
// Killing an unknown session id is 403, as for a known one out of reach,
// unless the caller may kill everywhere (then 404): ids cannot be probed.
func TestSessionListVisibility(t *testing.T) {
	A, R, Q, P, U, D := authz.Admin, authz.Reader, authz.Requester, authz.PolicyAdmin, authz.Auditor, authz.Approver
	sees := map[authz.Role]bool{D: true, P: true, U: true, A: true}
	for _, role := range []authz.Role{R, Q, D, P, U, A} {
		for _, inScope := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/in=%v", role, inScope), func(t *testing.T) {
				f := newMatrixFixture(t)
				scope := authz.Scope("label:group=prod")
				if !inScope {
					scope = "label:group=production"
				}
				tok := f.user(t, "bob", role, scope)
				for _, active := range []bool{false, true} {
					ss, err := f.c.WithToken(tok).Sessions(context.Background(), active)
					if err != nil {
						t.Fatal(err)
					}
					listed := slices.ContainsFunc(ss, func(s wire.BastionSession) bool { return s.ID == f.session })
					if want := sees[role] && inScope; listed != want || len(ss) > 1 {
						t.Errorf("active=%v: %d sessions, alice's listed %v, want %v", active, len(ss), listed, want)
					}
				}
				if got := f.do(t, tok, "POST", "/api/v1/sessions/s-nosuchsession/kill", `{"reason":"x"}`); got != http.StatusForbidden {
					t.Errorf("kill of an unknown session: %d, want 403", got)
				}
				if got := f.do(t, f.admin, "POST", "/api/v1/sessions/s-nosuchsession/kill", `{"reason":"x"}`); got != http.StatusNotFound {
					t.Errorf("kill of an unknown session by an admin of everything: %d, want 404", got)
				}
			})
		}
	}
}

// TestDesiredStateCarriesIdleTimeout: the agent learns each bastion rule's
// idle timeout from its desired state, so it can end idle streams itself
// (relay.TestRelayStreamEndsWhenIdle) even when the server is gone.
func TestDesiredStateCarriesIdleTimeout(t *testing.T) {
	e := newEnv(t)
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Access: "bastion", IdleTimeout: wire.Duration(15 * time.Minute)}, {Port: 3389}}})
	ds, err := agent.Desired(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint16]time.Duration{}
	for _, p := range ds.Protected {
		got[p.Port] = time.Duration(p.IdleTimeout)
	}
	if got[22] != 15*time.Minute || got[3389] != 0 || len(got) != 2 {
		t.Errorf("idle timeouts in the desired state: %v, want 22: 15m and 3389: none", got)
	}
}
