package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// follow reads a list page by page through its Link rel="next" headers and
// returns what each page held.
func follow[T any](t *testing.T, e *env, path string, name func(T) string) [][]string {
	t.Helper()
	var pages [][]string
	for path != "" && len(pages) < 100 {
		req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+e.admin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var items []T
		err = json.NewDecoder(resp.Body).Decode(&items)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		var names []string
		for _, it := range items {
			names = append(names, name(it))
		}
		pages = append(pages, names)
		path = ""
		if l := resp.Header.Get("Link"); l != "" {
			target, rel, _ := strings.Cut(l, ";")
			if strings.TrimSpace(rel) != `rel="next"` {
				t.Fatalf("Link %q: want rel=\"next\"", l)
			}
			path = strings.Trim(target, "<>")
		}
	}
	return pages
}

// TestListsPage: targets and requests come a page at a time with a next
// link, every row once and in order, filtered by a label selector; the
// client follows the pages.
func TestListsPage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for i := range 5 {
		env := "prod"
		if i%2 == 1 {
			env = "dev"
		}
		name := fmt.Sprintf("web-%02d", i)
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: name, Labels: map[string]string{"env": env, "team": "db"}}); err != nil {
			t.Fatal(err)
		}
	}
	targetName := func(x wire.Target) string { return x.Name }
	tests := []struct {
		name, path string
		want       [][]string
	}{
		{"two a page", "/api/v1/targets?limit=2", [][]string{{"web-00", "web-01"}, {"web-02", "web-03"}, {"web-04"}}},
		{"exact pages", "/api/v1/targets?limit=5", [][]string{{"web-00", "web-01", "web-02", "web-03", "web-04"}}},
		{"selector", "/api/v1/targets?limit=2&selector=" + url.QueryEscape("env=prod,team=db"), [][]string{{"web-00", "web-02"}, {"web-04"}}},
		{"selector not", "/api/v1/targets?selector=" + url.QueryEscape("env!=prod"), [][]string{{"web-01", "web-03"}}},
		{"selector matches none", "/api/v1/targets?selector=env=qa", [][]string{nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := follow(t, e, tt.path, targetName)
			if !slices.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("pages %q, want %q", got, tt.want)
			}
		})
	}

	// Requests, newest first, on prod targets only.
	for _, name := range []string{"web-00", "web-01", "web-02"} {
		e.setPolicy(t, name, sshPolicy("127.0.0.0/8"))
		for range 2 {
			if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: name, Ports: []string{"22"}, Source: "127.0.0.1",
				Duration: wire.Duration(time.Hour), Reason: "paging " + name}); err != nil {
				t.Fatal(err)
			}
		}
	}
	reqs, err := e.c.Requests(ctx, client.RequestFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, r := range reqs {
		if r.Target != "web-01" {
			want = append(want, r.ID)
		}
	}
	pages := follow(t, e, "/api/v1/requests?limit=3&selector=env=prod", func(r wire.Request) string { return r.ID })
	if got := slices.Concat(pages...); len(pages) < 2 || !slices.Equal(got, want) {
		t.Errorf("request pages %q, want %q in pages of 3", pages, want)
	}
	got, err := e.c.Requests(ctx, client.RequestFilter{Selector: "env=dev"})
	if err != nil || len(got) != 2 || got[0].Target != "web-01" || got[1].Target != "web-01" {
		t.Errorf("requests on env=dev: %v %v, want web-01's two", got, err)
	}

	// The audit trail pages by event id, oldest first.
	all, err := e.c.Audit(ctx, client.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var wantIDs []string
	for _, ev := range all {
		wantIDs = append(wantIDs, fmt.Sprint(ev.ID))
	}
	auditPages := follow(t, e, "/api/v1/audit?limit=4", func(ev wire.AuditEvent) string { return fmt.Sprint(ev.ID) })
	if got := slices.Concat(auditPages...); len(auditPages) < 2 || !slices.Equal(got, wantIDs) {
		t.Errorf("audit pages %q, want %q in pages of 4", auditPages, wantIDs)
	}

	// Bindings, in (principal, role, scope) order (alice is the admin).
	for _, u := range []string{"dan", "bea", "cid"} {
		if _, err := e.c.Bind(ctx, wire.Binding{Principal: "user:" + u, Role: "requester", Scope: "label:env=prod"}); err != nil {
			t.Fatal(err)
		}
	}
	bindingPages := follow(t, e, "/api/v1/bindings?limit=2", func(b wire.Binding) string { return b.Principal })
	if got := slices.Concat(bindingPages...); len(bindingPages) != 2 || !slices.Equal(got, []string{"user:alice", "user:bea", "user:cid", "user:dan"}) {
		t.Errorf("binding pages %q", bindingPages)
	}
	if bs, err := e.c.Bindings(ctx); err != nil || len(bs) != 4 {
		t.Errorf("client's bindings: %d %v", len(bs), err)
	}

	// Tokens, in creation order, across pages.
	for range 3 {
		if _, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: "paging", TTL: wire.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	toks, err := e.c.Tokens(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var wantToks []string
	for _, tk := range toks {
		wantToks = append(wantToks, tk.ID)
	}
	tokenPages := follow(t, e, "/api/v1/tokens?limit=2", func(tk wire.Token) string { return tk.ID })
	if got := slices.Concat(tokenPages...); len(wantToks) < 4 || len(tokenPages) != (len(wantToks)+1)/2 || !slices.Equal(got, wantToks) {
		t.Errorf("token pages %q, want %q in pages of 2", tokenPages, wantToks)
	}

	for _, bad := range []string{"/api/v1/targets?selector=Env=prod", "/api/v1/requests?selector=env", "/api/v1/targets?limit=0", "/api/v1/webhooks?limit=10001"} {
		if code, body := e.raw(t, "GET", bad, e.admin, "", nil); code != http.StatusUnprocessableEntity {
			t.Errorf("GET %s: %d %s, want 422", bad, code, body)
		}
	}
	// A cursor the server did not give out is a bad request (cursor_test.go).
	for _, bad := range []string{"/api/v1/targets?cursor=nope", "/api/v1/requests?cursor=%21", "/api/v1/bindings?cursor=x"} {
		if code, body := e.raw(t, "GET", bad, e.admin, "", nil); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", bad, code, body)
		}
	}
}
