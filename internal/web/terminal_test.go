package web_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestTerminalPageCSP: the terminal page keeps the console's strict policy
// (scripts from 'self' only, nothing inline, no eval) and admits xterm.js's
// <style> elements only by this response's nonce, which the page hands its
// script; the vendored files and their licence are served from the binary.
func TestTerminalPageCSP(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	if _, err := e.api.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.api.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(time.Hour), Access: "bastion", Logins: []string{"ubuntu"}}}}); err != nil {
		t.Fatal(err)
	}
	req, err := e.api.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Bastion: true, Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	e.signin(t, c, e.admin)
	status, body, h := get(t, c, e.srv.URL+"/ui/terminal/"+req.ID+"?port=22")
	if status != http.StatusOK {
		t.Fatalf("terminal page: %d\n%s", status, body)
	}
	csp := h.Get("Content-Security-Policy")
	m := regexp.MustCompile(`style-src 'self' 'nonce-([A-Za-z0-9_-]{16,})'`).FindStringSubmatch(csp)
	if m == nil {
		t.Fatalf("CSP %q: want style-src 'self' with a nonce", csp)
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "unsafe-hashes", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("CSP %q contains %s", csp, bad)
		}
	}
	if !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q: want script-src 'self' only and no framing", csp)
	}
	if !strings.Contains(body, `data-nonce="`+m[1]+`"`) {
		t.Error("the page does not hand the style nonce to its script")
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, " onclick=") {
		t.Error("the terminal page has inline script or style")
	}
	_, body2, h2 := get(t, c, e.srv.URL+"/ui/terminal/"+req.ID+"?port=22")
	if h2.Get("Content-Security-Policy") == csp || strings.Contains(body2, m[1]) {
		t.Error("two responses share a nonce")
	}
	for _, f := range []string{"vendor/xterm/xterm.js", "vendor/xterm/xterm.css", "vendor/xterm/addon-fit.js", "vendor/xterm/LICENSE"} {
		if status, body, _ := get(t, c, e.srv.URL+"/ui/static/"+f); status != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d", f, status)
		}
	}
	// The dashboard's other pages keep the console's CSP.
	if _, _, h := get(t, c, e.srv.URL+"/ui/sessions"); strings.Contains(h.Get("Content-Security-Policy"), "nonce") {
		t.Error("the sessions page got the terminal's policy")
	}
}
