package web_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRecordingInBrowser drives a recorded port (record: true, record_input:
// true) end to end: the real server, the real agent, OpenSSH's sshd that
// trusts only jitgate's CA, headless Chromium for two people. It proves: a
// raw tunnel to the port is refused (jitgate connect, the API); the admin's
// browser terminal runs a typed `echo marker-$((N+1))` while carol, an
// auditor, watches it live from the Sessions page (Watch) and the admin sees
// "carol is watching"; the recording holds the marker, typed and printed,
// and its SHA-256 and size are those of the session.recorded audit event
// (also per jitgate sessions verify); the playback page plays it under its
// CSP; jitgate sessions play shows it in a terminal; jitgate ssh goes
// through the recorded terminal instead of a tunnel.
func TestRecordingInBrowser(t *testing.T) {
	b, browser, c, _ := newCertLab(t, map[string]string{"group": "prod"}, wire.PortRule{Record: true, RecordInput: true})
	ctx := context.Background()
	req := activeBastionGrant(t, b, c, 30*time.Minute, "INC-11 recorded session")

	t.Log("a raw tunnel to the recorded port is refused")
	if _, err := c.Tunnel(ctx, "web-01", 2022); client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "recorded") {
		t.Fatalf("raw tunnel through the API: %v, want 403 saying the port is recorded", err)
	}
	if out, errOut, err := b.CLIResult("connect", "web-01", "--port", "2022", "--stdio"); err == nil || !strings.Contains(errOut, "recorded") {
		t.Fatalf("jitgate connect to a recorded port: %v, stdout %q, stderr %q; want a refusal saying it is recorded", err, out, errOut)
	}

	if _, err := c.Bind(ctx, wire.Binding{Principal: "user:carol", Role: "auditor", Scope: "label:group=prod"}); err != nil {
		t.Fatal(err)
	}
	tc, err := c.CreateToken(ctx, wire.TokenCreate{User: "carol", Name: "browser test", TTL: wire.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	admin := newPerson(t, browser, "admin", b.Token)
	carol := newPerson(t, browser, "carol", tc.Secret)

	admin.do(chromedp.Navigate(fmt.Sprintf("%s/ui/terminal/%s?port=2022", testlab.ServerURL, req.ID)), chromedp.WaitVisible(chromedp.ID("term-connect")))
	admin.waitFor("the terminal page's script ready", `document.querySelector('#term-form').dataset.ready === '1'`)
	admin.do(chromedp.Click(chromedp.ID("term-connect")))
	admin.waitFor("connected", `document.querySelector('#term-status').textContent.startsWith('Connected')`)
	ss, err := c.SearchSessions(ctx, client.SessionQuery{Active: true, Target: "web-01"})
	if err != nil || len(ss) != 1 || !ss[0].Watchable || ss[0].Recording == nil {
		t.Fatalf("live sessions %+v, %v: want one watchable, recorded terminal", ss, err)
	}
	id := ss[0].ID

	t.Log("carol watches from the Sessions page; the admin is told")
	carol.do(chromedp.Navigate(testlab.ServerURL+"/ui/sessions"), chromedp.WaitVisible(chromedp.CSS(`[data-watch="`+id+`"]`)),
		chromedp.Click(chromedp.CSS(`[data-watch="`+id+`"]`)), chromedp.WaitVisible(chromedp.ID("watch-status")))
	carol.waitFor("watching", `document.querySelector('#watch') && document.querySelector('#watch').dataset.ready === '1'`)
	admin.waitFor("the watching notice", `document.querySelector('#term-notice').textContent.includes('carol is watching')`)

	n := rand.IntN(100000)
	marker := fmt.Sprintf("marker-%d", n+1)
	// The shell computes the marker: it is on the screen only if the typed
	// line ran on the target.
	admin.do(chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: fmt.Sprintf("echo marker-$((%d+1))", n)})
		return err
	}), chromedp.KeyEvent(kb.Enter))
	admin.waitFor("the marker in the terminal", fmt.Sprintf(`document.querySelector('.xterm-rows').textContent.includes(%s)`, jsString(marker)))
	carol.waitFor("the marker in the watcher's view", fmt.Sprintf(`document.querySelector('#watch .xterm-rows').textContent.includes(%s)`, jsString(marker)))
	carol.shot("watch")
	if _, err := c.KillSession(ctx, id, "e2e recorded"); err != nil {
		t.Fatal(err)
	}
	admin.waitFor("the terminal ended", `document.querySelector('#term-status').textContent.includes('ended by admin')`)
	carol.waitFor("the watcher's view ended", `document.querySelector('#watch-status').textContent.includes('ended')`)

	t.Log("the recording holds the marker and matches its audit event")
	var x wire.BastionSession
	b.Eventually("the recording saved", 10*time.Second, func() bool {
		xs, err := c.SearchSessions(ctx, client.SessionQuery{ID: id})
		if err == nil && len(xs) == 1 && xs[0].Recording != nil && xs[0].Recording.State == "saved" {
			x = xs[0]
			return true
		}
		return false
	})
	var file bytes.Buffer
	if _, err := c.Recording(ctx, id, &file); err != nil {
		t.Fatal(err)
	}
	_, events, err := recording.Parse(bytes.NewReader(file.Bytes()))
	if err != nil {
		t.Fatalf("the recording is not asciicast v2: %v", err)
	}
	var out, in strings.Builder
	for _, e := range events {
		switch e.Code {
		case "o":
			out.WriteString(e.Data)
		case "i":
			in.WriteString(e.Data)
		}
	}
	if !strings.Contains(out.String(), marker) || !strings.Contains(in.String(), fmt.Sprintf("echo marker-$((%d+1))", n)) {
		t.Errorf("recorded output %q and input %q: want the marker printed and the line typed", out.String(), in.String())
	}
	sum := sha256.Sum256(file.Bytes())
	evs, err := c.Audit(ctx, client.AuditFilter{Action: "session.recorded", Target: "web-01"})
	if err != nil || len(evs) != 1 || evs[0].Details["session"] != id || evs[0].Details["sha256"] != hex.EncodeToString(sum[:]) ||
		evs[0].Details["bytes"] != float64(file.Len()) || x.Recording.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("session.recorded %+v (%v); the file has sha256 %x, %d bytes", evs, err, sum, file.Len())
	}
	if w, err := c.Audit(ctx, client.AuditFilter{Action: "session.watched", Target: "web-01"}); err != nil || len(w) != 1 || w[0].Actor != "carol" {
		t.Errorf("session.watched %+v, %v; want carol's", w, err)
	}
	if out := b.CLI("sessions", "verify", id); !strings.Contains(out, "OK: the recording is the one audited") {
		t.Errorf("jitgate sessions verify: %q", out)
	}
	if out := b.CLI("sessions", "play", id, "--speed", "1000", "--max-idle", "10ms"); !strings.Contains(out, marker) {
		t.Errorf("jitgate sessions play: %q, want the marker", out)
	}

	t.Log("the playback page plays it")
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/sessions"), chromedp.WaitVisible(chromedp.CSS(`[data-play="`+id+`"]`)),
		chromedp.Click(chromedp.CSS(`[data-play="`+id+`"]`)), chromedp.WaitVisible(chromedp.ID("recording-sum")))
	admin.waitFor("the player ready", `document.querySelector('#player') && document.querySelector('#player').dataset.ready === '1'`)
	if _, err := chromedp.Run(admin.ctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelector('#player').textContent.includes(%s)`, jsString(marker)),
		chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		// The player starts on a click (its play button) in some builds.
		admin.do(chromedp.Click(chromedp.CSS(`#player .ap-player`)))
		admin.waitFor("the marker in the player", fmt.Sprintf(`document.querySelector('#player').textContent.includes(%s)`, jsString(marker)))
	}
	admin.shot("recording-playback")

	t.Log("jitgate ssh to the recorded port goes through the recorded terminal")
	cmd := b.ClientNS.Command(ctx, b.Binary, "ssh", "root@web-01", "-p", "2022")
	cmd.Env = append(os.Environ(), b.ClientEnv()...)
	cmd.Stdin = strings.NewReader("echo cli-$((20+22))\rexit\r")
	var cout, cerr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &cout, &cerr
	if err := cmd.Run(); err != nil || !strings.Contains(cout.String(), "cli-42") || !strings.Contains(cerr.String(), "recorded") {
		t.Fatalf("jitgate ssh on a recorded port: %v\nstdout %q\nstderr %q", err, cout.String(), cerr.String())
	}
	b.Eventually("the CLI's session recorded too", 10*time.Second, func() bool {
		evs, err := c.Audit(ctx, client.AuditFilter{Action: "session.recorded", Target: "web-01"})
		return err == nil && len(evs) == 2
	})
}
