package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// replica serves a second API on e's database, through a store of its own
// and an OpenID client of its own, as another server replica behind the
// same load balancer would: nothing is shared with the first but the
// database.
func (e *ssoEnv) replica(t *testing.T) string {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), e.path, store.DefaultConfig())
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	sso, err := oidc.New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	presence := api.NewPresence(st, time.Minute)
	reg := prometheus.NewRegistry()
	metrics := api.NewMetrics(reg, func() float64 { return 0 }, func() float64 { return 0 })
	h := api.New(api.Deps{
		Store: st, Hub: api.NewHub(), Limits: policy.DefaultLimits(), AgentPollWait: 30 * time.Second, EnrollTokenTTL: time.Hour,
		Presence: presence, Metrics: metrics, Registry: reg, Logger: slog.New(slog.DiscardHandler), SSO: sso,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e.op.AllowRedirect(srv.URL + "/auth/callback")
	return srv.URL
}

// TestBrowserLoginAcrossReplicas: a browser login begun at one replica is
// finished at another (the load balancer sent the callback elsewhere), and
// the session it yields works on both.
func TestBrowserLoginAcrossReplicas(t *testing.T) {
	t.Parallel()
	var b string
	e := newSSOEnv(t, nil, false)
	b = e.replica(t)
	// The provider sends the browser back to replica b.
	e.cfg.RedirectURL = b + "/auth/callback"
	a := e.replica(t)
	c := browser(t, nil)
	page, err := c.Get(a + "/auth/login?return=/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp := e.op.SubmitLogin(t, c, page, carol.Name, carol.Password)
	got := body(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Request.URL.String(), b) || !strings.Contains(got, "carol@example.com") {
		t.Fatalf("login begun at replica a, called back at b: %s at %s: %s", resp.Status, resp.Request.URL, got)
	}
	for _, url := range []string{a, b} {
		resp, err := c.Get(url + "/api/v1/whoami")
		if err != nil {
			t.Fatal(err)
		}
		if got := body(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(got, "carol@example.com") {
			t.Errorf("the session at %s: %s %s", url, resp.Status, got)
		}
	}
}

// TestDeviceLoginAcrossReplicas: the CLI begins a device login at one
// replica and polls another, which tells it the outcome once.
func TestDeviceLoginAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	b := e.replica(t)
	status, raw := postJSON(t, e.url+"/api/v1/auth/device", nil)
	if status != http.StatusOK {
		t.Fatalf("start: %d %s", status, raw)
	}
	var dl wire.DeviceLogin
	if err := json.Unmarshal(raw, &dl); err != nil {
		t.Fatal(err)
	}
	poll := func() (int, []byte) {
		return postJSON(t, b+"/api/v1/auth/device/token", wire.DeviceTokenRequest{DeviceCode: dl.DeviceCode})
	}
	if status, raw := poll(); status != http.StatusBadRequest || !strings.Contains(string(raw), `"authorization_pending"`) {
		t.Fatalf("replica b before approval: %d %s; want authorization_pending", status, raw)
	}
	e.op.ApproveDevice(t, browser(t, nil), dl.UserCode, carol.Name, carol.Password)
	deadline := time.Now().Add(20 * time.Second)
	for status, raw = poll(); status == http.StatusBadRequest && strings.Contains(string(raw), "authorization_pending") && time.Now().Before(deadline); status, raw = poll() {
		time.Sleep(100 * time.Millisecond)
	}
	if status != http.StatusOK || !strings.Contains(string(raw), "carol@example.com") {
		t.Fatalf("replica b after approval: %d %s; want carol's session", status, raw)
	}
	// Told once, whichever replica is asked next.
	if status, raw := postJSON(t, e.url+"/api/v1/auth/device/token", wire.DeviceTokenRequest{DeviceCode: dl.DeviceCode}); status != http.StatusBadRequest || !strings.Contains(string(raw), "expired_token") {
		t.Errorf("replica a after b told the outcome: %d %s; want expired_token", status, raw)
	}
}
