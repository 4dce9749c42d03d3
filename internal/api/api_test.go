package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// env is one server: a real SQLite store behind api.New.
type env struct {
	st      *store.Store
	handler http.Handler
	srv     *httptest.Server
	admin   string
	c       *client.Client    // admin client
	creds   map[string]string // agent credentials by target
	// recordings is the API's recordings directory (Deps.Recordings).
	recordings *recording.Dir
	// dbPath is the SQLite file of st (tests that change it behind the
	// server's back, as a database put back under a running server).
	dbPath string
}

func newEnv(tb testing.TB, trusted ...netip.Prefix) *env {
	tb.Helper()
	return newEnvWith(tb, func(d *api.Deps) { d.TrustedProxies = trusted })
}

// newEnvWith is newEnv with the API's dependencies adjusted by edit.
func newEnvWith(tb testing.TB, edit func(*api.Deps)) *env {
	tb.Helper()
	ctx := context.Background()
	dbPath := filepath.Join(tb.TempDir(), "j.db")
	st, err := store.OpenSQLite(ctx, dbPath, store.DefaultConfig())
	if err != nil {
		tb.Fatalf("OpenSQLite: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	e := newEnvOn(tb, st, edit)
	e.dbPath = dbPath
	return e
}

// newPostgresEnv is newEnv on a PostgreSQL store (testenv.Postgres): for
// what only PostgreSQL refuses (text it cannot hold).
func newPostgresEnv(tb testing.TB) *env {
	tb.Helper()
	return newPostgresEnvWith(tb, nil)
}

// newPostgresEnvWith is newPostgresEnv with the API's dependencies adjusted
// by edit (nil: as they are).
func newPostgresEnvWith(tb testing.TB, edit func(*api.Deps)) *env {
	tb.Helper()
	st, err := store.OpenPostgres(context.Background(), testenv.Postgres(tb), store.DefaultConfig())
	if err != nil {
		tb.Fatalf("OpenPostgres: %v", err)
	}
	tb.Cleanup(func() { st.Close() })
	return newEnvOn(tb, st, edit)
}

// newEnvOn serves the API on st.
func newEnvOn(tb testing.TB, st *store.Store, edit func(*api.Deps)) *env {
	tb.Helper()
	ctx := context.Background()
	hub := api.NewHub()
	st.Subscribe(hub.Notify)
	presence := api.NewPresence(st, time.Minute)
	reg := prometheus.NewRegistry()
	metrics := api.NewMetrics(reg, func() float64 {
		n, _ := st.CountRequests(context.Background(), access.Active)
		return float64(n)
	}, func() float64 { return float64(presence.Connected()) })
	deps := api.Deps{
		Store: st, Hub: hub, Limits: policy.DefaultLimits(),
		AgentPollWait: 30 * time.Second, EnrollTokenTTL: time.Hour, Presence: presence,
		Metrics: metrics, Registry: reg, Logger: slog.New(slog.DiscardHandler),
		FailedLogins: api.LoginLimit{Burst: -1}, // TestAuth sends many bad tokens on purpose
		SSHCA:        newCASigner(tb),
		Recordings:   newRecordingsDir(tb),
		// A fixed key: break-glass tests verify and forge with it.
		BreakGlassKey: testBreakGlassKey,
	}
	if edit != nil {
		edit(&deps)
	}
	h := api.New(deps)
	admin, err := st.CreateAdminToken(ctx, store.Actor{Name: "test"}, "alice", time.Now())
	if err != nil {
		tb.Fatalf("CreateAdminToken: %v", err)
	}
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	c, err := client.New(srv.URL, admin)
	if err != nil {
		tb.Fatalf("client.New: %v", err)
	}
	return &env{st: st, handler: h, srv: srv, admin: admin, c: c, creds: map[string]string{}, recordings: deps.Recordings}
}

// addTarget creates and enrolls a target and returns its agent client.
func (e *env) addTarget(tb testing.TB, name string, addrs ...string) *client.Client {
	tb.Helper()
	ctx := context.Background()
	tc, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: name})
	if err != nil {
		tb.Fatalf("CreateTarget %s: %v", name, err)
	}
	if tc.EnrollToken == "" {
		tb.Fatalf("CreateTarget %s: no enroll token", name)
	}
	anon, _ := client.New(e.srv.URL, "")
	er, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: name, Addresses: addrs, Version: "test"})
	if err != nil {
		tb.Fatalf("Enroll %s: %v", name, err)
	}
	if er.Target != name {
		tb.Fatalf("Enroll: target %q, want %q", er.Target, name)
	}
	e.creds[name] = er.Credential
	return anon.WithToken(er.Credential)
}

// approverEverywhere binds user:name as an approver of every target and
// returns a personal token of that user.
func (e *env) approverEverywhere(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: authz.Approver, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func (e *env) setPolicy(tb testing.TB, target string, p wire.Policy) {
	tb.Helper()
	if _, err := e.c.SetPolicy(context.Background(), target, p); err != nil {
		tb.Fatalf("SetPolicy %s: %v", target, err)
	}
}

// raw sends a request with the given bearer token ("" for none) and returns
// the status and body.
func (e *env) raw(tb testing.TB, method, path, token, contentType string, body io.Reader, hdr ...string) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func sshPolicy(sources ...string) wire.Policy {
	return wire.Policy{Rules: []wire.PortRule{{Port: 22, Protocol: "tcp", AllowedSources: sources, MaxDuration: wire.Duration(time.Hour)}}}
}

// grantedWeb01 is a server with target web-01 (its agent enrolled, 22/tcp
// gated) and one request of the admin's own address for 22: it returns the
// agent's client, the request as created, and the desired state the agent
// fetched once (it has not reported it yet).
func grantedWeb01(t *testing.T) (*env, *client.Client, wire.Request, wire.DesiredState) {
	t.Helper()
	return grantedWeb01With(t, nil, "my-ip", "deploy")
}

// grantedWeb01With is grantedWeb01 with the API's dependencies adjusted by
// edit and the request from source for reason.
func grantedWeb01With(t *testing.T, edit func(*api.Deps), source, reason string) (*env, *client.Client, wire.Request, wire.DesiredState) {
	t.Helper()
	e := newEnvWith(t, edit)
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	req := e.requestWeb01(t, source, reason)
	ds, err := agent.Desired(context.Background(), 0, 0)
	if err != nil {
		t.Fatalf("Desired: %v", err)
	}
	return e, agent, req, ds
}

// requestWeb01 asks, as the admin, for 22 on web-01 from source for 30
// minutes.
func (e *env) requestWeb01(t *testing.T, source, reason string) wire.Request {
	t.Helper()
	req, err := e.c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: source,
		Duration: wire.Duration(30 * time.Minute), Reason: reason})
	if err != nil {
		t.Fatalf("CreateRequest from %s: %v", source, err)
	}
	return req
}

func TestFullFlow(t *testing.T) {
	e, agent, req, ds := grantedWeb01(t)
	ctx := context.Background()
	if req.State != "pending" || req.Source != "127.0.0.1/32" || req.Requester != "alice" {
		t.Fatalf("created request = %+v, want pending from 127.0.0.1/32 by alice", req)
	}
	want := wire.GrantEntry{Source: "127.0.0.1/32", Protocol: "tcp", Port: 22}
	var found bool
	for _, g := range ds.Grants {
		if g.Source == want.Source && g.Protocol == want.Protocol && g.Port == want.Port {
			found = true
			if !g.ExpiresAt.Equal(req.ExpiresAt) {
				t.Errorf("grant expires %v, request %v", g.ExpiresAt, req.ExpiresAt)
			}
		}
	}
	if !found {
		t.Fatalf("desired grants %+v lack %+v", ds.Grants, want)
	}
	if len(ds.Protected) != 1 || ds.Protected[0] != (wire.Port{Port: 22, Protocol: "tcp"}) {
		t.Errorf("protected = %+v, want [22/tcp]", ds.Protected)
	}
	if ds.Target != "web-01" || ds.Revision <= 0 {
		t.Errorf("desired target %q revision %d", ds.Target, ds.Revision)
	}

	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, ApplyMillis: 1.5, Elements: 1}); err != nil {
		t.Fatalf("Report: %v", err)
	}
	got, err := e.c.Request(ctx, req.ID)
	if err != nil {
		t.Fatalf("Request: %v", err)
	}
	if got.State != "active" || got.ActivatedAt == nil {
		t.Fatalf("after report: state %q activated %v, want active", got.State, got.ActivatedAt)
	}
	if !slices.Equal(got.Connect, []string{"ssh 198.51.100.10"}) {
		t.Errorf("connect = %q, want [ssh 198.51.100.10]", got.Connect)
	}
	tgt, err := e.c.Target(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if tgt.Agent.AppliedRevision != ds.Revision || tgt.Agent.State != "connected" {
		t.Errorf("agent status %+v, want applied %d, connected", tgt.Agent, ds.Revision)
	}

	rv, err := e.c.Revoke(ctx, req.ID, "done")
	if err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if rv.State != "revoked" || len(rv.Connect) != 0 {
		t.Errorf("revoked request = %+v", rv)
	}
	ds2, err := agent.Desired(ctx, ds.Revision, 0)
	if err != nil {
		t.Fatalf("Desired after revoke: %v", err)
	}
	if ds2.Revision <= ds.Revision || len(ds2.Grants) != 0 {
		t.Errorf("after revoke: revision %d (was %d), grants %+v; want higher revision, no grants", ds2.Revision, ds.Revision, ds2.Grants)
	}

	events, err := e.c.Audit(ctx, client.AuditFilter{Target: "web-01"})
	if err != nil {
		t.Fatalf("Audit: %v", err)
	}
	var actions []string
	for _, ev := range events {
		actions = append(actions, ev.Action)
	}
	wantActions := []string{"target.added", "agent.enrolled", "policy.set", "request.created", "agent.connected", "request.activated", "request.revoked"}
	if !slices.Equal(actions, wantActions) {
		t.Errorf("audit actions = %q, want %q", actions, wantActions)
	}
	for _, ev := range events {
		if ev.Action == "request.revoked" && (ev.RequestID != req.ID || ev.Actor != "alice") {
			t.Errorf("revoke event %+v: want request %s by alice", ev, req.ID)
		}
	}
}

func TestLongPolls(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())

	cur, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	// No wait: answers at once even though nothing is newer.
	start := time.Now()
	ds, err := agent.Desired(ctx, cur.Revision, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second || ds.Revision != cur.Revision {
		t.Errorf("Desired without wait took %v, revision %d; want immediate answer at %d", d, ds.Revision, cur.Revision)
	}

	// A waiting poll wakes when a request is created.
	type result struct {
		ds  wire.DesiredState
		err error
		d   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		ds, err := agent.Desired(ctx, cur.Revision, 5*time.Second)
		done <- result{ds, err, time.Since(start)}
	}()
	time.Sleep(100 * time.Millisecond)
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(time.Minute), Reason: "poll"})
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Desired long-poll: %v", r.err)
	}
	if r.d > time.Second || r.ds.Revision <= cur.Revision || len(r.ds.Grants) != 1 {
		t.Fatalf("long-poll took %v, revision %d (after %d), grants %+v; want < 1s with the new grant", r.d, r.ds.Revision, cur.Revision, r.ds.Grants)
	}

	// WaitRequest returns once the agent reports.
	type wres struct {
		req wire.Request
		err error
		d   time.Duration
	}
	wdone := make(chan wres, 1)
	go func() {
		start := time.Now()
		got, err := e.c.WaitRequest(ctx, req.ID, "pending", 5*time.Second)
		wdone <- wres{got, err, time.Since(start)}
	}()
	time.Sleep(200 * time.Millisecond)
	reported := time.Now()
	if err := agent.Report(ctx, wire.AgentReport{Revision: r.ds.Revision}); err != nil {
		t.Fatal(err)
	}
	w := <-wdone
	if w.err != nil {
		t.Fatalf("WaitRequest: %v", w.err)
	}
	if w.req.State != "active" || time.Since(reported) > time.Second {
		t.Fatalf("WaitRequest gave state %q after %v (%v after the report); want active promptly", w.req.State, w.d, time.Since(reported))
	}
	if w.d < 150*time.Millisecond {
		t.Errorf("WaitRequest answered after %v, before the report", w.d)
	}

	// A state that already differs answers at once.
	start = time.Now()
	got, err := e.c.WaitRequest(ctx, req.ID, "pending", 5*time.Second)
	if err != nil || got.State != "active" || time.Since(start) > time.Second {
		t.Errorf("WaitRequest on a changed state: %q, %v after %v", got.State, err, time.Since(start))
	}
}

func TestTrustedProxy(t *testing.T) {
	body := `{"target":"web-01","ports":["22"],"source":"my-ip","duration":"5m","reason":"xff"}`
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, "203.0.113.7/32"},
		{"untrusted", nil, "127.0.0.1/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.trusted...)
			e.addTarget(t, "web-01")
			e.setPolicy(t, "web-01", sshPolicy())
			status, b := e.raw(t, http.MethodPost, "/api/v1/requests", e.admin, "application/json", strings.NewReader(body),
				"X-Forwarded-For", "203.0.113.7")
			if status != http.StatusCreated {
				t.Fatalf("status %d: %s", status, b)
			}
			var got wire.Request
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.Source != tc.want {
				t.Errorf("source = %q, want %q", got.Source, tc.want)
			}
		})
	}
}

type route struct{ method, path string }

var (
	humanRoutes = []route{
		{"GET", "/api/v1/openapi.json"}, {"GET", "/metrics"}, {"GET", "/api/v1/whoami"},
		{"POST", "/api/v1/targets"}, {"GET", "/api/v1/targets"}, {"GET", "/api/v1/targets/web-01"},
		{"DELETE", "/api/v1/targets/web-01"}, {"PUT", "/api/v1/targets/web-01/policy"},
		{"GET", "/api/v1/targets/web-01/policy"}, {"DELETE", "/api/v1/targets/web-01/policy"},
		{"POST", "/api/v1/requests"}, {"GET", "/api/v1/requests"}, {"GET", "/api/v1/requests/r-x"},
		{"POST", "/api/v1/requests/r-x/revoke"}, {"GET", "/api/v1/audit"},
	}
	agentRoutes = []route{{"GET", "/api/v1/agent/desired"}, {"POST", "/api/v1/agent/report"}}
)

func bodyFor(method string) (io.Reader, string) {
	if method == "POST" || method == "PUT" {
		return strings.NewReader("{}"), "application/json"
	}
	return nil, ""
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())

	if status, b := e.raw(t, "GET", "/healthz", "", "", nil); status != http.StatusOK || !strings.Contains(string(b), "ok") {
		t.Errorf("/healthz: %d %s", status, b)
	}

	all := append(append(slices.Clone(humanRoutes), agentRoutes...), route{"POST", "/api/v1/agent/enroll"})
	for _, r := range all {
		for _, tok := range []string{"", "garbage", "jga_" + strings.Repeat("A", 43)} {
			body, ct := bodyFor(r.method)
			status, b := e.raw(t, r.method, r.path, tok, ct, body)
			if status != http.StatusUnauthorized {
				t.Errorf("%s %s with token %q: %d, want 401 (%s)", r.method, r.path, tok, status, b)
				continue
			}
			checkErrorBody(t, r.method+" "+r.path, b, "token")
		}
	}

	// An agent credential may not use human endpoints.
	cred := e.creds["web-01"]
	for _, r := range humanRoutes {
		body, ct := bodyFor(r.method)
		if status, b := e.raw(t, r.method, r.path, cred, ct, body); status != http.StatusForbidden {
			t.Errorf("%s %s with agent credential: %d, want 403 (%s)", r.method, r.path, status, b)
		}
	}
	// Nor an admin token agent endpoints (nor enroll: it is not an enroll token).
	for _, r := range agentRoutes {
		body, ct := bodyFor(r.method)
		if status, b := e.raw(t, r.method, r.path, e.admin, ct, body); status != http.StatusForbidden {
			t.Errorf("%s %s with admin token: %d, want 403 (%s)", r.method, r.path, status, b)
		}
	}
	if status, _ := e.raw(t, "POST", "/api/v1/agent/enroll", e.admin, "application/json", strings.NewReader("{}")); status != http.StatusUnauthorized {
		t.Errorf("enroll with admin token: %d, want 401", status)
	}
	// The 403s changed nothing: the target and its policy are still there.
	if _, err := e.c.Policy(ctx, "web-01"); err != nil {
		t.Fatalf("policy after forbidden calls: %v", err)
	}

	// /metrics with a token.
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	status, b := e.raw(t, "GET", "/metrics", e.admin, "", nil)
	if status != http.StatusOK || !strings.Contains(string(b), `jitgate_requests_total{outcome="created"} 1`) {
		t.Errorf("/metrics: %d, lacks jitgate_requests_total created 1:\n%s", status, b)
	}

	// Removing the target tells its agent, whenever it calls next, that the
	// target is gone (410: it removes its table and stops), rather than
	// refusing it (401: it would stop and leave the table behind).
	if _, err := agent.Desired(ctx, 0, 0); err != nil {
		t.Fatalf("Desired before removal: %v", err)
	}
	if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
		t.Fatalf("RemoveTarget: %v", err)
	}
	_, err := agent.Desired(ctx, 0, 0)
	if client.StatusOf(err) != http.StatusGone {
		t.Errorf("Desired after target removal: %v (status %d), want 410", err, client.StatusOf(err))
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: 1}); client.StatusOf(err) != http.StatusGone {
		t.Errorf("Report after target removal: %v, want 410", err)
	}
	// The credential still cannot reach anything else.
	for _, r := range humanRoutes {
		body, ct := bodyFor(r.method)
		if status, b := e.raw(t, r.method, r.path, cred, ct, body); status != http.StatusForbidden {
			t.Errorf("%s %s with a removed target's agent credential: %d, want 403 (%s)", r.method, r.path, status, b)
		}
	}
	// A new target of the same name does not inherit the old credential.
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Desired(ctx, 0, 0); client.StatusOf(err) != http.StatusUnauthorized {
		t.Errorf("old agent credential after the name was reused: %v, want 401", err)
	}
}

// checkErrorBody asserts b is a JSON wire.Error whose message contains want.
func checkErrorBody(t *testing.T, what string, b []byte, want string) wire.Error {
	t.Helper()
	var we wire.Error
	if err := json.Unmarshal(b, &we); err != nil {
		t.Errorf("%s: body is not JSON: %v: %q", what, err, b)
		return we
	}
	if we.Error == "" {
		t.Errorf("%s: empty error in %s", what, b)
	}
	if !strings.Contains(strings.ToLower(we.Error), strings.ToLower(want)) {
		t.Errorf("%s: error %q does not mention %q", what, we.Error, want)
	}
	return we
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	old, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Revoke(ctx, old.ID, ""); err != nil {
		t.Fatal(err)
	}

	const (
		reqs = "/api/v1/requests"
		pol  = "/api/v1/targets/web-01/policy"
		js   = "application/json"
	)
	req := func(ports, source, duration string) string {
		return `{"target":"web-01","ports":[` + ports + `],"source":"` + source + `","duration":"` + duration + `","reason":"x"}`
	}
	policyBody := func(port, sources, maxDur string) string {
		return `{"rules":[{"port":` + port + `,"protocol":"tcp","allowed_sources":[` + sources + `],"max_duration":"` + maxDur + `"}]}`
	}
	big := `{"target":"web-01","ports":["22"],"duration":"1m","reason":"` + strings.Repeat("a", 1<<20+10) + `"}`
	tests := []struct {
		name, method, path, ct, body string
		status                       int
		want                         string // substring of the error
		rule                         string
	}{
		{"malformed JSON", "POST", reqs, js, `{"target":"web-01",`, 400, "malformed JSON", ""},
		{"syntax error", "POST", reqs, js, `{"target" "web-01"}`, 400, "malformed JSON", ""},
		{"unknown field", "POST", reqs, js, `{"target":"web-01","ports":["22"],"duration":"1m","bogus":1}`, 400, `unknown field "bogus"`, ""},
		{"unknown field policy", "PUT", pol, js, `{"rules":[{"port":22,"colour":"red"}]}`, 400, "colour", ""},
		{"wrong type", "POST", reqs, js, `{"target":"web-01","ports":"22","duration":"1m"}`, 400, "ports", ""},
		{"empty body", "POST", reqs, js, ``, 400, "empty", ""},
		{"empty policy body", "PUT", pol, js, ``, 400, "empty", ""},
		{"two JSON values", "POST", reqs, js, req(`"22"`, "my-ip", "1m") + `{}`, 400, "more than one JSON value", ""},
		{"trailing brace", "POST", reqs, js, req(`"22"`, "my-ip", "1m") + `}`, 400, "more than one JSON value", ""},
		{"trailing bracket", "PUT", pol, js, policyBody("22", `"10.0.0.0/8"`, "2h") + `]`, 400, "more than one JSON value", ""},
		{"oversized", "POST", reqs, js, big, 413, "larger than", ""},
		{"oversized policy", "PUT", pol, js, `{"rules":[` + strings.Repeat(`{"port":22},`, 1<<17) + `{"port":22}]}`, 413, "larger than", ""},
		{"wrong content type", "POST", reqs, "text/plain", req(`"22"`, "my-ip", "1m"), 415, "Content-Type", ""},
		{"form content type", "PUT", pol, "application/x-www-form-urlencoded", policyBody("22", "", "1h"), 415, "Content-Type", ""},
		{"port 0", "POST", reqs, js, req(`"0"`, "my-ip", "1m"), 422, "ports[0]", ""},
		{"port 65536", "POST", reqs, js, req(`"22","65536"`, "my-ip", "1m"), 422, "ports[1]", ""},
		{"port icmp", "POST", reqs, js, req(`"22/icmp"`, "my-ip", "1m"), 422, "tcp or udp", ""},
		{"no ports", "POST", reqs, js, req(``, "my-ip", "1m"), 422, "ports", ""},
		{"duplicate ports", "POST", reqs, js, req(`"22","22/tcp"`, "my-ip", "1m"), 422, "twice", ""},
		{"policy port 0", "PUT", pol, js, policyBody("0", "", "1h"), 422, "rules[0].port", ""},
		{"policy port 65536", "PUT", pol, js, policyBody("65536", "", "1h"), 400, "port", ""},
		{"policy bad protocol", "PUT", pol, js, `{"rules":[{"port":22,"protocol":"icmp"}]}`, 422, "protocol", ""},
		{"policy no rules", "PUT", pol, js, `{"rules":[]}`, 422, "rules", ""},
		{"policy bad CIDR", "PUT", pol, js, policyBody("22", `"10.0.0.0/33"`, "1h"), 422, "allowed_sources[0]", ""},
		{"policy not a CIDR", "PUT", pol, js, policyBody("22", `"10.0.0.0/8","banana"`, "1h"), 422, "allowed_sources[1]", ""},
		{"request bad CIDR", "POST", reqs, js, req(`"22"`, "10.0.0.0/33", "1m"), 422, "source", ""},
		{"request bad address", "POST", reqs, js, req(`"22"`, "127.0.0.300", "1m"), 422, "source", ""},
		{"duration 0s", "POST", reqs, js, req(`"22"`, "my-ip", "0s"), 422, "duration", ""},
		{"duration negative", "POST", reqs, js, req(`"22"`, "my-ip", "-1h"), 422, "duration", ""},
		{"duration abc", "POST", reqs, js, req(`"22"`, "my-ip", "abc"), 400, "duration", ""},
		{"duration number", "POST", reqs, js, `{"target":"web-01","ports":["22"],"duration":60}`, 400, "duration", ""},
		{"duration above rule max", "POST", reqs, js, req(`"22"`, "my-ip", "2h"), 403, "exceeds the maximum", "22/tcp"},
		{"policy max_duration 1m", "PUT", pol, js, policyBody("22", "", "1m"), 422, "max_duration", ""},
		{"policy max_duration 25h", "PUT", pol, js, policyBody("22", "", "25h"), 422, "max_duration", ""},
		{"policy max_duration negative", "PUT", pol, js, policyBody("22", "", "-1h"), 422, "max_duration", ""},
		{"unknown target request", "POST", reqs, js, `{"target":"nope","ports":["22"],"duration":"1m"}`, 404, `"nope"`, ""},
		{"unknown target policy", "PUT", "/api/v1/targets/nope/policy", js, policyBody("22", "", "1h"), 404, `"nope"`, ""},
		{"unknown target get", "GET", "/api/v1/targets/nope", "", "", 404, `"nope"`, ""},
		{"unknown target delete", "DELETE", "/api/v1/targets/nope", "", "", 404, `"nope"`, ""},
		{"no target", "POST", reqs, js, `{"ports":["22"],"duration":"1m"}`, 422, "target", ""},
		{"port outside the policy", "POST", reqs, js, req(`"3389"`, "my-ip", "1m"), 403, "does not configure", "3389/tcp"},
		{"source outside the policy", "POST", reqs, js, req(`"22"`, "192.0.2.1", "1m"), 403, "not inside", "22/tcp"},
		{"source too wide", "POST", reqs, js, req(`"22"`, "0.0.0.0/0", "1m"), 403, "not inside", "22/tcp"},
		{"reason too long", "POST", reqs, js, `{"target":"web-01","ports":["22"],"duration":"1m","reason":"` + strings.Repeat("r", 1001) + `"}`, 422, "reason", ""},
		{"revoke unknown", "POST", "/api/v1/requests/r-nosuch/revoke", "", "", 404, "r-nosuch", ""},
		{"revoke revoked", "POST", "/api/v1/requests/" + old.ID + "/revoke", js, `{"reason":"again"}`, 409, old.ID, ""},
		{"revoke bad body", "POST", "/api/v1/requests/" + old.ID + "/revoke", js, `{"why":"x"}`, 400, "unknown field", ""},
		{"get unknown request", "GET", "/api/v1/requests/r-nosuch", "", "", 404, "r-nosuch", ""},
		{"state filter", "GET", reqs + "?state=bogus", "", "", 422, "state", ""},
		{"limit filter", "GET", reqs + "?limit=0", "", "", 422, "limit", ""},
		{"wait", "GET", "/api/v1/requests/" + old.ID + "?wait=abc&state=revoked", "", "", 422, "wait", ""},
		{"audit since", "GET", "/api/v1/audit?since=yesterday", "", "", 422, "since", ""},
		{"no such endpoint", "GET", "/api/v2/things", "", "", 404, "no such endpoint", ""},
	}

	type snapshot struct {
		targets, requests int
		revision          int64
	}
	snap := func() snapshot {
		ts, err := e.st.ListTargets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := e.st.ListRequests(ctx, store.RequestFilter{Limit: 10000})
		if err != nil {
			t.Fatal(err)
		}
		tg, err := e.st.GetTarget(ctx, "web-01")
		if err != nil {
			t.Fatal(err)
		}
		return snapshot{len(ts), len(rs), tg.Revision}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snap()
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			status, b := e.raw(t, tc.method, tc.path, e.admin, tc.ct, body)
			if status != tc.status {
				t.Errorf("status %d, want %d: %.300s", status, tc.status, b)
			}
			we := checkErrorBody(t, tc.name, b, tc.want)
			if we.Rule != tc.rule {
				t.Errorf("rule %q, want %q", we.Rule, tc.rule)
			}
			if after := snap(); after != before {
				t.Errorf("state changed: before %+v, after %+v", before, after)
			}
		})
	}
}

// fuzzEnv is a server with web-01 (policy on 22/tcp per request, 3389 from
// 10/8, 53/udp) for the fuzzers.
func fuzzEnv(f *testing.F) *env {
	e := newEnv(f)
	e.addTarget(f, "web-01", "198.51.100.10", "2001:db8::10")
	e.setPolicy(f, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22},
		{Port: 3389, AllowedSources: []string{"10.0.0.0/8", "2001:db8::/32"}, MaxDuration: wire.Duration(time.Hour)},
		{Port: 53, Protocol: "udp", MaxDuration: wire.Duration(24 * time.Hour)},
	}})
	return e
}

func fuzzServe(t *testing.T, e *env, method, path string, body []byte) {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.admin)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body)
	}
	if rec.Code >= 400 {
		var we wire.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &we); err != nil || we.Error == "" {
			t.Fatalf("%s %s %q: %d with body %q", method, path, body, rec.Code, rec.Body)
		}
	}
}

func FuzzCreateRequestBody(f *testing.F) {
	for _, s := range []string{
		`{"target":"web-01","ports":["22"],"duration":"1h","reason":"x"}`,
		`{"target":"web-01","ports":["22","53/udp"],"source":"192.0.2.1","duration":"90s"}`,
		`{"target":"web-01","ports":["3389/tcp"],"source":"10.1.2.0/24","duration":"30m"}`,
		`{"target":"web-01","ports":["22"],"source":"::ffff:10.0.0.1","duration":"1m"}`,
		`{"target":"web-01","ports":["22"],"source":"2001:db8::1/128","duration":"1m"}`,
		`{"target":"web-01","ports":["0"],"source":"fe80::1%eth0","duration":"-1h"}`,
		`{"target":"nope","ports":["22"],"duration":"1h"}`,
		`{"target":"web-01","ports":["65536/udp"],"duration":"99999999h"}`,
		`{"target":"web-01"}{}`,
		`[1,2,3]`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	e := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzServe(t, e, http.MethodPost, "/api/v1/requests", body)
	})
}

func FuzzPolicyBody(f *testing.F) {
	for _, s := range []string{
		`{"rules":[{"port":22}]}`,
		`{"rules":[{"port":22,"protocol":"tcp","allowed_sources":["10.0.0.0/8"],"max_duration":"1h"}]}`,
		`{"rules":[{"port":53,"protocol":"UDP","allowed_sources":["::ffff:10.0.0.0/104","2001:db8::/32"],"max_duration":"24h"}]}`,
		`{"rules":[{"port":22},{"port":22,"protocol":"tcp"}]}`,
		`{"rules":[{"port":0,"protocol":"icmp","max_duration":"-5m"}]}`,
		`{"rules":[{"port":65535,"allowed_sources":["0.0.0.0/0","::/0"],"max_duration":"5m"}]}`,
		`{"rules":null}`,
		`{"rules":[null]}`,
		`{}`,
		`"x"`,
	} {
		f.Add([]byte(s))
	}
	e := fuzzEnv(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzServe(t, e, http.MethodPut, "/api/v1/targets/web-01/policy", body)
	})
}

// TestReportIsOneCommit: an agent's report that activates a request and
// carries its mode and the gate's counters is recorded in one transaction
// (one commit, one fsync), and all of it is recorded. Before, the mode and
// counters were committed first and the revision in a second transaction,
// so the activation waited for two fsyncs.
func TestReportIsOneCommit(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "my-ip",
		Duration: wire.Duration(30 * time.Minute), Reason: "deploy"})
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatalf("Desired: %v", err)
	}
	commits, _ := e.st.WriteStats()
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Mode: "host",
		Blocked: []wire.BlockedCounter{{Protocol: "tcp", Port: 22, Packets: 7, Connections: 5}}}); err != nil {
		t.Fatalf("Report: %v", err)
	}
	if after, _ := e.st.WriteStats(); after-commits != 1 {
		t.Errorf("the report took %d commits, want 1", after-commits)
	}
	got, err := e.c.Request(ctx, req.ID)
	if err != nil || got.State != "active" {
		t.Fatalf("after the report: %+v, %v; want active", got, err)
	}
	tg, err := e.st.GetTarget(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Mode != "host" {
		t.Errorf("recorded mode %q, want host", tg.Mode)
	}
	b, err := e.st.BlockedFor(ctx, tg, time.Now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Counters) != 1 || b.Counters[0].Packets != 7 {
		t.Errorf("recorded counters %+v, want the reported ones", b.Counters)
	}
}
