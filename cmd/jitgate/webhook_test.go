package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestWebhookCommands(t *testing.T) {
	c := newCLI(t, newTestServer(t))
	r := c.ok("webhook", "add", "https://hooks.example.com/jitgate", "--event", "request.pending", "--event", "request.activated")
	m := regexp.MustCompile(`webhook (wh-[a-z0-9]+) added: https://hooks.example.com/jitgate \(generic, request.pending,request.activated\)\n\nSigning secret \(shown once\):\n  (whsec_\S+)\n`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("webhook add printed %q", r.stdout)
	}
	id, secret := m[1], m[2]
	if r := c.ok("webhook", "add", "https://hooks.slack.com/services/T0/B0/X", "--format", "slack", "--secret", "given-secret-0123456789"); strings.Contains(r.stdout, "given-secret") {
		t.Errorf("a given secret was echoed: %q", r.stdout)
	}
	list := c.ok("webhook", "list").stdout
	if !strings.Contains(list, id) || !strings.Contains(list, "all events") || strings.Contains(list, secret) {
		t.Errorf("webhook list = %q", list)
	}
	if r := c.ok("webhook", "deliveries", id); !strings.HasPrefix(r.stdout, "DELIVERY") {
		t.Errorf("webhook deliveries = %q", r.stdout)
	}
	c.ok("webhook", "remove", id, "--yes")
	checkOneLineError(t, c.run("webhook", "remove", id, "--yes"), "not found")
	if r := c.run("webhook", "add", "https://x.example", "--format", "teams"); r.code != exitUsage {
		t.Errorf("--format teams: exit %d, want %d", r.code, exitUsage)
	}
	checkOneLineError(t, c.run("webhook", "add", "ftp://x.example"), "url")
}
