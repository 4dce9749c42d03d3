package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/web"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestDashboardShowsBreakGlassUntilReviewed: an open break-glass alert is
// on the dashboard of auditors and admins (not of a requester) until it is
// reviewed.
func TestDashboardShowsBreakGlassUntilReviewed(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.api.CreateTarget(ctx, wire.TargetCreate{Name: "db-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.SetPolicy(ctx, "db-01", web.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	src, _ := policy.ParsePrefix("198.51.100.7")
	_, alert, err := e.st.OpenBreakGlass(ctx, store.Actor{Name: "carol"}, "db-01",
		policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "INC-42 primary down"},
		policy.DefaultLimits(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		role  authz.Role
		scope authz.Scope
		sees  bool
	}{
		{authz.Auditor, authz.Everywhere, true},
		{authz.Requester, authz.Everywhere, false},
		// Scoped to some targets: the dashboard shows, without the alerts.
		{authz.Auditor, "target:db-01", false},
	} {
		name := "u-" + string(tc.role) + "-" + strings.ReplaceAll(strings.ReplaceAll(string(tc.scope), ":", "-"), "*", "all")
		if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: tc.role, Scope: tc.scope}, time.Now()); err != nil {
			t.Fatal(err)
		}
		tok, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c := e.browser(t)
		e.signin(t, c, tok)
		status, body, _ := get(t, c, e.srv.URL+"/ui/")
		if status != 200 {
			t.Fatalf("dashboard of %s: %d", name, status)
		}
		if got := strings.Contains(body, `id="alert-`+alert.ID+`"`) && strings.Contains(body, "INC-42 primary down"); got != tc.sees {
			t.Errorf("%s sees the alert: %v, want %v", tc.role, got, tc.sees)
		}
	}
	if _, err := e.api.ReviewAlert(ctx, alert.ID, "checked"); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	e.signin(t, c, e.admin)
	if _, body, _ := get(t, c, e.srv.URL+"/ui/"); strings.Contains(body, "breakglass-alerts") {
		t.Error("the reviewed alert is still on the dashboard")
	}
}
