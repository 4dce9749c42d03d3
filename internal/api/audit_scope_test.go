package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestWholeTrailReadersNeedTheWholeScope: /metrics and /audit/verify
// answer about every target (blocked counters, agents, removals; the whole
// hash chain), whatever the query says. An auditor of web-01 alone passed
// their check with ?target=web-01 — the check read the query's target —
// and was answered every target's metrics and the whole trail's state.
// They need the audit role everywhere; ?target= keeps narrowing the audit
// listing and export, which do filter by it.
func TestWholeTrailReadersNeedTheWholeScope(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, n := range []string{"web-01", "db-01"} {
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:ada", Role: authz.Auditor, Scope: "target:web-01"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ada, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "ada", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/metrics?target=web-01", http.StatusForbidden},
		{"/metrics", http.StatusForbidden},
		{"/api/v1/audit/verify?target=web-01", http.StatusForbidden},
		{"/api/v1/audit?target=web-01", http.StatusOK},
		{"/api/v1/audit/export?target=web-01", http.StatusOK},
		{"/api/v1/audit?target=db-01", http.StatusForbidden},
	} {
		if code, body := e.raw(t, "GET", tt.path, ada, "", nil); code != tt.want {
			t.Errorf("web-01 auditor GET %s: %d %.200s, want %d", tt.path, code, body, tt.want)
		}
	}
	for _, path := range []string{"/metrics", "/api/v1/audit/verify"} {
		if code, body := e.raw(t, "GET", path, e.admin, "", nil); code != http.StatusOK {
			t.Errorf("admin GET %s: %d %.200s", path, code, body)
		}
	}
}
