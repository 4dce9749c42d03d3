package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/oidc/oidctest"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

var carol = oidctest.User{Name: "carol", Password: "correct horse", Email: "carol@example.com", Groups: []string{"ops", "dba"}}

type ssoEnv struct {
	st   *store.Store
	op   *oidctest.Provider
	url  string
	path string      // the database file
	cfg  oidc.Config // jitgate's OIDC configuration
}

// newSSOEnv serves the API with single sign-on at a real OpenID provider on
// loopback; edit adjusts jitgate's OIDC configuration. With noSSO, single
// sign-on is not configured.
func newSSOEnv(t *testing.T, edit func(*oidc.Config), noSSO bool) *ssoEnv {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "j.db")
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	op := oidctest.Start(t, carol, mallory)
	var sso *oidc.Provider
	var cfg oidc.Config
	if !noSSO {
		cfg = oidc.Config{Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: op.ClientSecret,
			Scopes: []string{"openid", "profile", "email", "groups"}, SessionTTL: time.Hour}
		if edit != nil {
			edit(&cfg)
		}
		if sso, err = oidc.New(cfg); err != nil {
			t.Fatalf("oidc.New: %v", err)
		}
	}
	hub := api.NewHub()
	presence := api.NewPresence(st, time.Minute)
	reg := prometheus.NewRegistry()
	metrics := api.NewMetrics(reg, func() float64 {
		n, _ := st.CountRequests(context.Background(), access.Active)
		return float64(n)
	}, func() float64 { return float64(presence.Connected()) })
	h := api.New(api.Deps{
		Store: st, Hub: hub, Limits: policy.DefaultLimits(), AgentPollWait: 30 * time.Second, EnrollTokenTTL: time.Hour,
		Presence: presence, Metrics: metrics, Registry: reg, Logger: slog.New(slog.DiscardHandler), SSO: sso,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	op.AllowRedirect(srv.URL + "/auth/callback")
	return &ssoEnv{st: st, op: op, url: srv.URL, path: path, cfg: cfg}
}

// browser is an HTTP client with a cookie jar, as a browser without
// JavaScript; redirected records each redirect answer it followed.
func browser(t *testing.T, redirected *[]*http.Response) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 20 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if redirected != nil {
			*redirected = append(*redirected, req.Response)
		}
		return nil
	}}
}

func (e *ssoEnv) events(t *testing.T, action audit.Action) []audit.Event {
	t.Helper()
	evs, err := e.st.ListAudit(context.Background(), store.AuditFilter{Action: string(action)})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBrowserLogin drives the authorization code flow as a browser would:
// jitgate sends it to the provider, the person signs in there, and the
// callback leaves a session cookie that works on the API, and a CSRF token
// without which state-changing calls are refused.
func TestBrowserLogin(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	var redirects []*http.Response
	c := browser(t, &redirects)

	page, err := c.Get(e.url + "/auth/login?return=/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	authz := redirects[0].Header.Get("Location")
	for _, want := range []string{"code_challenge_method=S256", "code_challenge=", "nonce=", "state=", "client_id=jitgate"} {
		if !strings.Contains(authz, want) {
			t.Errorf("authorization URL %s lacks %s", authz, want)
		}
	}
	resp := e.op.SubmitLogin(t, c, page, carol.Name, carol.Password)
	got := body(t, resp)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/api/v1/whoami" {
		t.Fatalf("after login: %s at %s: %s", resp.Status, resp.Request.URL, got)
	}
	var who wire.Whoami
	if err := json.Unmarshal([]byte(got), &who); err != nil {
		t.Fatal(err)
	}
	if who.Subject != "carol@example.com" || who.Kind != store.KindSession || !slices.Equal(who.Groups, []string{"dba", "ops"}) {
		t.Errorf("whoami = %+v", who)
	}

	// The cookies as the callback set them.
	var session, csrf *http.Cookie
	for _, r := range redirects {
		if r.Request.URL.Path != "/auth/callback" {
			continue
		}
		for _, ck := range r.Cookies() {
			switch ck.Name {
			case "jitgate_session":
				session = ck
			case "jitgate_csrf":
				csrf = ck
			}
		}
	}
	if session == nil || csrf == nil {
		t.Fatalf("callback set session %v, csrf %v", session, csrf)
	}
	if !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.Secure {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/, not Secure over plain HTTP", session)
	}
	if csrf.HttpOnly || csrf.Value == "" {
		t.Errorf("csrf cookie %+v: want readable by the page", csrf)
	}

	resp, err = c.Get(e.url + "/api/v1/targets")
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/v1/targets with the session cookie: %s %s", resp.Status, b)
	}

	post := func(withCSRF string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/targets", strings.NewReader(`{"name":"web-1"}`))
		req.Header.Set("Content-Type", "application/json")
		if withCSRF != "" {
			req.Header.Set("X-CSRF-Token", withCSRF)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body(t, resp)
	}
	if status, b := post(""); status != http.StatusForbidden || !strings.Contains(b, "missing or wrong CSRF token") {
		t.Errorf("POST without the CSRF header: %d %s", status, b)
	}
	if status, b := post("not-the-token"); status != http.StatusForbidden || !strings.Contains(b, "CSRF") {
		t.Errorf("POST with a wrong CSRF header: %d %s", status, b)
	}
	// With the token the request passes the CSRF check; carol holds no
	// role, so the role check refuses it.
	if status, b := post(csrf.Value); strings.Contains(b, "CSRF") || status == http.StatusUnauthorized {
		t.Errorf("POST with the CSRF header: %d %s", status, b)
	}

	evs := e.events(t, audit.LoginSucceeded)
	if len(evs) != 1 || evs[0].Actor != "carol@example.com" || evs[0].ClientAddr != "127.0.0.1" {
		t.Fatalf("login.succeeded events: %+v", evs)
	}
	if diff := cmp.Diff([]any{"dba", "ops"}, evs[0].Details["groups"]); diff != "" {
		t.Errorf("audited groups (-want +got):\n%s", diff)
	}
}

// TestBrowserLoginsCannotBeExhausted: an outsider who begins more browser
// logins than the server ever held at once (10,000, from one address,
// never finishing them) does not refuse anyone else's login: the server
// keeps no state per login begun (it travels, sealed, in the login cookie).
func TestBrowserLoginsCannotBeExhausted(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	flood := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i := range 10_001 {
		resp, err := flood.Get(e.url + "/auth/login")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Fatalf("login %d begun by the flood: %s, want 302", i+1, resp.Status)
		}
	}
	c := browser(t, nil)
	page, err := c.Get(e.url + "/auth/login?return=/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp := e.op.SubmitLogin(t, c, page, carol.Name, carol.Password)
	if b := body(t, resp); resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/api/v1/whoami" {
		t.Fatalf("carol's login during the flood: %s at %s: %s", resp.Status, resp.Request.URL, b)
	}
}

// TestBrowserLoginCookie: the login cookie binds a login to its browser
// and its state: a callback with the state of a login begun elsewhere,
// without that login's cookie, with another login's cookie, or with a
// forged cookie is refused and audited.
func TestBrowserLoginCookie(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	begin := func() (state string, cookie *http.Cookie) {
		t.Helper()
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(e.url + "/auth/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		for _, ck := range resp.Cookies() {
			if ck.Name == "jitgate_login" {
				cookie = ck
			}
		}
		if cookie == nil || loc.Query().Get("state") == "" {
			t.Fatalf("a login begun without a login cookie or state: %v %s", resp.Cookies(), loc)
		}
		if strings.Contains(cookie.Value, loc.Query().Get("state")) {
			t.Errorf("the login cookie shows its state in clear")
		}
		return loc.Query().Get("state"), cookie
	}
	victimState, _ := begin()
	_, attackerCookie := begin()
	forged := *attackerCookie
	forged.Value = forged.Value[:len(forged.Value)-2] + "AA"
	for _, tc := range []struct {
		name   string
		cookie *http.Cookie
	}{
		{"no cookie", nil},
		{"another login's cookie", attackerCookie},
		{"a forged cookie", &forged},
	} {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/auth/callback?code=whatever&state="+url.QueryEscape(victimState), nil)
		if tc.cookie != nil {
			req.AddCookie(tc.cookie)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if b := body(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "login state") {
			t.Errorf("callback with %s: %s %s, want 400 about the login state", tc.name, resp.Status, b)
		}
	}
	if evs := e.events(t, audit.LoginFailed); len(evs) != 3 {
		t.Errorf("%d login.failed events, want 3", len(evs))
	}
	if len(e.events(t, audit.LoginSucceeded)) != 0 {
		t.Errorf("a refused callback was audited as a success")
	}
}

// TestBrowserLoginRefusals: a callback with a state jitgate never issued,
// and an ID token that has expired by jitgate's clock, are refused and
// audited.
func TestBrowserLoginRefusals(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(c *oidc.Config) { c.Now = func() time.Time { return time.Now().Add(3 * time.Hour) } }, false)
	c := browser(t, nil)

	resp, err := c.Get(e.url + "/auth/callback?state=forged&code=whatever")
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "login state") {
		t.Errorf("forged state: %s %s", resp.Status, b)
	}

	page, err := c.Get(e.url + "/auth/login")
	if err != nil {
		t.Fatal(err)
	}
	resp = e.op.SubmitLogin(t, c, page, carol.Name, carol.Password)
	if b := body(t, resp); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "expired") {
		t.Errorf("expired ID token: %s at %s: %s", resp.Status, resp.Request.URL, b)
	}
	for _, ck := range c.Jar.Cookies(resp.Request.URL) {
		if ck.Name == "jitgate_session" {
			t.Errorf("a session cookie was set after a failed login")
		}
	}
	evs := e.events(t, audit.LoginFailed)
	if len(evs) != 2 || !strings.Contains(evs[0].Reason, "login state") || !strings.Contains(evs[1].Reason, "expired") {
		t.Fatalf("login.failed events: %+v", evs)
	}
	if len(e.events(t, audit.LoginSucceeded)) != 0 {
		t.Errorf("a failed login was audited as a success")
	}
}

func postJSON(t *testing.T, url string, in any) (int, []byte) {
	t.Helper()
	var r io.Reader = http.NoBody
	if in != nil {
		b, _ := json.Marshal(in)
		r = strings.NewReader(string(b))
	}
	resp, err := http.Post(url, "application/json", r)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, []byte(body(t, resp))
}

// TestDeviceLoginsCannotBeHeld: someone behind the same address (an office
// NAT, a shared jump host) begins as many device logins as the address may
// have in progress and never finishes them. Carol's device login from that
// address still begins and ends in a session; the oldest of the squatter's
// logins is the one that ends, answered expired_token.
func TestDeviceLoginsCannotBeHeld(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	start := func(who string) wire.DeviceLogin {
		t.Helper()
		status, b := postJSON(t, e.url+"/api/v1/auth/device", nil)
		if status != http.StatusOK {
			t.Fatalf("%s beginning a device login: %d %s", who, status, b)
		}
		var dl wire.DeviceLogin
		if err := json.Unmarshal(b, &dl); err != nil {
			t.Fatal(err)
		}
		return dl
	}
	poll := func(dl wire.DeviceLogin) (int, []byte) {
		return postJSON(t, e.url+"/api/v1/auth/device/token", wire.DeviceTokenRequest{DeviceCode: dl.DeviceCode})
	}
	var squatted []wire.DeviceLogin
	for i := range 5 {
		squatted = append(squatted, start(fmt.Sprintf("the squatter (%d)", i+1)))
	}
	mine := start("carol")
	if status, b := poll(squatted[0]); status != http.StatusBadRequest || !strings.Contains(string(b), "expired_token") {
		t.Errorf("the squatter's oldest login after carol began hers: %d %s, want expired_token", status, b)
	}
	for _, dl := range squatted[1:] {
		if status, b := poll(dl); status != http.StatusBadRequest || !strings.Contains(string(b), "authorization_pending") {
			t.Errorf("a newer squatter login: %d %s, want authorization_pending", status, b)
		}
	}
	e.op.ApproveDevice(t, browser(t, nil), mine.UserCode, carol.Name, carol.Password)
	deadline := time.Now().Add(20 * time.Second)
	status, b := poll(mine)
	for ; status == http.StatusBadRequest && strings.Contains(string(b), "authorization_pending") && time.Now().Before(deadline); status, b = poll(mine) {
		time.Sleep(100 * time.Millisecond)
	}
	if status != http.StatusOK || !strings.Contains(string(b), "carol@example.com") {
		t.Fatalf("carol's device login: %d %s, want her session", status, b)
	}
	if evs := e.events(t, audit.LoginFailed); len(evs) != 0 {
		t.Errorf("login.failed events %+v: a login that a newer one ended is nobody's failure", evs)
	}
}

// TestDeviceLogin runs the device flow through jitgate: the CLI starts it,
// the person approves the code at the provider, and polling yields a
// session token with the ID token's groups.
func TestDeviceLogin(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	status, b := postJSON(t, e.url+"/api/v1/auth/device", nil)
	if status != http.StatusOK {
		t.Fatalf("start: %d %s", status, b)
	}
	var dl wire.DeviceLogin
	if err := json.Unmarshal(b, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.UserCode == "" || dl.DeviceCode == "" || !strings.HasPrefix(dl.VerificationURI, e.op.Issuer) || dl.Interval <= 0 || dl.ExpiresIn <= 0 {
		t.Fatalf("device login %+v", dl)
	}
	poll := func() (int, []byte) {
		return postJSON(t, e.url+"/api/v1/auth/device/token", wire.DeviceTokenRequest{DeviceCode: dl.DeviceCode})
	}
	if status, b := poll(); status != http.StatusBadRequest || !strings.Contains(string(b), `"authorization_pending"`) {
		t.Fatalf("before approval: %d %s", status, b)
	}

	e.op.ApproveDevice(t, browser(t, nil), dl.UserCode, carol.Name, carol.Password)
	deadline := time.Now().Add(20 * time.Second)
	for status, b = poll(); status == http.StatusBadRequest && time.Now().Before(deadline); status, b = poll() {
		time.Sleep(100 * time.Millisecond)
	}
	if status != http.StatusOK {
		t.Fatalf("after approval: %d %s", status, b)
	}
	var s wire.Session
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.User != "carol@example.com" || !slices.Equal(s.Groups, []string{"dba", "ops"}) || time.Until(s.ExpiresAt) > time.Hour || time.Until(s.ExpiresAt) < 50*time.Minute {
		t.Errorf("session %+v", s)
	}
	p, err := e.st.Authenticate(context.Background(), s.Token, time.Now())
	if err != nil {
		t.Fatalf("the session token does not work: %v", err)
	}
	if p.Kind != store.KindSession || p.Subject != "carol@example.com" || !slices.Equal(p.Groups, []string{"dba", "ops"}) {
		t.Errorf("principal %+v", p)
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+s.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(b, "carol@example.com") {
		t.Errorf("whoami with the session token: %s %s", resp.Status, b)
	}
	// The outcome is told once.
	if status, b := poll(); status != http.StatusBadRequest || !strings.Contains(string(b), "expired_token") {
		t.Errorf("second poll after success: %d %s", status, b)
	}
	if evs := e.events(t, audit.LoginSucceeded); len(evs) != 1 || evs[0].Details["method"] != "device" {
		t.Errorf("login.succeeded events: %+v", evs)
	}
}

// TestFailedLoginsAreLimited: five bad tokens from one address are refused
// (401) and audited; the sixth attempt gets 429 with Retry-After, and so
// does an unknown device code from that address.
func TestFailedLoginsAreLimited(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	get := func(token string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for i := 1; i <= 5; i++ {
		if resp := get("jgp_guess" + string(rune('a'+i))); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %s, want 401", i, resp.Status)
		}
	}
	resp := get("jgp_guessf")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("attempt 6: %s (Retry-After %q), want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if status, b := postJSON(t, e.url+"/api/v1/auth/device/token", wire.DeviceTokenRequest{DeviceCode: "x"}); status != http.StatusTooManyRequests {
		t.Errorf("device token endpoint while limited: %d %s", status, b)
	}
	evs := e.events(t, audit.LoginFailed)
	if len(evs) != 5 {
		t.Fatalf("%d login.failed events, want 5 (refused attempts are not audited again): %+v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.ClientAddr != "127.0.0.1" || ev.Reason != "invalid or expired token" || strings.Contains(ev.Reason, "jgp_") {
			t.Errorf("event %+v", ev)
		}
	}
}

func TestSSONotConfigured(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, true)
	resp, err := http.Get(e.url + "/auth/login")
	if err != nil {
		t.Fatal(err)
	}
	if b := body(t, resp); resp.StatusCode != http.StatusNotFound || !strings.Contains(b, "single sign-on is not configured") {
		t.Errorf("/auth/login: %s %s", resp.Status, b)
	}
	for _, path := range []string{"/api/v1/auth/device", "/api/v1/auth/device/token"} {
		if status, b := postJSON(t, e.url+path, nil); status != http.StatusNotFound || !strings.Contains(string(b), "not configured") {
			t.Errorf("%s: %d %s", path, status, b)
		}
	}
}

// TestLoginsWhileAddressLimited: once an address is over the failed-login
// limit, its failures get 429, but a person signing in from it (behind the
// same NAT as whoever failed) is not refused: the browser login completes
// and a device login starts, is pending (not 429) and ends in a session.
func TestLoginsWhileAddressLimited(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	for i := range 6 {
		req, _ := http.NewRequest(http.MethodGet, e.url+"/api/v1/whoami", nil)
		req.Header.Set("Authorization", "Bearer jgp_guess"+strings.Repeat("x", i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if i == 5 && resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("sixth bad token: %s, want 429", resp.Status)
		}
	}

	c := browser(t, nil)
	page, err := c.Get(e.url + "/auth/login?return=/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp := e.op.SubmitLogin(t, c, page, carol.Name, carol.Password)
	if b := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(b, "carol@example.com") {
		t.Fatalf("browser login from the limited address: %s at %s: %s", resp.Status, resp.Request.URL, b)
	}

	status, b := postJSON(t, e.url+"/api/v1/auth/device", nil)
	if status != http.StatusOK {
		t.Fatalf("device login start from the limited address: %d %s", status, b)
	}
	var dl wire.DeviceLogin
	if err := json.Unmarshal(b, &dl); err != nil {
		t.Fatal(err)
	}
	poll := func() (int, []byte) {
		return postJSON(t, e.url+"/api/v1/auth/device/token", wire.DeviceTokenRequest{DeviceCode: dl.DeviceCode})
	}
	if status, b := poll(); status != http.StatusBadRequest || !strings.Contains(string(b), `"authorization_pending"`) {
		t.Fatalf("device poll from the limited address: %d %s, want authorization_pending", status, b)
	}
	e.op.ApproveDevice(t, browser(t, nil), dl.UserCode, carol.Name, carol.Password)
	deadline := time.Now().Add(20 * time.Second)
	for status, b = poll(); status == http.StatusBadRequest && time.Now().Before(deadline); status, b = poll() {
		time.Sleep(100 * time.Millisecond)
	}
	if status != http.StatusOK {
		t.Fatalf("device login from the limited address after approval: %d %s", status, b)
	}
	if evs := e.events(t, audit.LoginSucceeded); len(evs) != 2 {
		t.Errorf("%d login.succeeded events, want 2 (browser and device)", len(evs))
	}
}
