package web_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
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

// TestPlayerAndWatchPages: a recorded session's playback page keeps the
// strict policy, widened only by 'wasm-unsafe-eval' (asciinema-player's
// emulator is WebAssembly; no JavaScript eval, nothing inline) and a style
// nonce; the vendored player and its licence are served; the Sessions page
// links the recording; the watch page has the terminal's policy.
func TestPlayerAndWatchPages(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	start := time.Now().Add(-time.Minute)
	x := session.Session{ID: store.NewSessionID(), Target: "web-01", Principal: "admin", RequestID: "r-1", Protocol: "tcp", Port: 22,
		StartedAt: start, Deadline: start.Add(time.Hour), State: session.Live}
	if err := e.st.StartSession(ctx, x); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.EndSession(ctx, x.ID, session.Closed, "", "", 1, 1, start.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := e.st.StartRecording(ctx, store.Recording{SessionID: x.ID, Target: x.Target, Principal: x.Principal, StartedAt: start}); err != nil {
		t.Fatal(err)
	}
	rec, err := e.recordings.Create(x.ID, recording.Header{Width: 80, Height: 24}, start, false)
	if err != nil {
		t.Fatal(err)
	}
	rec.Output(start.Add(time.Second), []byte("marker-1\r\n"))
	sha, size, err := rec.Close(start.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.SaveRecording(ctx, x.ID, sha, size, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	c := e.browser(t)
	e.signin(t, c, e.admin)
	if status, body, _ := get(t, c, e.srv.URL+"/ui/sessions"); status != http.StatusOK || !strings.Contains(body, `href="/ui/sessions/`+x.ID+`/play"`) {
		t.Errorf("sessions page: %d, no link to the recording", status)
	}
	status, body, h := get(t, c, e.srv.URL+"/ui/sessions/"+x.ID+"/play")
	if status != http.StatusOK || !strings.Contains(body, `data-src="/api/v1/sessions/`+x.ID+`/recording"`) || !strings.Contains(body, sha) {
		t.Fatalf("playback page: %d\n%s", status, body)
	}
	csp := h.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self' 'wasm-unsafe-eval';") || !regexp.MustCompile(`style-src 'self' 'nonce-[A-Za-z0-9_-]{16,}'`).MatchString(csp) {
		t.Errorf("playback CSP %q: want script-src 'self' 'wasm-unsafe-eval' and a style nonce", csp)
	}
	for _, bad := range []string{"unsafe-inline", "'unsafe-eval'", "unsafe-hashes", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("playback CSP %q contains %s", csp, bad)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") {
		t.Error("the playback page has inline script or style")
	}
	for _, f := range []string{"vendor/asciinema-player/asciinema-player.min.js", "vendor/asciinema-player/asciinema-player.css", "vendor/asciinema-player/LICENSE"} {
		if status, body, _ := get(t, c, e.srv.URL+"/ui/static/"+f); status != http.StatusOK || len(body) == 0 {
			t.Errorf("%s: %d", f, status)
		}
	}
	status, _, h = get(t, c, e.srv.URL+"/ui/sessions/"+x.ID+"/watch")
	if csp := h.Get("Content-Security-Policy"); status != http.StatusOK || !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "nonce-") {
		t.Errorf("watch page: %d, CSP %q", status, csp)
	}
}
