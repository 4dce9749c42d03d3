package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// cursorFixture: six targets, two labelled env=prod (a-prod, c-prod) and
// four hidden from pat, an approver of env=prod only (b-hidden-1..4, in
// name order between the two); alice (the admin) has one request and one
// session on each, oldest on a-prod, newest on c-prod. A page reads at most
// three rows (Deps.ListScan), so pat's first page of two ends on the scan
// budget, at a hidden row.
type cursorFixture struct {
	e      *env
	pat    string   // token of the scoped approver
	bob    string   // token of a second admin
	svc    string   // token of service:alice, an admin named as the admin user is
	hidden []string // names and ids pat must not learn
}

func newCursorFixture(t *testing.T, edits ...func(*api.Deps)) cursorFixture {
	t.Helper()
	e := newEnvWith(t, func(d *api.Deps) {
		d.ListScan = 3
		for _, edit := range edits {
			edit(d)
		}
	})
	ctx := context.Background()
	f := cursorFixture{e: e, pat: e.userToken(t, "pat", authz.Approver, "label:env=prod")}
	bob, err := e.st.CreateAdminToken(ctx, store.Actor{Name: "test"}, "bob", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.bob = bob
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "service:alice", Role: authz.Admin, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if f.svc, _, err = e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindService, Subject: "alice", TTL: time.Hour}, time.Now()); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a-prod", "b-hidden-1", "b-hidden-2", "b-hidden-3", "b-hidden-4", "c-prod"} {
		labels := map[string]string{"env": "dev"}
		if strings.HasSuffix(name, "-prod") {
			labels["env"] = "prod"
		}
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: name, Labels: labels}); err != nil {
			t.Fatal(err)
		}
		e.setPolicy(t, name, sshPolicy("127.0.0.0/8"))
		req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: name, Ports: []string{"22"}, Source: "127.0.0.1",
			Duration: wire.Duration(time.Hour), Reason: "cursor " + name})
		if err != nil {
			t.Fatal(err)
		}
		sid := "s-" + name
		// Started after its target: a session is judged by its target as
		// it was then (targetAt).
		if err := e.st.StartSession(ctx, session.Session{ID: sid, Target: name, Principal: "alice", RequestID: req.ID, Protocol: "tcp",
			Port: 22, StartedAt: time.Now().Add(time.Duration(i) * time.Second), Deadline: time.Now().Add(time.Hour), State: session.Live}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(name, "hidden") {
			f.hidden = append(f.hidden, name, req.ID, sid)
		}
	}
	// Two of each admin list, so that a page of one has a next link.
	for range 2 {
		if _, err := e.c.CreateWebhook(ctx, wire.WebhookCreate{URL: "https://hooks.example.com/x"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: "cursor", TTL: wire.Duration(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// userToken binds user:name to role in scope and returns a personal token
// of that user.
func (e *env) userToken(t *testing.T, name string, role authz.Role, scope authz.Scope) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: role, Scope: scope}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// get answers GET path as token: status, body, and the next page's path
// ("" when there is none).
func (e *env) get(t *testing.T, path, token string) (int, []byte, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&body)
	next := ""
	if l := resp.Header.Get("Link"); l != "" {
		target, _, _ := strings.Cut(l, ";")
		next = strings.Trim(target, "<>")
	}
	if resp.StatusCode == http.StatusBadRequest && resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("GET %s: 400 as %q, want application/problem+json", path, resp.Header.Get("Content-Type"))
	}
	return resp.StatusCode, body, next
}

// withQuery returns path with param set to value.
func withQuery(t *testing.T, path, param, value string) string {
	t.Helper()
	u, err := url.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(param, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func cursorOfPath(t *testing.T, path string) string {
	t.Helper()
	u, err := url.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("cursor")
}

// sealedLists are the lists whose next links carry a cursor, each with a
// path whose first page (as alice) has a next link.
var sealedLists = []string{
	"/api/v1/targets?limit=1",
	"/api/v1/requests?limit=1",
	"/api/v1/sessions?limit=1",
	"/api/v1/tokens?limit=1",
	"/api/v1/bindings?limit=1",
	"/api/v1/webhooks?limit=1",
}

// TestCursorsSealed: a cursor is the server's, sealed to the list, the
// caller and the query it was given for. A cursor a client made (in the
// format cursors used to have: base64 of the key's JSON), one altered by a
// character, one given to another caller (even an admin who sees the same
// rows) or replayed with another filter is refused with 400 and a
// problem; the pages a cursor continues still hold every row once.
func TestCursorsSealed(t *testing.T) {
	f := newCursorFixture(t)
	e := f.e
	forged := map[string]string{
		"targets":  `"a-prod"`,
		"requests": `{"CreatedAt":"2026-01-01T00:00:00Z","ID":"r-x"}`,
		"sessions": "0.s-x",
		"tokens":   `{"CreatedAt":"2026-01-01T00:00:00Z","ID":"t-x"}`,
		"bindings": `{"Principal":"user:alice"}`,
		"webhooks": `{"ID":"wh-x"}`,
	}
	for _, path := range sealedLists {
		list := strings.TrimPrefix(strings.Split(path, "?")[0], "/api/v1/")
		t.Run(list, func(t *testing.T) {
			code, body, next := e.get(t, path, e.admin)
			if code != http.StatusOK || next == "" {
				t.Fatalf("GET %s: %d %s next %q, want 200 with a next link", path, code, body, next)
			}
			if code, body, _ := e.get(t, next, e.admin); code != http.StatusOK {
				t.Errorf("the next link %s: %d %s, want 200", next, code, body)
			}
			cur := cursorOfPath(t, next)
			// One character changed, in the middle and at the end.
			flip := func(s string, i int) string {
				c := byte('A')
				if s[i] == 'A' {
					c = 'B'
				}
				return s[:i] + string(c) + s[i+1:]
			}
			refused := map[string]struct{ path, token string }{
				"forged":               {withQuery(t, next, "cursor", base64.RawURLEncoding.EncodeToString([]byte(forged[list]))), e.admin},
				"altered in middle":    {withQuery(t, next, "cursor", flip(cur, len(cur)/2)), e.admin},
				"altered at end":       {withQuery(t, next, "cursor", flip(cur, len(cur)-1)), e.admin},
				"another caller":       {next, f.bob},
				"service of same name": {next, f.svc},
				"another filter":       {withQuery(t, next, "selector", "env=prod"), e.admin},
				"another list":         {withQuery(t, otherList(path), "cursor", cur), e.admin},
				"not base64":           {withQuery(t, next, "cursor", "!!"), e.admin},
				"too short":            {withQuery(t, next, "cursor", "AAAA"), e.admin},
			}
			if list == "sessions" {
				// Sessions have no selector: their filters are these.
				refused["another filter"] = struct{ path, token string }{withQuery(t, next, "principal", "alice"), e.admin}
			}
			for name, c := range refused {
				code, body, _ := e.get(t, c.path, c.token)
				var p wire.Error
				_ = json.Unmarshal(body, &p)
				if code != http.StatusBadRequest || !strings.Contains(p.Error+p.Detail, "cursor") {
					t.Errorf("%s: GET %s: %d %s, want 400 naming the cursor", name, c.path, code, body)
				}
			}
		})
	}
}

// TestCursorsExpire: a cursor is honored for an hour after the page that
// gave it (by the server's clock, Deps.Now), then refused with a 400
// problem that says it expired; the page it gave at 59 minutes has a new
// cursor, honored an hour from then. Before, cursors never expired: the
// first page's cursor answered 200 at any age.
func TestCursorsExpire(t *testing.T) {
	c := newClock(time.Now())
	f := newCursorFixture(t, func(d *api.Deps) { d.Now = c.Now })
	e := f.e
	// A third webhook: the second page of each list has a next link too.
	if _, err := e.c.CreateWebhook(context.Background(), wire.WebhookCreate{URL: "https://hooks.example.com/x"}); err != nil {
		t.Fatal(err)
	}
	for _, path := range sealedLists {
		list := strings.TrimPrefix(strings.Split(path, "?")[0], "/api/v1/")
		t.Run(list, func(t *testing.T) {
			start := c.Now()
			code, body, next := e.get(t, path, e.admin)
			if code != http.StatusOK || next == "" {
				t.Fatalf("GET %s: %d %s next %q, want 200 with a next link", path, code, body, next)
			}
			c.Advance(59 * time.Minute)
			code, body, renewed := e.get(t, next, e.admin)
			if code != http.StatusOK || renewed == "" {
				t.Fatalf("the next link at 59 minutes: %d %s next %q, want 200 with a next link", code, body, renewed)
			}
			c.Advance(time.Minute)
			code, body, _ = e.get(t, next, e.admin)
			var p wire.Error
			_ = json.Unmarshal(body, &p)
			if code != http.StatusBadRequest || p.Field != "cursor" || !strings.Contains(p.Detail, "expired") {
				t.Errorf("the next link at 60 minutes: %d %s, want 400 saying the cursor expired", code, body)
			}
			if code, body, _ := e.get(t, renewed, e.admin); code != http.StatusOK {
				t.Errorf("the cursor given at 59 minutes, one minute later: %d %s, want 200", code, body)
			}
			c.Advance(59 * time.Minute)
			if code, body, _ := e.get(t, renewed, e.admin); code != http.StatusBadRequest || !strings.Contains(string(body), "expired") {
				t.Errorf("the cursor given at 59 minutes, an hour later: %d %s, want 400 saying it expired", code, body)
			}
			c.Advance(-c.Now().Sub(start))
		})
	}
}

// otherList is the path of another sealed list than path's.
func otherList(path string) string {
	i := slices.Index(sealedLists, path)
	return sealedLists[(i+1)%len(sealedLists)]
}

// TestCursorHidesInvisibleRows: pat's pages end on the scan budget, at a
// row pat may not see; the cursor that continues there names none of the
// hidden targets, requests or sessions (it used to be the base64 of the
// hidden row's key), and following the pages yields exactly pat's rows.
func TestCursorHidesInvisibleRows(t *testing.T) {
	f := newCursorFixture(t)
	e := f.e
	tests := []struct {
		path string
		id   string // the JSON field naming a row
		want []string
	}{
		{"/api/v1/targets?limit=2", "name", []string{"a-prod", "c-prod"}},
		{"/api/v1/requests?limit=2", "target", []string{"c-prod", "a-prod"}},
		{"/api/v1/sessions?limit=2", "id", []string{"s-c-prod", "s-a-prod"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			var got []string
			pages := 0
			for path := tt.path; path != "" && pages < 20; pages++ {
				code, body, next := e.get(t, path, f.pat)
				if code != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, code, body)
				}
				var rows []map[string]any
				if err := json.Unmarshal(body, &rows); err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					got = append(got, fmt.Sprint(r[tt.id]))
				}
				if next != "" {
					cur := cursorOfPath(t, next)
					plain, _ := base64.RawURLEncoding.DecodeString(cur)
					for _, h := range f.hidden {
						if strings.Contains(string(plain), h) || strings.Contains(cur, h) {
							t.Errorf("page %d's cursor %q (%q) names the hidden %q", pages, cur, plain, h)
						}
					}
				}
				path = next
			}
			if !slices.Equal(got, tt.want) || pages < 2 {
				t.Errorf("pat's rows %q in %d pages, want %q over more than one page (the scan budget)", got, pages, tt.want)
			}
		})
	}
}

// TestCursorAcrossReplicas: a cursor given out by one replica continues at
// another serving the same database (the seal's key is in the database,
// made once), for its caller only.
func TestCursorAcrossReplicas(t *testing.T) {
	f := newCursorFixture(t)
	st, err := store.OpenSQLite(context.Background(), f.e.dbPath, store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	other := newEnvOn(t, st, nil)
	for _, path := range []string{"/api/v1/targets?limit=1", "/api/v1/sessions?limit=1"} {
		// The second replica seals first: neither has read the key yet.
		code, body, next := other.get(t, path, f.e.admin)
		if code != http.StatusOK || next == "" {
			t.Fatalf("GET %s at the second replica: %d %s, want a page with a next link", path, code, body)
		}
		code, body, _ = f.e.get(t, next, f.e.admin)
		var rows []json.RawMessage
		if err := json.Unmarshal(body, &rows); code != http.StatusOK || err != nil || len(rows) != 1 {
			t.Errorf("its next page at the first replica: %d %s, want 200 with the next row", code, body)
		}
		if code, body, _ := f.e.get(t, next, f.bob); code != http.StatusBadRequest {
			t.Errorf("its next page as bob at the first replica: %d %s, want 400", code, body)
		}
	}
}

// TestCursorLengthHidesKey: AES-GCM keeps a plaintext's length, so a
// cursor as long as the key of the hidden row it ends on told pat how long
// that target's name is (b-2 or a name of 63 characters: cursors of 44 and
// 124 characters). Cursors are padded: every one pat gets is as long as
// the others whatever row its page ended on.
func TestCursorLengthHidesKey(t *testing.T) {
	e := newEnvWith(t, func(d *api.Deps) { d.ListScan = 1 })
	ctx := context.Background()
	pat := e.userToken(t, "pat", authz.Reader, "label:env=prod")
	long := "d-" + strings.Repeat("x", 61)
	// A page of one reads two rows (one more than the page) and stops on
	// the budget: pat's pages end on b-2, then on the long name.
	for _, name := range []string{"b-1", "b-2", "c-1", long, "z-prod"} {
		env := "dev"
		if name == "z-prod" {
			env = "prod"
		}
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: name, Labels: map[string]string{"env": env}}); err != nil {
			t.Fatal(err)
		}
	}
	var lengths []int
	var got []string
	for path, pages := "/api/v1/targets?limit=1", 0; path != "" && pages < 10; pages++ {
		code, body, next := e.get(t, path, pat)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		var rows []wire.Target
		if err := json.Unmarshal(body, &rows); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			got = append(got, r.Name)
		}
		if next != "" {
			lengths = append(lengths, len(cursorOfPath(t, next)))
		}
		path = next
	}
	if !slices.Equal(got, []string{"z-prod"}) || len(lengths) < 2 {
		t.Fatalf("pat's rows %q after %d cursors, want z-prod after at least two", got, len(lengths))
	}
	for _, n := range lengths[1:] {
		if n != lengths[0] {
			t.Errorf("pat's cursors are %v characters long: the length tells the hidden names apart", lengths)
			break
		}
	}
}

// TestCursorOfLongKeyContinues: a cursor is refused beyond maxCursor, but
// a binding's key may be long (a principal of 256 characters, a label
// scope; JSON writes '<' as \u003c, six bytes): the bindings page that
// ended on such a binding had a next link the server itself refused (400),
// so no admin could list the bindings after it.
func TestCursorOfLongKeyContinues(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	long := authz.Binding{Principal: "group:" + strings.Repeat("<", 256), Role: authz.Reader,
		Scope: authz.Scope("label:" + strings.Repeat("<", 63) + "=" + strings.Repeat("<", 63))}
	for _, b := range []authz.Binding{long, {Principal: "user:zed", Role: authz.Reader, Scope: authz.Everywhere}} {
		if _, err := e.c.Bind(ctx, wire.Binding{Principal: b.Principal, Role: string(b.Role), Scope: string(b.Scope)}); err != nil {
			t.Fatalf("binding %s: %v", b.Principal, err)
		}
	}
	seen := map[string]bool{}
	for path, pages := "/api/v1/bindings?limit=1", 0; path != "" && pages < 20; pages++ {
		code, body, next := e.get(t, path, e.admin)
		if code != http.StatusOK {
			t.Fatalf("page %d, GET %.80s…: %d %s", pages, path, code, body)
		}
		var rows []wire.Binding
		if err := json.Unmarshal(body, &rows); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			seen[r.Principal] = true
		}
		path = next
	}
	if !seen[long.Principal] || !seen["user:zed"] {
		t.Errorf("the bindings listed page by page miss the long one or the one after it: %v", seen)
	}
}

// TestCursorKeyRaceOnPostgres: replicas on one PostgreSQL database that
// give out their first cursors at the same moment make the seal's key at
// once; they must end with one key (store.SharedKey: the first to commit
// wins, the others read its key), so that a cursor from any continues at
// every other.
func TestCursorKeyRaceOnPostgres(t *testing.T) {
	url := testenv.Postgres(t)
	const replicas = 4
	envs := make([]*env, replicas)
	for i := range envs {
		st, err := store.OpenPostgres(context.Background(), url, store.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		envs[i] = newEnvOn(t, st, nil)
	}
	for _, name := range []string{"a-1", "b-1", "c-1"} {
		if _, err := envs[0].c.CreateTarget(context.Background(), wire.TargetCreate{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	// Every replica's first cursor, asked for together.
	nexts := make([]string, replicas)
	var wg sync.WaitGroup
	for i, e := range envs {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", e.srv.URL+"/api/v1/targets?limit=1", nil)
			req.Header.Set("Authorization", "Bearer "+envs[0].admin)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			target, _, _ := strings.Cut(resp.Header.Get("Link"), ";")
			nexts[i] = strings.Trim(target, "<>")
		})
	}
	wg.Wait()
	for i, next := range nexts {
		if next == "" {
			t.Fatalf("replica %d gave no next link", i)
		}
		for j, e := range envs {
			if code, body, _ := e.get(t, next, envs[0].admin); code != http.StatusOK {
				t.Errorf("replica %d's cursor at replica %d: %d %s, want 200 (one key for all)", i, j, code, body)
			}
		}
	}
}

// TestCursorAfterRoleNarrowed: a cursor holds a position, not a right.
// pat, reader of env=dev and env=prod, takes a first page; once the env=dev
// binding is gone, the pages the cursor continues hold only env=prod
// targets, and the cursors of a reader whose every role is gone yield
// nothing.
func TestCursorAfterRoleNarrowed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	pat := e.userToken(t, "pat", authz.Reader, "label:env=prod")
	dev, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:pat", Role: authz.Reader, Scope: "label:env=dev"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a-dev", "b-prod", "c-dev", "d-prod"} {
		_, env, _ := strings.Cut(name, "-")
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: name, Labels: map[string]string{"env": env}}); err != nil {
			t.Fatal(err)
		}
	}
	follow := func(path string) (names []string) {
		for pages := 0; path != "" && pages < 10; pages++ {
			code, body, next := e.get(t, path, pat)
			if code != http.StatusOK {
				t.Fatalf("GET %s: %d %s", path, code, body)
			}
			var rows []wire.Target
			if err := json.Unmarshal(body, &rows); err != nil {
				t.Fatal(err)
			}
			for _, r := range rows {
				names = append(names, r.Name)
			}
			path = next
		}
		return names
	}
	_, body, next := e.get(t, "/api/v1/targets?limit=1", pat)
	if next == "" || !strings.Contains(string(body), "a-dev") {
		t.Fatalf("pat's first page: %s (next %q), want a-dev and a next link", body, next)
	}
	if err := e.st.DeleteBinding(ctx, store.Actor{Name: "test"}, dev, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := follow(next); !slices.Equal(got, []string{"b-prod", "d-prod"}) {
		t.Errorf("after env=dev was taken from pat, the cursor yields %q, want only b-prod, d-prod", got)
	}
	_, _, next = e.get(t, "/api/v1/targets?limit=1", pat)
	bs, err := e.st.ListBindings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Principal == "user:pat" {
			if err := e.st.DeleteBinding(ctx, store.Actor{Name: "test"}, b, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := follow(next); len(got) != 0 {
		t.Errorf("pat without a role follows a cursor to %q, want nothing", got)
	}
}
