package web_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// newCertLab is the lab of the browser terminal tests: the bastion lab with
// its server, headless Chromium in the client's namespace, the admin's API
// client, and target web-01 (labels) whose sshd on port 2022 admits
// jitgate's SSH certificates only (testlab.StartCertTarget), gated by a
// bastion rule for root on 2022 that rule's Record and RecordInput extend.
func newCertLab(t *testing.T, labels map[string]string, rule wire.PortRule) (*testlab.BastionLab, context.Context, *client.Client, testlab.CertTarget) {
	t.Helper()
	b := testlab.NewBastion(t)
	browser := startBrowser(t, b.Lab)
	b.StartServer()
	c := b.APIClient()
	rule.Port, rule.Protocol, rule.MaxDuration, rule.Access, rule.Logins = 2022, "tcp", wire.Duration(time.Hour), "bastion", []string{"root"}
	target := b.StartCertTarget(c, "web-01", labels, 2022, wire.Policy{Rules: []wire.PortRule{rule}})
	return b, browser, c, target
}

// activeBastionGrant asks, through c, for a bastion grant of web-01's port
// 2022 for d and waits until it is active.
func activeBastionGrant(t *testing.T, b *testlab.BastionLab, c *client.Client, d time.Duration, reason string) wire.Request {
	t.Helper()
	ctx := context.Background()
	req, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"2022"}, Bastion: true,
		Duration: wire.Duration(d), Reason: reason})
	if err != nil {
		t.Fatal(err)
	}
	b.Eventually("the bastion grant active", 10*time.Second, func() bool {
		r, err := c.Request(ctx, req.ID)
		return err == nil && r.State == "active"
	})
	return req
}

// TestTerminalInBrowser drives the browser terminal in headless Chromium
// against the real server, the real agent and OpenSSH's sshd on a target the
// browser has no route to (the bastion lab). The sshd has no authorized_keys
// and trusts only jitgate's SSH CA, so every login below is the server's
// certificate for the grant. It proves: Connect on the target page opens a
// terminal that runs what is typed (the shell's arithmetic comes back); the
// session is listed as a terminal; xterm.js's styles apply under the nonce
// CSP; a kill closes the terminal with who and why; a revoked grant closes it
// and refuses the next Connect; a grant's expiry closes it; the agent's loss
// closes it with "connection lost" and a Reconnect button; a host key other
// than the one the agent reports is refused (on Reconnect) and audited.
func TestTerminalInBrowser(t *testing.T) {
	b, browser, c, target := newCertLab(t, nil, wire.PortRule{})
	ctx := context.Background()
	caFile := target.CAFile
	grant := func(d time.Duration) wire.Request {
		t.Helper()
		return activeBastionGrant(t, b, c, d, "INC-9 browser terminal")
	}
	req := grant(30 * time.Minute)

	admin := newPerson(t, browser, "admin", b.Token)
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.WaitVisible(chromedp.CSS(`[data-connect="2022"]`)),
		chromedp.Click(chromedp.CSS(`[data-connect="2022"]`)), chromedp.WaitVisible(chromedp.ID("term-connect")))
	status := func() string { return admin.text("#term-status") }
	connect := func() {
		t.Helper()
		admin.waitFor("the terminal page's script ready", `document.querySelector('#term-form').dataset.ready === '1'`)
		admin.do(chromedp.Click(chromedp.ID("term-connect")))
		admin.waitFor("connected", `document.querySelector('#term-status').textContent.startsWith('Connected')`)
	}
	screen := `document.querySelector('.xterm-rows').textContent`
	// typeLine types into the terminal (xterm.js's input element) and waits
	// for the shell to print want.
	typeLine := func(line, want string) {
		t.Helper()
		// Text goes in as an input event, as an input method or a paste
		// delivers it (chromedp's key events would type each character
		// twice into xterm.js: once from the key, once from its char);
		// Enter as a key.
		admin.do(chromedp.Focus(chromedp.CSS(".xterm-helper-textarea")), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: line})
			return err
		}), chromedp.KeyEvent(kb.Enter))
		if _, err := chromedp.Run(admin.ctx, chromedp.Poll[bool](fmt.Sprintf(`%s.includes(%s)`, screen, jsString(want)),
			chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
			var text string
			admin.eval(screen, &text)
			t.Fatalf("the terminal never showed %q: status %q, screen %q", want, status(), text)
		}
	}
	connect()
	n := rand.IntN(100000)
	// The shell computes the marker: it is on the screen only if the typed
	// line ran on the target, not merely echoed.
	typeLine(fmt.Sprintf("echo marker-$((%d+1))", n), fmt.Sprintf("marker-%d", n+1))
	ss, err := c.Sessions(ctx, true)
	if err != nil || len(ss) != 1 || ss[0].Via != "terminal" || ss[0].Login != "root" || ss[0].RequestID != req.ID {
		t.Fatalf("live sessions %+v, %v: want one terminal session as root", ss, err)
	}
	// xterm.js's own <style> elements (theme, cell sizes) apply under the
	// page's nonce: the rows take its default foreground, white, not the
	// page's dark text.
	var color string
	admin.eval(`getComputedStyle(document.querySelector('.xterm-rows')).color`, &color)
	if color != "rgb(255, 255, 255)" {
		t.Errorf("the terminal's rows are %s: xterm.js's styles did not apply", color)
	}
	admin.shot("terminal")

	t.Log("a kill closes the terminal with who ended it and why")
	if _, err := c.KillSession(ctx, ss[0].ID, "e2e kill"); err != nil {
		t.Fatal(err)
	}
	admin.waitFor("the terminal says it was killed", `document.querySelector('#term-status').textContent.includes('ended by admin: e2e kill')`)

	t.Log("connecting again works; a revoked grant closes the terminal and refuses the next Connect")
	connect()
	typeLine("echo again-$((2*21))", "again-42")
	if _, err := c.Revoke(ctx, req.ID, "e2e revoke"); err != nil {
		t.Fatal(err)
	}
	admin.waitFor("the terminal says the grant was revoked", `document.querySelector('#term-status').textContent.includes('revoked')`)
	admin.do(chromedp.Click(chromedp.ID("term-connect")))
	admin.waitFor("the next Connect is refused", `document.querySelector('#term-status').textContent.startsWith('Could not connect')`)
	if s := status(); !strings.Contains(s, "not active") {
		t.Errorf("refused Connect says %q", s)
	}

	t.Log("a grant's expiry closes the terminal")
	short := grant(12 * time.Second)
	admin.do(chromedp.Navigate(fmt.Sprintf("%s/ui/terminal/%s?port=2022", testlab.ServerURL, short.ID)), chromedp.WaitVisible(chromedp.ID("term-connect")))
	connect()
	typeLine("echo short-$((3*3))", "short-9")
	if _, err := chromedp.Run(admin.ctx, chromedp.Poll[bool](`document.querySelector('#term-status').textContent.includes('grant expired')`,
		chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(100*time.Millisecond))); err != nil {
		t.Fatalf("the terminal did not end with the grant's expiry: status %q: %v", status(), err)
	}

	t.Log("the agent's loss ends the terminal with a reconnect offer")
	third := grant(30 * time.Minute)
	admin.do(chromedp.Navigate(fmt.Sprintf("%s/ui/terminal/%s?port=2022", testlab.ServerURL, third.ID)), chromedp.WaitVisible(chromedp.ID("term-connect")))
	connect()
	typeLine("echo third-$((5*5))", "third-25")
	b.Agent.Kill()
	admin.waitFor("the terminal offers to reconnect", `!document.querySelector('#term-lost').hidden &&
		document.querySelector('#term-lost').textContent.includes('Connection lost') && document.querySelector('#term-status').textContent.includes('agent was lost')`)

	t.Log("a host key other than the one the agent reports is refused and audited")
	other := filepath.Join(b.Dir, "other_host_ed25519")
	if o, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, o)
	}
	b.StartTargetAgent("", "--ssh-trusted-ca", caFile, "--ssh-host-keys", other+".pub")
	otherKey, err := os.ReadFile(other + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	b.Eventually("the agent reports the other host key", 10*time.Second, func() bool {
		t, err := c.Target(ctx, "web-01")
		return err == nil && t.Inventory != nil && len(t.Inventory.SSHHostKeys) == 1 && strings.HasPrefix(string(otherKey), t.Inventory.SSHHostKeys[0])
	})
	// Reconnect (a certificate login needs nothing typed again) reaches the
	// target once the agent's relay is back, and is refused for its key.
	b.Eventually("the agent's relay is back and the target answers", 15*time.Second, func() bool {
		admin.do(chromedp.Click(chromedp.ID("term-reconnect")))
		admin.waitFor("an answer", `/ended|Could not connect/.test(document.querySelector('#term-status').textContent)`)
		return strings.Contains(status(), "not one its agent reported")
	})
	evs, err := c.Audit(ctx, client.AuditFilter{Action: "session.host_key_mismatch"})
	if err != nil || len(evs) == 0 || evs[0].RequestID != third.ID {
		t.Fatalf("host key audit %+v, %v", evs, err)
	}
	if ss, _ := c.Sessions(ctx, true); len(ss) != 0 {
		t.Errorf("live sessions after a refused host key: %+v", ss)
	}
}
