package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/jitgate/jitgate/internal/wire"
)

// Tests of the CLI conventions (issue 14 item 3): table-driven tests of the
// parsers and decisions, and the commands against a real server.

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"90s", 90 * time.Second, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"1d", 24 * time.Hour, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"2w", 14 * 24 * time.Hour, ""},
		{"1d12h", 36 * time.Hour, ""},
		{" 3h ", 3 * time.Hour, ""},
		{"", 0, "empty"},
		{"0s", 0, "must be positive"},
		{"0d", 0, "must be positive"},
		{"-1h", 0, "use a duration"},
		{"1d-1h", 0, "use a duration"},
		{"1y", 0, "use a duration"},
		{"d", 0, "use a duration"},
		{"1.5d", 0, "use a duration"},
		{"soon", 0, "use a duration"},
		{"99999d", 0, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseDuration(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseDuration(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseInstant(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in      string
		past    bool
		want    time.Time
		wantErr bool
	}{
		{"2026-12-07", true, time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC), false},
		{"2026-12-31", false, time.Date(2026, 12, 31, 0, 0, 0, 0, time.UTC), false},
		{"2026-12-07 15:04", false, time.Date(2026, 12, 7, 15, 4, 0, 0, time.UTC), false},
		{"2026-12-07T15:04:05", false, time.Date(2026, 12, 7, 15, 4, 5, 0, time.UTC), false},
		{"2026-12-07T15:04:05+02:00", false, time.Date(2026, 12, 7, 13, 4, 5, 0, time.UTC), false},
		{"1d", true, now.Add(-24 * time.Hour), false},
		{"2h", false, now.Add(2 * time.Hour), false},
		{"7d", true, now.Add(-7 * 24 * time.Hour), false},
		{"22:00", false, time.Date(2026, 12, 7, 22, 0, 0, 0, time.UTC), false},
		{"22:00", true, time.Date(2026, 12, 6, 22, 0, 0, 0, time.UTC), false},
		{"09:30", true, time.Date(2026, 12, 7, 9, 30, 0, 0, time.UTC), false},
		{"+30m", false, now.Add(30 * time.Minute), false},
		{"-1h", true, now.Add(-time.Hour), false},
		{"yesterday", true, time.Time{}, true},
		{"2026-13-01", true, time.Time{}, true},
		{"07/12/2026", true, time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseInstant(tt.in, now, tt.past)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "2026-12-07") {
					t.Fatalf("parseInstant(%q) = %v, %v; want an error naming the forms", tt.in, got, err)
				}
				return
			}
			if err != nil || !got.Equal(tt.want) {
				t.Fatalf("parseInstant(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseInstantLocal(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, berlin)
	// Zone-less input is the person's local time; a zone in it wins.
	if got, _ := parseInstant("2026-12-07", now, true); !got.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, berlin)) {
		t.Errorf("2026-12-07 in CET = %v", got)
	}
	if got, _ := parseInstant("2026-12-07T00:00:00Z", now, true); !got.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("2026-12-07T00:00:00Z = %v", got)
	}
	if _, err := parseInstant("-5m", now, false); !errors.Is(err, errInPast) {
		t.Errorf("-5m for a future instant: %v, want errInPast", err)
	}
}

func TestColorWanted(t *testing.T) {
	tests := []struct {
		name string
		tty  bool
		env  map[string]string
		want bool
	}{
		{"terminal", true, nil, true},
		{"pipe", false, nil, false},
		{"NO_COLOR on a terminal", true, map[string]string{"NO_COLOR": "1"}, false},
		{"empty NO_COLOR is unset", true, map[string]string{"NO_COLOR": ""}, true},
		{"dumb terminal", true, map[string]string{"TERM": "dumb"}, false},
		{"forced on a pipe", false, map[string]string{"CLICOLOR_FORCE": "1"}, true},
		{"forced off", false, map[string]string{"CLICOLOR_FORCE": "0"}, false},
		{"NO_COLOR beats forcing", false, map[string]string{"CLICOLOR_FORCE": "1", "NO_COLOR": "1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := colorWanted(tt.tty, func(k string) string { return tt.env[k] }); got != tt.want {
				t.Errorf("colorWanted = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestApprovalWait(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	by := now.Add(45 * time.Minute)
	past := now.Add(-time.Minute)
	tests := []struct {
		name string
		req  wire.Request
		want time.Duration
	}{
		{"approved at once", wire.Request{State: "pending"}, 2 * time.Minute},
		{"awaiting approval until its deadline", wire.Request{State: "pending_approval", ApproveBy: &by}, 47 * time.Minute},
		{"awaiting approval, no deadline known", wire.Request{State: "pending_approval"}, 62 * time.Minute},
		{"deadline passed", wire.Request{State: "pending_approval", ApproveBy: &past}, 62 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := approvalWait(tt.req, now, 2*time.Minute); got != tt.want {
				t.Errorf("approvalWait = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFmtEnds(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ended := now.Add(-3 * time.Minute)
	by := now.Add(50 * time.Minute)
	exp := now.Add(59 * time.Minute)
	tests := []struct {
		name string
		req  wire.Request
		want string
	}{
		{"active", wire.Request{State: "active", ExpiresAt: exp}, "in 59m"},
		{"revoked", wire.Request{State: "revoked", ExpiresAt: exp, EndedAt: &ended}, "ended 3m ago"},
		{"expired", wire.Request{State: "expired", ExpiresAt: ended, EndedAt: &ended}, "ended 3m ago"},
		{"ended, end unknown", wire.Request{State: "denied", ExpiresAt: exp}, "ended"},
		{"awaiting approval", wire.Request{State: "pending_approval", ExpiresAt: exp, ApproveBy: &by}, "approve in 50m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmtEnds(tt.req, now); got != tt.want {
				t.Errorf("fmtEnds = %q, want %q", got, tt.want)
			}
		})
	}
}

// runTTY runs the CLI with stdin standing in for a terminal that answers
// with input.
func (c *cli) runTTY(input string, args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	a := newApp(strings.NewReader(input), &out, &errb, func(k string) string { return c.env[k] })
	tty := true
	a.stdinTTY = &tty
	code := a.run(args)
	return result{code, out.String(), errb.String()}
}

// activeRequest makes web-01 (enrolled, agent applying) hold an active
// request from 198.51.100.7 and returns its id.
func activeRequest(t *testing.T, s testServer, c *cli) string {
	t.Helper()
	r := c.ok("target", "add", "web-01", "--label", "group=prod", "-o", "json")
	tok := decode[struct {
		EnrollToken string `json:"enroll_token"`
	}](t, r.stdout).EnrollToken
	agent := enrollAgent(t, s, tok, wire.EnrollRequest{Hostname: "web-01", Addresses: []string{"192.0.2.10"}})
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.100.0/24")
	applyDesired(t, agent)
	r = c.ok("request", "web-01", "--port", "22", "--duration", "1h", "--source", "198.51.100.7", "--reason", "x", "-o", "json")
	id := decode[wire.Request](t, r.stdout).ID
	applyDesired(t, agent)
	if st := decode[wire.Request](t, c.ok("requests", id, "-o", "json").stdout).State; st != "active" {
		t.Fatalf("request %s is %s, want active", id, st)
	}
	return id
}

func TestOutputFormats(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c)
	c.ok("target", "add", "db-01", "--label", "group=dev")

	// -o yaml: the JSON fields, as YAML, in block style.
	r := c.ok("targets", "-o", "yaml")
	var ts []map[string]any
	if err := yaml.Unmarshal([]byte(r.stdout), &ts); err != nil || len(ts) != 2 {
		t.Fatalf("targets -o yaml: %v, %d targets:\n%s", err, len(ts), r.stdout)
	}
	if strings.Contains(r.stdout, "{") || !strings.Contains(r.stdout, "- name: ") {
		t.Errorf("targets -o yaml is not block style:\n%s", r.stdout)
	}
	r = c.ok("request", "show", id, "-o", "yaml")
	var req map[string]any
	if err := yaml.Unmarshal([]byte(r.stdout), &req); err != nil || req["id"] != id || req["state"] != "active" {
		t.Errorf("request show -o yaml = %v, %v:\n%s", req, err, r.stdout)
	}
	// A string that looks like a number or a boolean stays a string.
	if ports, _ := req["ports"].([]any); len(ports) != 1 || ports[0] != "22/tcp" {
		t.Errorf("ports = %#v", req["ports"])
	}

	// --jq: strings raw, one per line; other values as JSON; with -o yaml as YAML.
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"targets", "--jq", ".[].name"}, "db-01\nweb-01\n"},
		{[]string{"target", "list", "--jq", `[.[] | select(.labels.group == "prod") | .name]`}, "[\n  \"web-01\"\n]\n"},
		{[]string{"requests", "--jq", ".[0].id"}, id + "\n"},
		{[]string{"target", "show", "web-01", "--jq", ".policy.rules[0].port"}, "22\n"},
		{[]string{"audit", "--action", "request.created", "--jq", ".[0].request_id"}, id + "\n"},
		{[]string{"whoami", "--jq", ".subject"}, "admin\n"},
		{[]string{"target", "show", "web-01", "-o", "yaml", "--jq", "{name, labels}"}, "labels:\n  group: prod\nname: web-01\n"}, // jq sorts keys,
	} {
		if r := c.ok(tt.args...); r.stdout != tt.want {
			t.Errorf("jitgate %s = %q, want %q", strings.Join(tt.args, " "), r.stdout, tt.want)
		}
	}
	// Every list and show honours -o yaml and --jq.
	for _, tt := range []struct {
		args []string
		kind string
	}{
		{[]string{"targets"}, "array"},
		{[]string{"target", "list"}, "array"},
		{[]string{"target", "show", "web-01"}, "object"},
		{[]string{"requests"}, "array"},
		{[]string{"request", "list"}, "array"},
		{[]string{"request", "show", id}, "object"},
		{[]string{"policy", "show", "web-01"}, "object"},
		{[]string{"audit"}, "array"},
		{[]string{"role", "list"}, "array"},
		{[]string{"token", "list"}, "array"},
		{[]string{"webhook", "list"}, "array"},
		{[]string{"sessions"}, "array"},
		{[]string{"whoami"}, "object"},
	} {
		name := strings.Join(tt.args, " ")
		if got := strings.TrimSpace(c.ok(append(tt.args, "--jq", "type")...).stdout); got != tt.kind {
			t.Errorf("jitgate %s --jq type = %q, want %s", name, got, tt.kind)
		}
		var v any
		if err := yaml.Unmarshal([]byte(c.ok(append(tt.args, "-o", "yaml")...).stdout), &v); err != nil || v == nil && tt.kind == "object" {
			t.Errorf("jitgate %s -o yaml: %v, %v", name, v, err)
		}
	}
	// A jq error at run time: exit 1, one line.
	checkOneLineError(t, c.run("targets", "--jq", ".[0].name | tonumber"), "--jq")

	// -o wide adds columns; text does not have them.
	for _, tt := range []struct {
		args []string
		col  string
	}{
		{[]string{"requests"}, "REASON"},
		{[]string{"targets"}, "AGENT VERSION"},
		{[]string{"audit"}, "DETAILS"},
	} {
		if r := c.ok(tt.args...); strings.Contains(r.stdout, tt.col) {
			t.Errorf("jitgate %s shows %s without -o wide", strings.Join(tt.args, " "), tt.col)
		}
		if r := c.ok(append(tt.args, "-o", "wide")...); !strings.Contains(r.stdout, tt.col) {
			t.Errorf("jitgate %s -o wide lacks %s:\n%s", strings.Join(tt.args, " "), tt.col, r.stdout)
		}
	}
}

func TestColorOutput(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c)
	// Not a terminal: no colour.
	if r := c.ok("requests"); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("colour on a pipe:\n%q", r.stdout)
	}
	c.env["CLICOLOR_FORCE"] = "1"
	r := c.ok("requests")
	line := ""
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Contains(l, id) {
			line = l
		}
	}
	if !strings.HasPrefix(line, sgrGreen) || !strings.HasSuffix(line, sgrReset) {
		t.Errorf("active request's row not green: %q", line)
	}
	// Columns stay aligned: the header's STATE starts where the row's state does.
	lines := strings.Split(r.stdout, "\n")
	if h, l := strings.Index(lines[0], "STATE"), strings.Index(strings.TrimPrefix(line, sgrGreen), "active"); h != l {
		t.Errorf("STATE at %d, active at %d:\n%s", h, l, r.stdout)
	}
	if r := c.ok("requests", "-o", "json"); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("colour in JSON")
	}
	c.env["NO_COLOR"] = "1"
	if r := c.ok("requests"); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("colour with NO_COLOR:\n%q", r.stdout)
	}
}

func TestLabelSelectors(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c) // web-01, group=prod
	c.ok("target", "add", "db-01", "--label", "group=dev", "--label", "tier=db")
	c.ok("target", "add", "db-02", "--label", "group=prod", "--label", "tier=db")

	names := func(args ...string) []string {
		t.Helper()
		return strings.Fields(c.ok(append(args, "--jq", ".[].name")...).stdout)
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"targets", "-l", "group=prod"}, []string{"db-02", "web-01"}},
		{[]string{"target", "list", "-l", "group=prod", "-l", "tier=db"}, []string{"db-02"}},
		{[]string{"target", "ls", "--selector", "group=prod,tier=db"}, []string{"db-02"}},
		{[]string{"targets", "-l", "group=none"}, nil},
	} {
		if got := names(tt.args...); !slices.Equal(got, tt.want) {
			t.Errorf("jitgate %s = %v, want %v", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	if got := strings.Fields(c.ok("requests", "-l", "group=prod", "--jq", ".[].id").stdout); !slices.Equal(got, []string{id}) {
		t.Errorf("requests -l group=prod = %v, want [%s]", got, id)
	}
	if got := c.ok("requests", "-l", "group=dev", "--jq", ".[].id").stdout; got != "" {
		t.Errorf("requests -l group=dev = %q, want none", got)
	}
	r := c.run("targets", "-l", "group")
	if r.code != exitUsage {
		t.Errorf("bad selector: exit %d", r.code)
	}
	checkErrorLine(t, r, 2, "-l", "KEY=VALUE")
}

func TestCompletion(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c)
	c.ok("target", "add", "db-01")

	complete := func(args ...string) []string {
		t.Helper()
		r := c.ok(append([]string{"__complete"}, args...)...)
		var out []string
		for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if !strings.HasPrefix(l, ":") {
				name, _, _ := strings.Cut(l, "\t")
				out = append(out, name)
			}
		}
		return out
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"request", ""}, []string{"db-01", "list", "show", "web-01"}}, // targets and the subcommands
		{[]string{"request", "w"}, []string{"web-01"}},
		{[]string{"target", "show", ""}, []string{"db-01", "web-01"}},
		{[]string{"policy", "remove", "d"}, []string{"db-01"}},
		{[]string{"request", "web-01", "--port", ""}, []string{"22/tcp"}},
		{[]string{"revoke", ""}, []string{id}},
		{[]string{"requests", "r-"}, []string{id}},
		{[]string{"approve", ""}, []string{id}},
		{[]string{"policy", "set", "w"}, []string{"web-01"}},
		{[]string{"target", "enroll-token", "d"}, []string{"db-01"}},
		{[]string{"connect", "web-01", "--port", ""}, []string{"22/tcp"}},
		{[]string{"targets", "-o", ""}, []string{"text", "json", "yaml", "wide"}},
	} {
		got := complete(tt.args...)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(got, want) {
			t.Errorf("completing jitgate %s = %v, want %v", strings.Join(tt.args, " "), got, want)
		}
	}
	// No server: nothing completed, no error, exit 0.
	noServer := newCLI(t, s)
	noServer.env["JITGATE_SERVER"] = "http://127.0.0.1:1"
	if r := noServer.ok("__complete", "request", ""); strings.Contains(r.stdout, "web-01") {
		t.Errorf("completion without a server: %q", r.stdout)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := c.ok("completion", sh); !strings.Contains(r.stdout, "__complete") {
			t.Errorf("completion %s does not call __complete:\n%.200s", sh, r.stdout)
		}
	}
}

func TestLoginWithToken(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	delete(c.env, "JITGATE_TOKEN")
	delete(c.env, "JITGATE_SERVER")

	// A wrong token: refused, nothing saved.
	r := c.runStdin("jgt_wrong\n", "login", "--server", s.url, "--with-token")
	checkOneLineError(t, r, "refused the token", "nothing was saved")
	path := filepath.Join(c.env["XDG_CONFIG_HOME"], "jitgate", "config.yaml")
	if _, err := os.Stat(path); err == nil {
		t.Errorf("a refused token was saved in %s", path)
	}
	r = c.runStdin("", "login", "--server", s.url, "--with-token")
	if r.code != exitUsage {
		t.Errorf("no token: exit %d", r.code)
	}
	checkErrorLine(t, r, 2, "no token on standard input")

	r = c.runStdin(s.token+"\n", "login", "--server", s.url, "--with-token")
	if r.code != 0 || !strings.Contains(r.stdout, "Logged in to "+s.url+" as admin") {
		t.Fatalf("login --with-token: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, s.token) {
		t.Errorf("the token was printed")
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file %s: %v, %v", path, fi, err)
	}
	// Later commands use the saved server and token.
	if r := c.ok("whoami"); !strings.HasPrefix(r.stdout, "admin ") {
		t.Errorf("whoami after login --with-token: %q", r.stdout)
	}
}

// runStdin runs the CLI with input on standard input (not a terminal).
func (c *cli) runStdin(input string, args ...string) result {
	c.t.Helper()
	var out, errb bytes.Buffer
	code := runIO(args, strings.NewReader(input), &out, &errb, func(k string) string { return c.env[k] })
	return result{code, out.String(), errb.String()}
}

func TestConfirmDestructive(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c)
	state := func() string {
		t.Helper()
		return decode[wire.Request](t, c.ok("requests", id, "-o", "json").stdout).State
	}

	// No terminal, no --yes: refused, nothing changed.
	r := c.run("revoke", id)
	if r.code != exitUsage {
		t.Errorf("revoke without --yes off a terminal: exit %d", r.code)
	}
	checkErrorLine(t, r, 2, "refusing to revoke request "+id, "--yes")
	// --dry-run: says what, changes nothing.
	r = c.ok("revoke", id, "--dry-run")
	if !strings.Contains(r.stdout, "would revoke request "+id+" (web-01 22/tcp from 198.51.100.7/32, admin, active)") {
		t.Errorf("revoke --dry-run:\n%s", r.stdout)
	}
	if got := decode[map[string]any](t, c.ok("revoke", id, "--dry-run", "-o", "json").stdout); got["dry_run"] != true {
		t.Errorf("revoke --dry-run -o json = %v", got)
	}
	// A terminal answering no: cancelled, exit 1.
	r = c.runTTY("n\n", "revoke", id)
	question, rest, ok := strings.Cut(r.stderr, "? [y/N] ")
	if !ok || !strings.HasPrefix(question, "Revoke request "+id+" (web-01") {
		t.Errorf("no question asked: %q", r.stderr)
	}
	r.stderr = rest
	checkOneLineError(t, r, "cancelled", "nothing changed")
	if st := state(); st != "active" {
		t.Fatalf("after refusals the request is %s, want active", st)
	}
	// Yes.
	if r := c.runTTY("y\n", "revoke", id, "--wait", "0"); r.code != 0 || !strings.Contains(r.stdout, "revoked") {
		t.Fatalf("revoke answered yes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if st := state(); st != "revoked" {
		t.Errorf("after yes the request is %s", st)
	}

	// target remove, policy remove, token revoke, webhook remove, policy enable.
	c.ok("target", "add", "db-01", "--label", "group=dev")
	for _, args := range [][]string{
		{"target", "remove", "web-01"},
		{"policy", "remove", "web-01"},
		{"token", "revoke", "t-1"},
		{"webhook", "remove", "w-1"},
		{"policy", "enable", "--default", "--selector", "group=dev"},
		{"sessions", "kill", "s-1", "--reason", "x"},
	} {
		r := c.run(args...)
		if r.code != exitUsage {
			t.Errorf("jitgate %s off a terminal without --yes: exit %d", strings.Join(args, " "), r.code)
		}
		checkErrorLine(t, r, 2, "refusing to", "--yes")
	}
	if r := c.ok("target", "remove", "web-01", "--dry-run"); !strings.Contains(r.stdout, "would remove target web-01") {
		t.Errorf("target remove --dry-run:\n%s", r.stdout)
	}
	if r := c.ok("policy", "remove", "web-01", "--dry-run"); !strings.Contains(r.stdout, "22/tcp stop being gated") {
		t.Errorf("policy remove --dry-run:\n%s", r.stdout)
	}
	if got := c.ok("targets", "--jq", ".[].name").stdout; got != "db-01\nweb-01\n" {
		t.Errorf("targets after refusals and dry runs: %q", got)
	}
	// Answered on a terminal, the removal names the policy it showed
	// (If-Match): the tag the CLI read is the one the server checks.
	if r := c.runTTY("y\n", "policy", "remove", "web-01", "--wait", "0"); r.code != 0 || !strings.Contains(r.stdout, "policy removed") {
		t.Errorf("policy remove answered yes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	c.ok("target", "rm", "web-01", "--yes")
	if got := c.ok("targets", "--jq", ".[].name").stdout; got != "db-01\n" {
		t.Errorf("targets after remove --yes: %q", got)
	}
}

func TestListVerbs(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c)
	c.ok("request", "web-01", "--port", "22", "--duration", "30m", "--source", "198.51.100.8", "--reason", "y")
	// Both lists end with a relative time that moves between two runs.
	stable := regexp.MustCompile(`[0-9][0-9.]*(µs|ms|s|m|h)[0-9hms]*`)
	same := func(a, b []string) {
		t.Helper()
		ra, rb := c.ok(a...), c.ok(b...)
		if stable.ReplaceAllString(ra.stdout, "T") != stable.ReplaceAllString(rb.stdout, "T") || ra.stderr != rb.stderr {
			t.Errorf("jitgate %s and jitgate %s differ:\n%s\n%s", strings.Join(a, " "), strings.Join(b, " "), ra.stdout, rb.stdout)
		}
	}
	same([]string{"requests"}, []string{"request", "list"})
	same([]string{"requests", "--active", "-o", "wide"}, []string{"request", "ls", "--active", "-o", "wide"})
	same([]string{"requests", id}, []string{"request", "show", id})
	same([]string{"targets", "-o", "wide"}, []string{"target", "list", "-o", "wide"})
	same([]string{"targets", "--state", "configured"}, []string{"target", "ls", "--state", "configured"})
	r := c.run("request", "list", "extra")
	if r.code != exitUsage {
		t.Errorf("request list extra: exit %d", r.code)
	}
}

func TestEndedRequestsShowTheirEnd(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	id := activeRequest(t, s, c)
	c.ok("revoke", id, "--yes", "--wait", "0")
	r := c.ok("requests")
	var line string
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Contains(l, id) {
			line = l
		}
	}
	if !strings.Contains(line, "ended ") || strings.Contains(line, " in ") {
		t.Errorf("revoked request's row: %q; want when it ended, not when it would have expired", line)
	}
	r = c.ok("requests", id)
	if !strings.Contains(r.stdout, "Ended:") || strings.Contains(r.stdout, "Expires:") {
		t.Errorf("revoked request shown with Expires:\n%s", r.stdout)
	}
}

func TestAuditNewestFirst(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	for _, n := range []string{"t-1", "t-2", "t-3", "t-4", "t-5"} {
		c.ok("target", "add", n)
	}
	type ev struct {
		ID     int64  `json:"id"`
		Target string `json:"target"`
	}
	targets := func(es []ev) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Target)
		}
		return out
	}
	r := c.ok("audit", "--action", "target.added", "--limit", "2", "-o", "json")
	es := decode[[]ev](t, r.stdout)
	if got := targets(es); !slices.Equal(got, []string{"t-5", "t-4"}) {
		t.Fatalf("audit --limit 2 = %v, want the newest two, newest first", got)
	}
	if !strings.Contains(r.stderr, "older ones exist") || !strings.Contains(r.stderr, "--before "+strings.TrimSpace(c.ok("audit", "--action", "target.added", "--limit", "2", "--jq", ".[1].id").stdout)) {
		t.Errorf("no notice of older events: %q", r.stderr)
	}
	// The notice's --before gives the next page; the last page has no notice.
	r = c.ok("audit", "--action", "target.added", "--limit", "3", "--before", strconv.FormatInt(es[1].ID, 10), "-o", "json")
	if got := targets(decode[[]ev](t, r.stdout)); !slices.Equal(got, []string{"t-3", "t-2", "t-1"}) || r.stderr != "" {
		t.Errorf("audit --before %d = %v (stderr %q), want t-3 t-2 t-1 and no notice", es[1].ID, got, r.stderr)
	}
	r = c.ok("audit", "--action", "target.added", "--after", strconv.FormatInt(es[1].ID, 10), "-o", "json")
	if got := targets(decode[[]ev](t, r.stdout)); !slices.Equal(got, []string{"t-5"}) {
		t.Errorf("audit --after %d = %v, want t-5", es[1].ID, got)
	}
	r = c.ok("audit", "--action", "target.added", "--oldest-first", "--limit", "2", "-o", "json")
	if got := targets(decode[[]ev](t, r.stdout)); !slices.Equal(got, []string{"t-4", "t-5"}) {
		t.Errorf("audit --oldest-first --limit 2 = %v, want the newest two, oldest first", got)
	}
	// The text table leads with the event id the cursors take.
	r = c.ok("audit", "--limit", "1")
	if !strings.HasPrefix(r.stdout, "ID ") {
		t.Errorf("audit table:\n%s", r.stdout)
	}
}

func TestWaitForApprovers(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	c.ok("target", "add", "db-01")
	c.ok("policy", "set", "db-01", "--port", "5432/tcp", "--approval", "manual", "--source", "198.51.100.0/24")

	var out, errb bytes.Buffer
	a := newApp(strings.NewReader(""), &out, &errb, func(k string) string { return c.env[k] })
	a.progressEvery = time.Second
	code := a.run([]string{"request", "db-01", "--port", "5432", "--duration", "1h", "--source", "198.51.100.7", "--reason", "x", "--wait", "--wait-timeout", "3s"})
	r := result{code, out.String(), errb.String()}
	if n := strings.Count(r.stdout, "still pending approval: waiting for 1 more approval (waited "); n < 1 {
		t.Errorf("no progress while waiting for approvers:\n%s", r.stdout)
	}
	checkOneLineError(t, r, "still pending_approval after 3s")
}
