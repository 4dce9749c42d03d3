package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
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

// TestAuditByTargetKeepsToRecordedLabels: a target's name outlives it.
// web-01 is created with env=prod, removed, created again with env=dev,
// removed, and created again with env=prod. pat, an auditor of env=prod,
// is admitted to ?target=web-01 by today's labels, and sees the events of
// the two prod web-01s, not those of the dev one between them (judged by
// the labels each creation recorded), in the listing, page by page, and
// in the export; ada, an auditor of the name, and the admin see all; dora,
// an auditor of env=dev, is refused as before (today's web-01 is prod).
// Before, pat saw the dev web-01's events too.
func TestAuditByTargetKeepsToRecordedLabels(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var devFrom, devTo int64 // the dev web-01's events, first and last id
	for i, env := range []string{"prod", "dev", "prod"} {
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": env}}); err != nil {
			t.Fatal(err)
		}
		e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
		if i < 2 {
			if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
				t.Fatal(err)
			}
		}
		if env == "dev" {
			es, err := e.st.ListAudit(ctx, store.AuditFilter{Target: "web-01"})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range es {
				if ev.Action == audit.TargetAdded && ev.Details["labels"].(map[string]any)["env"] == "dev" {
					devFrom = ev.ID
				}
			}
			devTo = es[len(es)-1].ID
		}
	}
	all, err := e.st.ListAudit(ctx, store.AuditFilter{Target: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	var everything, prodOnly []int64
	for _, ev := range all {
		everything = append(everything, ev.ID)
		if ev.ID < devFrom || ev.ID > devTo {
			prodOnly = append(prodOnly, ev.ID)
		}
	}
	if devFrom == 0 || len(prodOnly) != len(everything)-3 {
		t.Fatalf("the trail of web-01 %v: want the dev web-01's three events (added, policy set, removed) from %d to %d", everything, devFrom, devTo)
	}
	pat := e.userToken(t, "pat", authz.Auditor, "label:env=prod")
	ada := e.userToken(t, "ada", authz.Auditor, "target:web-01")
	dora := e.userToken(t, "dora", authz.Auditor, "label:env=dev")

	// ids lists web-01's events as token sees them: the listing followed
	// page by page (2 a page), and the export.
	ids := func(token string) (listed, exported []int64, code int) {
		t.Helper()
		for next := "/api/v1/audit?target=web-01&limit=2"; next != ""; {
			var page []wire.AuditEvent
			var body []byte
			code, body, next = e.get(t, next, token)
			if code != http.StatusOK {
				return nil, nil, code
			}
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			for _, ev := range page {
				listed = append(listed, ev.ID)
			}
		}
		code, body := e.raw(t, "GET", "/api/v1/audit/export?target=web-01&format=jsonl", token, "", nil)
		if code != http.StatusOK {
			t.Fatalf("export: %d %s", code, body)
		}
		for line := range strings.Lines(string(body)) {
			var ev wire.AuditEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatal(err)
			}
			exported = append(exported, ev.ID)
		}
		return listed, exported, http.StatusOK
	}
	for _, tt := range []struct {
		who, token string
		want       []int64
		code       int
	}{
		{"pat (env=prod)", pat, prodOnly, http.StatusOK},
		{"ada (target:web-01)", ada, everything, http.StatusOK},
		{"admin", e.admin, everything, http.StatusOK},
		{"dora (env=dev)", dora, nil, http.StatusForbidden},
	} {
		listed, exported, code := ids(tt.token)
		if code != tt.code || !slices.Equal(listed, tt.want) || !slices.Equal(exported, tt.want) {
			t.Errorf("%s: %d, listed %v, exported %v; want %d, %v", tt.who, code, listed, exported, tt.code, tt.want)
		}
	}
}
