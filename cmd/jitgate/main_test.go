package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// testServer is a real jitgate API on a temporary SQLite store.
type testServer struct {
	url, token string
	// requestCalls counts the HTTP exchanges on /api/v1/requests and
	// below (creates, long-polls on requests).
	requestCalls *atomic.Int64
}

func newTestServer(t *testing.T) testServer {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "jitgate.db"), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	token, err := st.CreateAdminToken(ctx, store.Actor{Name: "test"}, "admin", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	hub := api.NewHub()
	st.Subscribe(hub.Notify)
	presence := api.NewPresence(st, 30*time.Second)
	reg := prometheus.NewRegistry()
	metrics := api.NewMetrics(reg, func() float64 { return 0 }, func() float64 { return 0 })
	h := api.New(api.Deps{
		Store: st, Hub: hub, Limits: policy.DefaultLimits(), AgentPollWait: 2 * time.Second,
		EnrollTokenTTL: time.Hour, Presence: presence, Metrics: metrics, Registry: reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	calls := new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/v1/requests") {
			calls.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return testServer{url: srv.URL, token: token, requestCalls: calls}
}

// cli runs the CLI in-process with a fixed environment.
type cli struct {
	t   *testing.T
	env map[string]string
}

// enrollAgent enrolls an agent on s with the enrollment token 'target add'
// printed and returns a client that holds the agent's credential.
func enrollAgent(t *testing.T, s testServer, token string, er wire.EnrollRequest) *client.Client {
	t.Helper()
	anon, err := client.New(s.url, "")
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := anon.Enroll(context.Background(), token, er)
	if err != nil {
		t.Fatal(err)
	}
	return anon.WithToken(enrolled.Credential)
}

// applyDesired has agent fetch the current desired state and report it
// applied, as a real agent would.
func applyDesired(t *testing.T, agent *client.Client) {
	t.Helper()
	ctx := context.Background()
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
}

// newCLI returns a CLI configured for s through the environment, with an
// empty config directory so the user's own file is never read.
func newCLI(t *testing.T, s testServer) *cli {
	return &cli{t: t, env: map[string]string{
		"JITGATE_SERVER":  s.url,
		"JITGATE_TOKEN":   s.token,
		"XDG_CONFIG_HOME": t.TempDir(),
	}}
}

type result struct {
	code           int
	stdout, stderr string
}

func (c *cli) run(args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	code := runIO(args, strings.NewReader(""), &out, &errb, func(k string) string { return c.env[k] })
	return result{code, out.String(), errb.String()}
}

// ok runs args and fails the test unless they succeed.
func (c *cli) ok(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("jitgate %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// checkOneLineError checks a runtime error: exit 1, one stderr line
// starting with "error:".
func checkOneLineError(t *testing.T, r result, want ...string) {
	t.Helper()
	if r.code != exitError {
		t.Errorf("exit %d, want %d (stderr %q)", r.code, exitError, r.stderr)
	}
	checkErrorLine(t, r, 1, want...)
}

// checkErrorLine checks stderr has n lines, the first an "error:" line
// holding each of want.
func checkErrorLine(t *testing.T, r result, n int, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != n || !strings.HasPrefix(lines[0], "error: ") {
		t.Fatalf("stderr = %q, want %d line(s) starting with \"error: \"", r.stderr, n)
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("error line %q does not mention %q", lines[0], w)
		}
	}
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding JSON %q: %v", s, err)
	}
	return v
}

func TestTarget(t *testing.T) {
	c := newCLI(t, newTestServer(t))

	r := c.ok("target", "add", "web-01", "--label", "env=prod", "--output", "json")
	added := decode[struct {
		Target struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"target"`
		EnrollToken  string `json:"enroll_token"`
		AgentCommand string `json:"agent_command"`
	}](t, r.stdout)
	if added.Target.Name != "web-01" || added.Target.Labels["env"] != "prod" {
		t.Errorf("target = %+v", added.Target)
	}
	if added.EnrollToken == "" || added.AgentCommand == "" {
		t.Fatalf("enroll_token %q, agent_command %q: want both set", added.EnrollToken, added.AgentCommand)
	}
	if !strings.Contains(added.AgentCommand, added.EnrollToken) || !strings.Contains(added.AgentCommand, c.env["JITGATE_SERVER"]) {
		t.Errorf("agent_command %q lacks the token or the server", added.AgentCommand)
	}

	r = c.ok("target", "add", "db-01")
	tok := regexp.MustCompile(`\S*jge_\S+`).FindAllString(r.stdout, -1)
	// The token appears once on its own and once in the agent command.
	if !strings.Contains(r.stdout, "target db-01 added") || !strings.Contains(r.stdout, "shown once") {
		t.Errorf("text output:\n%s", r.stdout)
	}
	if len(tok) == 0 {
		t.Fatalf("no token in text output:\n%s", r.stdout)
	}
	if n := strings.Count(r.stdout, "Enrollment token"); n != 1 {
		t.Errorf("\"Enrollment token\" appears %d times:\n%s", n, r.stdout)
	}
	if !strings.Contains(r.stdout, "jitgate agent --server "+c.env["JITGATE_SERVER"]+" --enroll-token "+tok[0]) {
		t.Errorf("text output lacks the agent command with the token %s:\n%s", tok[0], r.stdout)
	}

	r = c.ok("target", "list")
	for _, w := range []string{"NAME", "web-01", "db-01", "env=prod", "not enrolled"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("target list lacks %q:\n%s", w, r.stdout)
		}
	}
	r = c.ok("target", "list", "-o", "json")
	if list := decode[[]struct{ Name string }](t, r.stdout); len(list) != 2 {
		t.Errorf("target list json = %s", r.stdout)
	}
	r = c.ok("target", "show", "web-01")
	for _, w := range []string{"Name:", "web-01", "env=prod", "none (no port is gated)"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("target show lacks %q:\n%s", w, r.stdout)
		}
	}

	checkOneLineError(t, c.run("target", "add", "web-01"), "web-01")
	checkOneLineError(t, c.run("target", "show", "nope"))

	c.ok("target", "remove", "db-01", "--yes")
	checkOneLineError(t, c.run("target", "show", "db-01"))
}

func TestPolicy(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")

	set := []string{"policy", "set", "web-01", "--port", "22/tcp", "--max", "3h", "--source", "198.51.100.0/24"}
	if r := c.ok(set...); !strings.Contains(r.stdout, "web-01: policy set") {
		t.Errorf("first set:\n%s", r.stdout)
	}
	if r := c.ok(set...); !strings.Contains(r.stdout, "web-01: unchanged") {
		t.Errorf("second set:\n%s", r.stdout)
	}
	r := c.ok("policy", "show", "web-01")
	for _, w := range []string{"22/tcp", "3h", "198.51.100.0/24"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("policy show lacks %q:\n%s", w, r.stdout)
		}
	}
	r = c.ok("policy", "show", "web-01", "-o", "json")
	if p := decode[struct {
		Rules []struct {
			Port uint16 `json:"port"`
		} `json:"rules"`
	}](t, r.stdout); len(p.Rules) != 1 || p.Rules[0].Port != 22 {
		t.Errorf("policy show json = %s", r.stdout)
	}
	if r := c.ok("policy", "remove", "web-01", "--yes"); !strings.Contains(r.stdout, "policy removed") {
		t.Errorf("policy remove:\n%s", r.stdout)
	}
	if r := c.ok("target", "show", "web-01"); !strings.Contains(r.stdout, "none (no port is gated)") {
		t.Errorf("policy still shown after remove:\n%s", r.stdout)
	}
}

func TestApply(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("target", "add", "db-01")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", `policies:
  - target: web-01
    rules:
      - port: 22
        protocol: tcp
        max_duration: 3h
        allowed_sources: [198.51.100.0/24]
  - target: db-01
    rules:
      - port: 5432
        max_duration: 1h
        allowed_sources: [198.51.100.0/24]
`)
	r := c.ok("apply", "-f", good)
	if !strings.Contains(r.stdout, "web-01: policy set") || !strings.Contains(r.stdout, "db-01: policy set") {
		t.Errorf("first apply:\n%s", r.stdout)
	}
	r = c.ok("apply", "-f", good)
	if !strings.Contains(r.stdout, "web-01: unchanged") || !strings.Contains(r.stdout, "db-01: unchanged") {
		t.Errorf("second apply:\n%s", r.stdout)
	}
	if r := c.ok("policy", "show", "db-01"); !strings.Contains(r.stdout, "5432/tcp") {
		t.Errorf("policy show after apply:\n%s", r.stdout)
	}

	bad := write("bad.yaml", `policies:
  - target: web-01
    rules:
      - port: 22
        colour: blue
`)
	r = c.run("apply", "-f", bad)
	if r.code == 0 {
		t.Fatalf("apply of a file with an unknown key succeeded:\n%s", r.stdout)
	}
	checkErrorLine(t, r, 1, "line 5", "colour")

	r = c.run("apply", "-f", filepath.Join(dir, "missing.yaml"))
	if r.code == 0 {
		t.Error("apply of a missing file succeeded")
	}
	checkErrorLine(t, r, 1, "missing.yaml")
}

func TestRequest(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--max", "3h", "--source", "198.51.100.0/24")

	r := c.ok("request", "web-01", "--port", "22", "--duration", "1h", "--source", "198.51.100.7", "--reason", "x", "--output", "json")
	req := decode[struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}](t, r.stdout)
	if req.ID == "" || req.State != "pending" {
		t.Fatalf("request = %+v, want an id and state pending", req)
	}

	checkOneLineError(t, c.run("request", "web-01", "--port", "22", "--duration", "1h", "--source", "203.0.113.7", "--reason", "x"), "22/tcp")

	r = c.ok("requests", "--active")
	for _, w := range []string{"ID", req.ID, "web-01", "pending"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("requests --active lacks %q:\n%s", w, r.stdout)
		}
	}
	r = c.ok("requests", req.ID)
	for _, w := range []string{"Request:", req.ID, "198.51.100.7", "pending", "Reason:"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("requests ID lacks %q:\n%s", w, r.stdout)
		}
	}
	if r := c.ok("revoke", req.ID, "--reason", "done", "--yes"); !strings.Contains(r.stdout, "request "+req.ID+" revoked") {
		t.Errorf("revoke:\n%s", r.stdout)
	}
	r = c.ok("requests", req.ID, "-o", "json")
	if got := decode[struct{ State string }](t, r.stdout); got.State != "revoked" {
		t.Errorf("state after revoke = %q", got.State)
	}
	if r := c.ok("requests", "--active"); strings.Contains(r.stdout, req.ID) {
		t.Errorf("revoked request still listed as active:\n%s", r.stdout)
	}

	r = c.ok("audit", "--target", "web-01", "--output", "json")
	events := decode[[]struct {
		Action    string `json:"action"`
		RequestID string `json:"request_id"`
	}](t, r.stdout)
	var created bool
	for _, e := range events {
		if e.Action == "request.created" && e.RequestID == req.ID {
			created = true
		}
	}
	if !created {
		t.Errorf("audit lacks request.created for %s: %s", req.ID, r.stdout)
	}
	if r := c.ok("audit", "--target", "web-01"); !strings.Contains(r.stdout, "request.created") {
		t.Errorf("audit text lacks request.created:\n%s", r.stdout)
	}
}

func TestRequestWaitTimesOut(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.100.0/24")

	start := time.Now()
	r := c.run("request", "web-01", "--port", "22", "--duration", "1h", "--source", "198.51.100.7",
		"--reason", "x", "--wait", "--wait-timeout", "2s")
	if el := time.Since(start); el > 8*time.Second {
		t.Errorf("--wait-timeout 2s took %s", el)
	}
	if r.code == 0 {
		t.Fatalf("request --wait succeeded without an agent:\n%s", r.stdout)
	}
	checkOneLineError(t, r, "still pending", "jitgate requests")
	if !strings.Contains(r.stdout, "waiting for the agent of web-01") {
		t.Errorf("no progress line:\n%s", r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"duration with a bad unit", []string{"request", "web-01", "--port", "22", "--duration", "1y", "--reason", "x"}, []string{"--duration", "1d or 7d", "2026-12-07"}},
		{"bad duration", []string{"policy", "set", "web-01", "--port", "22", "--max", "soon"}, []string{"--max", "90s, 45m"}},
		{"duration in the past", []string{"request", "web-01", "--port", "22", "--duration", "2001-01-01", "--reason", "x"}, []string{"in the past"}},
		{"bad since", []string{"audit", "--since", "yesterday"}, []string{"--since", "2026-12-07", "1d"}},
		{"bad wait", []string{"revoke", "r-1", "--wait", "soon"}, []string{"--wait", "1d"}},
		{"missing target", []string{"target", "add"}, []string{"missing target NAME"}},
		{"two targets", []string{"policy", "show", "a", "b"}, []string{"expected one TARGET"}},
		{"missing port", []string{"request", "web-01", "--duration", "1h", "--reason", "x"}, []string{"--port"}},
		{"missing duration", []string{"request", "web-01", "--port", "22", "--reason", "x"}, []string{"--duration is required"}},
		{"unknown command", []string{"frobnicate"}, []string{"unknown command", "frobnicate"}},
		{"unknown subcommand", []string{"target", "frob"}, []string{"unknown command", "frob", "add"}},
		{"unknown flag", []string{"target", "list", "--colour"}, []string{"--colour"}},
		{"output xml", []string{"target", "list", "--output", "xml"}, []string{"--output", "xml", "yaml"}},
		{"bad jq", []string{"target", "list", "--jq", ".[] |"}, []string{"--jq"}},
		{"jq with wide", []string{"target", "list", "-o", "wide", "--jq", ".[]"}, []string{"--jq", "wide"}},
		{"apply without file", []string{"apply"}, []string{"-f FILE"}},
		{"bad label", []string{"target", "add", "x", "--label", "novalue"}, []string{"KEY=VALUE"}},
		{"no bastion tunnels per principal", []string{"server", "--data-dir", "/nonexistent/jitgate", "--max-tunnels-per-principal", "0"}, []string{"--max-tunnels-per-principal", "1 or more"}},
		{"negative brute-force threshold", []string{"server", "--data-dir", "/nonexistent/jitgate", "--brute-force-threshold", "-1"}, []string{"--brute-force-threshold", "0 (never)"}},
		{"database not PostgreSQL", []string{"server", "--data-dir", "/nonexistent/jitgate", "--database", "/var/lib/jitgate/jitgate.db"}, []string{"--database", "postgres://"}},
		{"restore with neither", []string{"restore"}, []string{"--data-dir and --from", "--database"}},
		{"restore with both", []string{"restore", "--database", "postgres://x/y", "--from", "b.db"}, []string{"--database", "SQLite"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newCLI(t, s).run(tt.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d", r.code, exitUsage)
			}
			checkErrorLine(t, r, 2, tt.want...)
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) == 2 && !regexp.MustCompile(`^see 'jitgate( [a-z-]+)* --help' for usage$`).MatchString(lines[1]) {
				t.Errorf("hint line = %q", lines[1])
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
		})
	}
}

func TestRuntimeErrors(t *testing.T) {
	s := newTestServer(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"no server", map[string]string{}, []string{"target", "list"}, []string{"no server given", "--server", "JITGATE_SERVER"}},
		{"no token", map[string]string{"JITGATE_SERVER": s.url}, []string{"target", "list"}, []string{"no token given", "JITGATE_TOKEN"}},
		{"wrong token", map[string]string{"JITGATE_SERVER": s.url, "JITGATE_TOKEN": "jga_wrong"}, []string{"target", "list"}, []string{"missing, invalid or expired bearer token"}},
		{"bad url", map[string]string{"JITGATE_SERVER": "ftp://x", "JITGATE_TOKEN": "t"}, []string{"target", "list"}, []string{"http:// or https://"}},
		{"unreachable", map[string]string{"JITGATE_SERVER": "http://127.0.0.1:1", "JITGATE_TOKEN": "t"}, []string{"target", "list"}, []string{"cannot reach http://127.0.0.1:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &cli{t: t, env: tt.env}
			r := c.run(tt.args...)
			if r.code == 0 {
				t.Fatalf("succeeded:\n%s", r.stdout)
			}
			checkOneLineError(t, r, tt.want...)
		})
	}
	// With no environment at all (env returns ""), nothing is read.
	var out, errb bytes.Buffer
	if code := runIO([]string{"requests"}, strings.NewReader(""), &out, &errb, func(string) string { return "" }); code == 0 ||
		!strings.HasPrefix(errb.String(), "error: no server given") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("empty env: exit %d, stderr %q", code, errb.String())
	}
}

func TestPrecedence(t *testing.T) {
	good := newTestServer(t)
	other := newTestServer(t) // a server whose token differs
	cfgHome := t.TempDir()
	writeConfig := func(body string) {
		t.Helper()
		p := filepath.Join(cfgHome, "jitgate", "config.yaml")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig("server: " + good.url + "\ntoken: " + good.token + "\n")
	// Mark the good server so a success can be told apart.
	c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": cfgHome}}
	c.ok("target", "add", "from-config")

	listed := func(r result) bool { return strings.Contains(r.stdout, "from-config") }
	tests := []struct {
		name  string
		env   map[string]string
		flags []string
		ok    bool
	}{
		{"config alone", nil, nil, true},
		{"env server beats config", map[string]string{"JITGATE_SERVER": other.url}, nil, false},
		{"env token beats config", map[string]string{"JITGATE_TOKEN": other.token}, nil, false},
		{"flag beats env", map[string]string{"JITGATE_SERVER": other.url, "JITGATE_TOKEN": other.token},
			[]string{"--server", good.url, "--token", good.token}, true},
		{"flag token beats env and config", map[string]string{"JITGATE_TOKEN": good.token},
			[]string{"--token", other.token}, false},
		{"env beats config", map[string]string{"JITGATE_SERVER": good.url, "JITGATE_TOKEN": good.token}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"XDG_CONFIG_HOME": cfgHome}
			for k, v := range tt.env {
				env[k] = v
			}
			c := &cli{t: t, env: env}
			if tt.ok {
				// Only the good server and its own token list the target.
				r := c.ok(append([]string{"target", "list"}, tt.flags...)...)
				if !listed(r) {
					t.Errorf("did not reach the configured server:\n%s", r.stdout)
				}
				return
			}
			r := c.run(append([]string{"target", "list"}, tt.flags...)...)
			if r.code == 0 && listed(r) {
				t.Errorf("used the lower-precedence setting:\n%s", r.stdout)
			}
		})
	}

	t.Run("env server with other token", func(t *testing.T) {
		// JITGATE_SERVER of the other server with the config's token is
		// refused there: the env server was used, the config token kept.
		c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": cfgHome, "JITGATE_SERVER": other.url}}
		checkOneLineError(t, c.run("target", "list"), "bearer token")
	})
	t.Run("HOME fallback", func(t *testing.T) {
		c := &cli{t: t, env: map[string]string{"HOME": t.TempDir()}}
		checkOneLineError(t, c.run("target", "list"), "no server given", filepath.Join(".config", "jitgate", "config.yaml"))
	})
	t.Run("unknown config key", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "jitgate", "config.yaml")
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte("server: "+good.url+"\ntokn: x\n"), 0o600)
		c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": dir}}
		checkOneLineError(t, c.run("target", "list"), "tokn", "unknown")
	})
}

// TestAgentRefusesRemotePlainHTTP: the agent command stops with one line
// before it sends the enrollment token to a plain-http server that is not
// loopback, and names the flag that allows it.
func TestAgentRefusesRemotePlainHTTP(t *testing.T) {
	c := &cli{t: t, env: map[string]string{}}
	r := c.run("agent", "--dry-run", "--server", "http://192.0.2.2:8080", "--enroll-token", "jge_x", "--state-dir", t.TempDir())
	checkOneLineError(t, r, "plain HTTP", "--insecure-http")
}
