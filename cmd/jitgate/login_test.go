package main

import (
	"bytes"
	"context"
	"github.com/jitgate/jitgate/internal/testenv"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/oidc/oidctest"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// syncBuffer is testenv.Buffer under the name this file uses.
type syncBuffer = testenv.Buffer

// TestLoginLogout: jitgate login runs the device flow against a real
// OpenID provider, saves the session (0600) where whoami finds it, and
// jitgate logout revokes and forgets it.
func TestLoginLogout(t *testing.T) {
	user := oidctest.User{Name: "dave", Password: "pw-dave", Email: "dave@example.com", Groups: []string{"ops"}}
	op := oidctest.Start(t, user)
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "jitgate.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	sso, err := oidc.New(oidc.Config{Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: op.ClientSecret, Scopes: []string{"openid", "email", "groups"}})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := api.New(api.Deps{
		Store: st, Hub: api.NewHub(), Limits: policy.DefaultLimits(), AgentPollWait: 2 * time.Second, EnrollTokenTTL: time.Hour,
		Presence: api.NewPresence(st, 30*time.Second), Metrics: api.NewMetrics(reg, func() float64 { return 0 }, func() float64 { return 0 }),
		Registry: reg, Logger: slog.New(slog.DiscardHandler), SSO: sso,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	env := func(k string) string {
		if k == "XDG_CONFIG_HOME" {
			return dir
		}
		return ""
	}
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- runIO([]string{"login", "--server", srv.URL}, strings.NewReader(""), &stdout, &stderr, env)
	}()

	codeRE := regexp.MustCompile(`Open (\S+) and enter code (\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	var m []string
	for m = codeRE.FindStringSubmatch(stderr.String()); m == nil && time.Now().Before(deadline); m = codeRE.FindStringSubmatch(stderr.String()) {
		time.Sleep(20 * time.Millisecond)
	}
	if m == nil {
		t.Fatalf("login printed no code: %q", stderr.String())
	}
	jar, _ := cookiejar.New(nil)
	op.ApproveDevice(t, &http.Client{Jar: jar}, m[2], user.Name, user.Password)
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("login exited %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("login did not finish")
	}
	if !strings.Contains(stdout.String(), "Logged in as dave@example.com (groups: ops)") {
		t.Errorf("login said %q", stdout.String())
	}
	path := filepath.Join(dir, "jitgate", "config.yaml")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config file mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	for _, want := range []string{"server: " + srv.URL, "token: jgs_", "token_id: s-", "token_expires: "} {
		if !strings.Contains(string(data), want) {
			t.Errorf("config file lacks %q:\n%s", want, data)
		}
	}

	var out bytes.Buffer
	if code := runIO([]string{"whoami"}, strings.NewReader(""), &out, io.Discard, env); code != 0 || !strings.Contains(out.String(), "dave@example.com") {
		t.Errorf("whoami with the saved session: exit %d: %s", code, out.String())
	}
	secret := regexp.MustCompile(`token: (\S+)`).FindStringSubmatch(string(data))[1]

	out.Reset()
	if code := runIO([]string{"logout"}, strings.NewReader(""), &out, io.Discard, env); code != 0 {
		t.Fatalf("logout exited %d: %s", code, out.String())
	}
	data, _ = os.ReadFile(path)
	if strings.Contains(string(data), "token") || !strings.Contains(string(data), "server: "+srv.URL) {
		t.Errorf("config after logout:\n%s", data)
	}
	if _, err := st.Authenticate(context.Background(), secret, time.Now()); err == nil {
		t.Errorf("the session still works after logout")
	}
}
