package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestConsoleShowsUnconfirmedRemoval: the target page shows a revoked
// request whose agent has not confirmed the port closed, with the kernel
// deadline, until the agent reports; and an unconfirmed policy removal.
func TestConsoleShowsUnconfirmedRemoval(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	created, err := e.api.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := e.api.Enroll(ctx, created.EnrollToken, wire.EnrollRequest{Hostname: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	agent := e.api.WithToken(enrolled.Credential)
	apply := func() {
		t.Helper()
		ds, err := agent.Desired(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.api.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}}); err != nil {
		t.Fatal(err)
	}
	req, err := e.api.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	apply()
	if _, err := e.api.Revoke(ctx, req.ID, "done"); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	e.signin(t, c, e.admin)
	_, body, _ := get(t, c, e.srv.URL+"/ui/targets/web-01")
	closing, _, _ := strings.Cut(body[strings.Index(body, `id="closing"`)+1:], "</table>")
	if !strings.Contains(body, `id="closing"`) || !strings.Contains(closing, req.ID) || !strings.Contains(closing, "not yet confirmed closed") ||
		!strings.Contains(closing, "the kernel closes it by") || !strings.Contains(closing, "agent of web-01") {
		t.Fatalf("target page does not show the unconfirmed revocation:\n%s", body)
	}

	apply()
	_, body, _ = get(t, c, e.srv.URL+"/ui/targets/web-01")
	if strings.Contains(body, `id="closing"`) || !strings.Contains(body, "closed: confirmed by the agent") {
		t.Errorf("target page after the agent confirmed:\n%s", body)
	}

	if err := e.api.RemovePolicy(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	_, body, _ = get(t, c, e.srv.URL+"/ui/targets/web-01")
	if !strings.Contains(body, `id="policy-removal"`) || !strings.Contains(body, "has not confirmed it yet") {
		t.Errorf("target page does not show the unconfirmed policy removal:\n%s", body)
	}
	apply()
	if _, body, _ = get(t, c, e.srv.URL+"/ui/targets/web-01"); strings.Contains(body, `id="policy-removal"`) {
		t.Errorf("target page still shows the policy removal as unconfirmed after the agent applied it")
	}
}
