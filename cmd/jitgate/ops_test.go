package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTargetEnrollToken: jitgate target enroll-token prints a new token and
// the agent command; an unknown target exits 1 with one line.
func TestTargetEnrollToken(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	c.ok("target", "add", "web-01")
	r := c.ok("target", "enroll-token", "web-01")
	tok := regexp.MustCompile(`jge_\S+`).FindString(r.stdout)
	if tok == "" || !strings.Contains(r.stdout, "--enroll-token "+tok) || !strings.Contains(r.stdout, "web-01") {
		t.Fatalf("output:\n%s", r.stdout)
	}
	checkOneLineError(t, c.run("target", "enroll-token", "nope"), "nope")
}

// TestVersionAsksServer: jitgate version prints this binary's version and
// the server's, and only its own with --client or without a server.
func TestVersionAsksServer(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	r := c.ok("version")
	if !strings.HasPrefix(r.stdout, "client: jitgate ") || !strings.Contains(r.stdout, "\nserver: jitgate ") {
		t.Fatalf("version:\n%s", r.stdout)
	}
	out := decode[versionOutput](t, c.ok("version", "-o", "json").stdout)
	if out.Version == "" || out.Server == nil || out.Server.Version == "" {
		t.Fatalf("version json: %+v", out)
	}
	if r := c.ok("version", "--client"); strings.Contains(r.stdout, "server:") {
		t.Fatalf("version --client:\n%s", r.stdout)
	}
	delete(c.env, "JITGATE_SERVER")
	if r := c.ok("version"); strings.Contains(r.stdout, "server:") {
		t.Fatalf("version without a server:\n%s", r.stdout)
	}
}

// TestServerConfigFile: jitgate server --check-config reads the YAML file
// (--config), takes the environment over it and a flag over both, rejects
// unknown keys and bad values with their line, and wants a data directory
// from somewhere.
func TestServerConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "server.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := &cli{t: t, env: map[string]string{"XDG_CONFIG_HOME": t.TempDir()}}
	good := write("# jitgate server settings\ndata-dir: " + dir + "/data\nlisten: 127.0.0.1:9001\ntrusted-proxy: [10.0.0.0/8, 192.0.2.0/24]\nactivation-timeout: 45s\nlog-level: warn\n")
	r := c.ok("server", "--config", good, "--check-config", "--log-level", "debug")
	for _, want := range []string{"configuration OK (file: " + good + ")", "data-dir", good + ":2", "trusted-proxy", good + ":4", "log-level                    from flag"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--check-config output lacks %q:\n%s", want, r.stdout)
		}
	}
	// The environment over the file; JITGATE_CONFIG names the file.
	c.env["JITGATE_CONFIG"] = good
	c.env["JITGATE_LISTEN"] = "127.0.0.1:9002"
	out := decode[struct {
		OK       bool              `json:"ok"`
		Settings map[string]string `json:"settings"`
	}](t, c.ok("server", "--check-config", "-o", "json").stdout)
	if !out.OK || out.Settings["listen"] != "env JITGATE_LISTEN" || out.Settings["activation-timeout"] != good+":5" {
		t.Errorf("sources: %+v", out)
	}
	delete(c.env, "JITGATE_CONFIG")
	delete(c.env, "JITGATE_LISTEN")

	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "data-dir: /tmp/x\nlisten: 127.0.0.1:1\nlisten-address: 0.0.0.0:1\n", []string{":3", `unknown setting "listen-address"`}},
		{"bad value", "data-dir: /tmp/x\n\nactivation-timeout: soon\n", []string{":3", "activation-timeout"}},
		{"nested", "data-dir:\n  path: /tmp/x\n", []string{":2", "data-dir"}},
		{"twice", "data-dir: /a\ndata-dir: /b\n", []string{":2", "again"}},
		{"no data dir", "listen: 127.0.0.1:1\n", []string{"--data-dir is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.run("server", "--config", write(tc.body), "--check-config")
			if r.code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %s", r.code, exitUsage, r.stderr)
			}
			checkErrorLine(t, r, 2, tc.want...)
		})
	}
	// A missing file named explicitly is an error; TLS files that do not
	// load fail the check.
	checkOneLineError(t, c.run("server", "--config", filepath.Join(dir, "nope.yaml"), "--check-config"), "nope.yaml")
	p := write("data-dir: " + dir + "/data\ntls-cert: " + dir + "/missing.crt\ntls-key: " + dir + "/missing.key\n")
	checkOneLineError(t, c.run("server", "--config", p, "--check-config"), "TLS")
}
