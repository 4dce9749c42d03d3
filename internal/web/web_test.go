package web_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/web"
	"github.com/jitgate/jitgate/internal/wire"
)

// env is the API and the console over one SQLite store, as server.Run
// wires them.
type env struct {
	recordings *recording.Dir
	st         *store.Store
	dbPath     string
	srv        *httptest.Server
	admin      string
	api        *client.Client
}

func newEnv(tb testing.TB, tls bool) *env {
	tb.Helper()
	return newEnvWith(tb, tls, nil)
}

// newEnvWith is newEnv with the console's dependencies adjusted by edit.
func newEnvWith(tb testing.TB, tls bool, edit func(*web.Deps)) *env {
	tb.Helper()
	ctx := context.Background()
	dbPath := filepath.Join(tb.TempDir(), "j.db")
	st, err := store.OpenSQLite(ctx, dbPath, store.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	hub := api.NewHub()
	st.Subscribe(hub.Notify)
	reg := prometheus.NewRegistry()
	presence := api.NewPresence(st, time.Minute)
	recs, err := recording.OpenDir(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	h := api.New(api.Deps{Store: st, Hub: hub, Limits: policy.DefaultLimits(), AgentPollWait: time.Second,
		EnrollTokenTTL: time.Hour, Presence: presence, Registry: reg, Logger: slog.New(slog.DiscardHandler),
		Metrics: api.NewMetrics(reg, func() float64 { return 0 }, func() float64 { return 0 }), Recordings: recs})
	deps := web.Deps{API: h, Store: st, Logger: slog.New(slog.NewTextHandler(testWriter{tb}, nil))}
	if edit != nil {
		edit(&deps)
	}
	console, err := web.New(deps)
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{st: st, dbPath: dbPath, recordings: recs}
	if tls {
		e.srv = httptest.NewTLSServer(console)
	} else {
		e.srv = httptest.NewServer(console)
	}
	tb.Cleanup(e.srv.Close)
	if e.admin, err = st.CreateAdminToken(ctx, store.Actor{Name: "test"}, "admin", time.Now()); err != nil {
		tb.Fatal(err)
	}
	if e.api, err = client.New(e.srv.URL, e.admin, client.WithHTTPClient(e.srv.Client())); err != nil {
		tb.Fatal(err)
	}
	return e
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func (e *env) browser(tb testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	c := *e.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

func (e *env) signin(tb testing.TB, c *http.Client, token string) *http.Response {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/ui/signin", strings.NewReader(url.Values{"token": {token}, "return": {"/ui/audit"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func cookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func get(tb testing.TB, c *http.Client, u string) (int, string, http.Header) {
	tb.Helper()
	resp, err := c.Get(u)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestSignInWithToken(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			e := newEnv(t, tls)
			c := e.browser(t)
			status, _, h := get(t, c, e.srv.URL+"/ui/approvals")
			if status != http.StatusSeeOther || h.Get("Location") != "/ui/signin?return=%2Fui%2Fapprovals" {
				t.Fatalf("signed out: %d %q, want a redirect to the sign-in page", status, h.Get("Location"))
			}
			if resp := e.signin(t, c, "jgp_not-a-token"); resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("a wrong token: %d, want 401", resp.StatusCode)
			}
			resp := e.signin(t, c, e.admin)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/audit" {
				t.Fatalf("sign-in: %d to %q, want 303 to /ui/audit", resp.StatusCode, resp.Header.Get("Location"))
			}
			s, csrf := cookie(resp, "jitgate_session"), cookie(resp, "jitgate_csrf")
			if s == nil || csrf == nil {
				t.Fatalf("sign-in set cookies %v", resp.Cookies())
			}
			if !s.HttpOnly || s.SameSite != http.SameSiteLaxMode || s.Secure != tls || s.Path != "/" {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Secure=%v, Path=/", s, tls)
			}
			if csrf.HttpOnly || csrf.Secure != tls {
				t.Errorf("CSRF cookie %+v: the page must read it; Secure=%v", csrf, tls)
			}
			if s.Value == e.admin {
				t.Error("the session cookie holds the pasted token itself; want a session token of its own")
			}
			for _, page := range []string{"/ui/", "/ui/approvals", "/ui/audit", "/ui/sessions", "/ui/?tab=unsupported"} {
				status, body, h := get(t, c, e.srv.URL+page)
				if status != http.StatusOK {
					t.Errorf("%s: %d\n%s", page, status, body)
				}
				if got := h.Get("Content-Security-Policy"); got != web.CSP {
					t.Errorf("%s: CSP %q", page, got)
				}
				if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, " onclick=") {
					t.Errorf("%s has inline script or style", page)
				}
				if !strings.Contains(body, `data-csrf="`+csrf.Value+`"`) {
					t.Errorf("%s does not hand the CSRF token to its script", page)
				}
			}
			// The session is a real API credential (GET needs no CSRF token).
			if status, body, _ := get(t, c, e.srv.URL+"/api/v1/whoami"); status != 200 || !strings.Contains(body, `"subject": "admin"`) {
				t.Fatalf("whoami with the session cookie: %d %s", status, body)
			}
		})
	}
}

func TestSignInRefusesAnotherSite(t *testing.T) {
	e := newEnv(t, false)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/ui/signin", strings.NewReader(url.Values{"token": {e.admin}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := e.browser(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || cookie(resp, "jitgate_session") != nil {
		t.Fatalf("a sign-in posted from another site: %d, cookies %v; want 403 and no session", resp.StatusCode, resp.Cookies())
	}
}

func TestStateChangesNeedCSRF(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.api.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	resp := e.signin(t, c, e.admin)
	csrf := cookie(resp, "jitgate_csrf").Value
	put := func(token string) int {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/api/v1/targets/web-01/policy", strings.NewReader(`{"rules":[{"port":22}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("If-None-Match", "*") // web-01 has no policy yet
		if token != "" {
			req.Header.Set("X-CSRF-Token", token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := put(""); got != http.StatusForbidden {
		t.Errorf("PUT policy with the cookie and no CSRF token: %d, want 403", got)
	}
	if got := put("wrong"); got != http.StatusForbidden {
		t.Errorf("PUT policy with a wrong CSRF token: %d, want 403", got)
	}
	if got := put(csrf); got != http.StatusOK {
		t.Errorf("PUT policy with the CSRF token: %d, want 200", got)
	}

	// Signing out is a change too: the form repeats the token.
	signout := func(token string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/ui/signout", strings.NewReader(url.Values{"csrf": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := signout("wrong"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("sign-out without the CSRF token: %d, want 403", r.StatusCode)
	}
	session := cookie(resp, "jitgate_session").Value
	if r := signout(csrf); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", r.StatusCode)
	}
	if _, err := e.api.WithToken(session).Whoami(ctx); client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("the session after sign-out: %v, want 401 (revoked)", err)
	}
}

// TestConsoleSessionEndsWithItsToken (issue 9, item 6b): a console session
// made by pasting a token derives from it: it never outlives the token and
// ends the moment the token is revoked, so revoking a leaked token also
// signs out every browser that signed in with it.
func TestConsoleSessionEndsWithItsToken(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	laptop, err := e.api.CreateToken(ctx, wire.TokenCreate{Name: "laptop", TTL: wire.Duration(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	resp := e.signin(t, c, laptop.Secret)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in with the laptop token: %d", resp.StatusCode)
	}
	session := cookie(resp, "jitgate_session").Value
	p, err := e.st.Authenticate(ctx, session, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.st.GetToken(ctx, p.TokenID, time.Now())
	if err != nil || info.Parent != laptop.Token.ID || info.ExpiresAt == nil || info.ExpiresAt.After(*laptop.Token.ExpiresAt) {
		t.Fatalf("console session %+v, %v: want parent %s, expiring by %v", info, err, laptop.Token.ID, laptop.Token.ExpiresAt)
	}
	if status, body, _ := get(t, c, e.srv.URL+"/ui/"); status != http.StatusOK {
		t.Fatalf("dashboard while signed in: %d\n%s", status, body)
	}
	if err := e.api.RevokeToken(ctx, laptop.Token.ID); err != nil {
		t.Fatal(err)
	}
	status, _, h := get(t, c, e.srv.URL+"/ui/")
	if status != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/ui/signin") {
		t.Errorf("dashboard after the token was revoked: %d to %q, want a redirect to the sign-in page", status, h.Get("Location"))
	}
	if _, err := e.api.WithToken(session).Whoami(ctx); client.StatusOf(err) != http.StatusUnauthorized {
		t.Errorf("the console session after its token was revoked: %v, want 401", err)
	}
}

// TestDashboardTabs puts a target in each tab.
func TestDashboardTabs(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	now := time.Now()
	for _, n := range []string{"conf-01", "plain-01", "nonft-01"} {
		created, err := e.api.CreateTarget(ctx, wire.TargetCreate{Name: n, Labels: map[string]string{"group": "prod"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.st.SetAgentState(ctx, n, store.AgentConnected, "", now); err != nil {
			t.Fatal(err)
		}
		if n == "nonft-01" {
			unsupported(t, e.api, created.EnrollToken)
		}
	}
	if _, err := e.api.SetPolicy(ctx, "conf-01", web.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	e.signin(t, c, e.admin)
	for tab, want := range map[string]string{"configured": "conf-01", "not-configured": "plain-01", "unsupported": "nonft-01"} {
		_, body, _ := get(t, c, e.srv.URL+"/ui/?tab="+tab)
		for _, n := range []string{"conf-01", "plain-01", "nonft-01"} {
			if has := strings.Contains(body, `data-name="`+n+`"`); has != (n == want) {
				t.Errorf("tab %s lists %s: %v", tab, n, has)
			}
		}
	}
	_, body, _ := get(t, c, e.srv.URL+"/ui/?tab=unconfigured&q=nomatch")
	if strings.Contains(body, `data-name="plain-01"`) {
		t.Error("the search did not filter")
	}
	_, body, _ = get(t, c, e.srv.URL+"/ui/?tab=configured&label=group%3Dprod")
	if !strings.Contains(body, `data-name="conf-01"`) {
		t.Error("the label filter group=prod dropped conf-01")
	}
	status, body, _ := get(t, c, e.srv.URL+"/ui/targets/conf-01")
	if status != 200 || !strings.Contains(body, "ssh USER@") || !strings.Contains(body, `value="3389/tcp"`) {
		t.Errorf("target page: %d\n%s", status, body)
	}
	if status, _, _ := get(t, c, e.srv.URL+"/ui/targets/nope"); status != http.StatusNotFound {
		t.Errorf("an unknown target: %d, want 404", status)
	}
}

// BenchmarkDashboard renders the dashboard of 1,000 configured targets,
// each with a live grant (seeded as in the load benchmarks), through the
// console and the API, as the browser asks for it; the sub-benchmarks time
// the API calls the page makes.
func BenchmarkDashboard(b *testing.B) {
	e := newEnv(b, false)
	benchSeed(b, e)
	c := e.browser(b)
	e.signin(b, c, e.admin)
	for _, bm := range []struct{ name, path, want string }{
		{"page", "/ui/?tab=not-enforcing", "seed-001000"}, // seeded targets have a policy and no agent
		{"api-targets", "/api/v1/targets", "seed-001000"},
		{"api-live-requests", "/api/v1/requests?active=true", "seed-001000"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				status, body, _ := get(b, c, e.srv.URL+bm.path)
				if status != 200 || !strings.Contains(body, bm.want) {
					b.Fatalf("%s: %d", bm.path, status)
				}
			}
		})
	}
}

// benchSeed makes web-01 with the default policy and 1,000 more targets
// with its policy and one live grant each.
func benchSeed(tb testing.TB, e *env) {
	tb.Helper()
	ctx := context.Background()
	if _, err := e.api.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.api.SetPolicy(ctx, "web-01", web.DefaultPolicy()); err != nil {
		tb.Fatal(err)
	}
	if err := testlab.SeedDB(ctx, e.dbPath, testlab.Seed{Targets: 1000, PerTarget: 1, PolicyFrom: "web-01",
		From: netip.MustParseAddr("198.51.100.1"), Port: 22, Duration: time.Hour}); err != nil {
		tb.Fatal(err)
	}
}

// testWriter sends the console's log to the test's log.
type testWriter struct{ tb testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// unsupported enrolls a target's agent and reports, as an agent on a host
// without nftables would, that it cannot enforce.
func unsupported(tb testing.TB, c *client.Client, enrollToken string) {
	tb.Helper()
	ctx := context.Background()
	enrolled, err := c.Enroll(ctx, enrollToken, wire.EnrollRequest{Hostname: "nonft", Version: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	err = c.WithToken(enrolled.Credential).Report(ctx, wire.AgentReport{Mode: "host",
		Inventory: &wire.Inventory{Hostname: "nonft", CanEnforce: false, Reason: "nf_tables is not available in this kernel"}})
	if err != nil {
		tb.Fatal(err)
	}
}
