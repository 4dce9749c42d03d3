package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/wire"
)

// policyState is what a change to a target's policy moves: the policy as
// JSON, the target's revision and the number of policy audit events.
func policyState(t *testing.T, c *cli, target string) (string, int64, int) {
	t.Helper()
	tg := decode[struct {
		Policy *wire.Policy `json:"policy"`
		Agent  struct {
			Revision int64 `json:"revision"`
		} `json:"agent"`
	}](t, c.ok("target", "show", target, "-o", "json").stdout)
	events := decode[[]struct {
		Action string `json:"action"`
	}](t, c.ok("audit", "--target", target, "-o", "json").stdout)
	n := 0
	for _, e := range events {
		if strings.HasPrefix(e.Action, "policy.") {
			n++
		}
	}
	pol := "none"
	if tg.Policy != nil {
		pol = c.ok("policy", "show", target, "-o", "json").stdout
	}
	return pol, tg.Agent.Revision, n
}

// checkUnchanged fails unless target's policy, revision and policy audit
// events are what they were.
func checkUnchanged(t *testing.T, c *cli, target, what string, pol string, rev int64, events int) {
	t.Helper()
	p, r, n := policyState(t, c, target)
	if p != pol || r != rev || n != events {
		t.Errorf("%s changed %s: revision %d -> %d, policy events %d -> %d, policy\n%s\n->\n%s", what, target, rev, r, events, n, pol, p)
	}
}

func mustContain(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// TestPolicySetDryRunAndDropped checks that policy set names the ports it
// stops gating and the settings it weakens, and that --dry-run says the
// same and changes nothing.
func TestPolicySetDryRunAndDropped(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--port", "3389", "--port", "53/udp", "--approval", "manual",
		"--close-established", "--source", "198.51.100.0/24")
	pol, rev, events := policyState(t, c, "web-01")

	narrower := []string{"policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.0.0/16"}
	r := c.ok(append(narrower, "--dry-run")...)
	want := []string{
		"22/tcp allowed_sources: 198.51.100.0/24 -> 198.51.0.0/16 (weaker)",
		"22/tcp approval: manual (1 approval) -> auto (weaker)",
		"22/tcp close_established: on -> off (weaker)",
		"3389/tcp: rule dropped: the port is no longer gated (weaker)",
		"53/udp: rule dropped: the port is no longer gated (weaker)",
	}
	mustContain(t, "policy set --dry-run", r.stdout, append(want, "web-01: would change (dry run: nothing was changed)",
		"would drop 3389/tcp, 53/udp: no longer gated, open to anyone who can reach web-01")...)
	checkUnchanged(t, c, "web-01", "policy set --dry-run", pol, rev, events)

	r = c.ok(narrower...)
	mustContain(t, "policy set", r.stdout, append(want, "web-01: policy set", "  drops 3389/tcp, 53/udp: no longer gated")...)
	if p, _, _ := policyState(t, c, "web-01"); strings.Contains(p, "3389") {
		t.Errorf("3389 still in the policy after set:\n%s", p)
	}

	r = c.ok("policy", "set", "web-01", "--port", "22/tcp", "--source", "198.51.0.0/16", "-o", "json")
	if res := decode[wire.PolicyResult](t, r.stdout); res.Changed || len(res.Changes) != 0 || len(res.Dropped) != 0 {
		t.Errorf("setting the same policy again: %+v", res)
	}
}

// TestExportApply sets a policy with every setting (publish too, on a target
// behind a gateway), exports it, and applies the export: the server reports
// no change and holds the same policy. It also checks that apply names the
// settings a file weakens, and that apply --dry-run changes nothing.
func TestExportApply(t *testing.T) {
	s := newTestServer(t)
	c := newCLI(t, s)
	ctx := context.Background()
	gw := decode[wire.TargetCreated](t, c.ok("target", "add", "gw-1", "--public-address", "203.0.113.10", "-o", "json").stdout)
	agent := enrollAgent(t, s, gw.EnrollToken, wire.EnrollRequest{Hostname: "gw-1", Version: "test"})
	if err := agent.Report(ctx, wire.AgentReport{Mode: "gateway",
		Inventory: &wire.Inventory{CanEnforce: true, Routes: []string{"10.0.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	c.ok("target", "add", "app-01", "--gateway", "gw-1", "--address", "10.0.0.5")
	c.ok("target", "add", "web-01")
	c.ok("policy", "set", "app-01", "--port", "22/tcp", "--max", "90m", "--source", "198.51.100.0/24", "--source", "203.0.113.7/32",
		"--approval", "manual", "--approvals", "2", "--require-reason", "--min-reason", "12", "--reason-pattern", `^(INC|CHG)-[0-9]+`,
		"--close-established", "--publish", "--mapped-port", "20022")
	c.ok("policy", "set", "web-01", "--port", "53/udp", "--max", "1h")

	r := c.ok("policy", "export")
	mustContain(t, "policy export", r.stdout, "target: app-01", "target: web-01", "close_established: true", "publish: true",
		"mapped_port: 20022", "mode: manual", "approvals: 2", "min_length: 12", "protocol: udp")
	dir := t.TempDir()
	file := filepath.Join(dir, "policies.yaml")
	if err := os.WriteFile(file, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	appPol, appRev, appEvents := policyState(t, c, "app-01")
	webPol, webRev, webEvents := policyState(t, c, "web-01")
	r = c.ok("apply", "-f", file)
	mustContain(t, "apply of the export", r.stdout, "app-01: unchanged", "web-01: unchanged")
	if strings.Contains(r.stdout, "->") {
		t.Errorf("apply of the export lists changes:\n%s", r.stdout)
	}
	checkUnchanged(t, c, "app-01", "apply of the export", appPol, appRev, appEvents)
	checkUnchanged(t, c, "web-01", "apply of the export", webPol, webRev, webEvents)
	if one := c.ok("policy", "export", "app-01").stdout; strings.Contains(one, "web-01") || !strings.Contains(one, "app-01") {
		t.Errorf("policy export app-01:\n%s", one)
	}

	// A file that leaves settings out turns them back to a fresh rule's
	// defaults, and apply says which settings that weakens.
	lax := filepath.Join(dir, "lax.yaml")
	if err := os.WriteFile(lax, []byte("policies:\n  - target: app-01\n    rules:\n      - port: 22\n        max_duration: 90m\n        publish: true\n        mapped_port: 20022\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = c.ok("apply", "-f", lax, "--dry-run")
	mustContain(t, "apply --dry-run of a laxer file", r.stdout, "app-01: would change (dry run: nothing was changed)",
		"22/tcp allowed_sources: 198.51.100.0/24, 203.0.113.7/32 -> per request (weaker)",
		"22/tcp approval: manual (2 approvals) -> auto (weaker)",
		"22/tcp justification.required: on -> off (weaker)",
		"22/tcp justification.min_length: 12 -> 0 (weaker)",
		`22/tcp justification.pattern: "^(INC|CHG)-[0-9]+" -> none (weaker)`,
		"22/tcp close_established: on -> off (weaker)")
	checkUnchanged(t, c, "app-01", "apply --dry-run", appPol, appRev, appEvents)
}

// TestPolicyEnableSkips checks that enable --default names the targets it
// skips (an own policy is kept) and that --dry-run changes nothing.
func TestPolicyEnableSkips(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01", "--label", "group=prod")
	c.ok("target", "add", "web-02", "--label", "group=prod")
	c.ok("policy", "set", "web-02", "--port", "22/tcp", "--approval", "manual")
	pol1, rev1, ev1 := policyState(t, c, "web-01")
	pol2, rev2, ev2 := policyState(t, c, "web-02")

	r := c.ok("policy", "enable", "--default", "--selector", "group=prod", "--dry-run")
	mustContain(t, "enable --dry-run", r.stdout, "web-01: would get the default policy (dry run: nothing was changed)",
		"web-02: skipped: already has a policy (22/tcp)")
	checkUnchanged(t, c, "web-01", "enable --dry-run", pol1, rev1, ev1)
	checkUnchanged(t, c, "web-02", "enable --dry-run", pol2, rev2, ev2)

	r = c.ok("policy", "enable", "--default", "--selector", "group=prod", "--yes")
	mustContain(t, "enable", r.stdout, "web-01: default policy set", "web-02: skipped: already has a policy (22/tcp)")
	checkUnchanged(t, c, "web-02", "enable", pol2, rev2, ev2)
	if p, _, _ := policyState(t, c, "web-01"); !strings.Contains(p, "5986") {
		t.Errorf("web-01 after enable:\n%s", p)
	}
}

// TestApplyChecksEveryPolicyFirst applies a file whose second policy the
// server refuses: the first target is left as it was.
func TestApplyChecksEveryPolicyFirst(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("target", "add", "db-01")
	c.ok("policy", "set", "web-01", "--port", "22/tcp", "--approval", "manual")
	pol, rev, events := policyState(t, c, "web-01")
	file := filepath.Join(t.TempDir(), "p.yaml")
	// db-01 is not behind a gateway: it has no port to publish.
	body := "policies:\n  - target: web-01\n    rules:\n      - port: 22\n  - target: db-01\n    rules:\n      - port: 5432\n        publish: true\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r := c.run("apply", "-f", file)
	if r.code == 0 {
		t.Fatalf("apply of a file with a refused policy succeeded:\n%s", r.stdout)
	}
	checkErrorLine(t, r, 1, "line 5", "db-01", "not behind a gateway", "nothing was changed")
	checkUnchanged(t, c, "web-01", "a refused apply", pol, rev, events)
}

// TestPolicySetIdleTimeout: policy set --idle-timeout sets a bastion
// rule's idle timeout, policy show says it, a longer one or none is
// reported weaker, and one on a rule reached only directly is refused with
// one line naming the field, changing nothing.
func TestPolicySetIdleTimeout(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	c.ok("policy", "set", "web-01", "--port", "22", "--access", "bastion", "--idle-timeout", "10m")
	mustContain(t, "policy show", c.ok("policy", "show", "web-01").stdout, "idle timeout 10m")
	mustContain(t, "policy set --idle-timeout 30m", c.ok("policy", "set", "web-01", "--port", "22", "--access", "bastion", "--idle-timeout", "30m").stdout,
		"22/tcp idle_timeout: 10m -> 30m (weaker)")
	mustContain(t, "policy set without --idle-timeout", c.ok("policy", "set", "web-01", "--port", "22", "--access", "bastion", "--dry-run").stdout,
		"22/tcp idle_timeout: 30m -> none (weaker)")
	pol, rev, events := policyState(t, c, "web-01")
	r := c.run("policy", "set", "web-01", "--port", "22", "--idle-timeout", "10m")
	if r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Errorf("policy set --idle-timeout on a direct rule: exit %d, stderr %q; want a failure in one line", r.code, r.stderr)
	}
	mustContain(t, "policy set --idle-timeout on a direct rule", r.stderr, "idle_timeout", "bastion")
	checkUnchanged(t, c, "web-01", "a refused --idle-timeout", pol, rev, events)
}

// TestPolicyWindowsAndGroups (issue 15, items 2 and 4): policy set takes
// time windows and approvals by group, policy show lists them, a change of
// them is judged weaker or not, and a bad window or group is refused in
// one line before anything is sent.
func TestPolicyWindowsAndGroups(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "db-01")
	r := c.ok("policy", "set", "db-01", "--port", "5432", "--window", "mon-fri 08:00-18:00 Europe/Berlin",
		"--approvals-from", "group:dba", "--approvals-from", "group:security=1")
	mustContain(t, "policy set", r.stdout, "manual (2)", "approvals 1 from group:dba + 1 from group:security", "windows Mon-Fri 08:00-18:00 Europe/Berlin")
	mustContain(t, "policy show", c.ok("policy", "show", "db-01").stdout, "windows Mon-Fri 08:00-18:00 Europe/Berlin")

	r = c.ok("policy", "set", "db-01", "--port", "5432", "--window", "Mon-Sat 08:00-18:00 Europe/Berlin",
		"--approvals-from", "group:dba", "--dry-run")
	mustContain(t, "policy set --dry-run", r.stdout,
		"5432/tcp windows: Mon-Fri 08:00-18:00 Europe/Berlin -> Mon-Sat 08:00-18:00 Europe/Berlin (weaker)",
		"5432/tcp approvals: 1 from group:dba, 1 from group:security -> 1 from group:dba (weaker)")

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--window", "Mon-Fri 08:00-18:00"}, "DAYS HH:MM-HH:MM ZONE"},
		{[]string{"--window", "Mon-Fri 08:00-18:00 Mars/Olympus"}, "not a known IANA zone"},
		{[]string{"--approvals-from", "dba"}, "group:NAME"},
		{[]string{"--approvals-from", "group:dba=0"}, "from 1 to 10"},
	} {
		r := c.run(append([]string{"policy", "set", "db-01", "--port", "5432"}, tt.args...)...)
		if r.code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tt.args, r.code, exitUsage, r.stderr)
		}
		checkErrorLine(t, r, exitUsage, tt.want)
	}
}
