package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestConsoleSessionsInBrowser lists a real bastion session (the real
// server and agent in the lab's namespaces, a tunnel to the lab's sshd) on
// the Sessions page and disconnects it from there: the tunnel closes and
// the session is recorded killed by the admin with the reason typed in the
// dialog. An auditor sees the session but no Disconnect button, a reader
// sees neither; both get 403 when their browser calls the kill endpoint
// itself (with a valid CSRF token), and the session lives on.
func TestConsoleSessionsInBrowser(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	c := l.APIClient()
	tg, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"group": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	l.StartAgent(tg.EnrollToken)
	if _, err := c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"}}}); err != nil {
		t.Fatal(err)
	}
	req, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Bastion: true,
		Duration: wire.Duration(30 * time.Minute), Reason: "INC-7 rotate keys"})
	if err != nil {
		t.Fatal(err)
	}
	l.Eventually("the bastion grant active", 10*time.Second, func() bool {
		r, err := c.Request(ctx, req.ID)
		return err == nil && r.State == "active"
	})
	conn, err := testenv.DialTunnel(ctx, c, "web-01", 22, 10*time.Second)
	if err != nil {
		t.Fatalf("a tunnel through the agent's relay: %v", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if banner, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
		t.Fatalf("sshd's banner through the tunnel: %q, %v", banner, err)
	}
	conn.SetReadDeadline(time.Time{})
	ss, err := c.Sessions(ctx, true)
	if err != nil || len(ss) != 1 {
		t.Fatalf("live sessions: %+v, %v", ss, err)
	}
	id := ss[0].ID
	row := "#session-" + id

	for _, b := range []wire.Binding{{Principal: "user:carol", Role: "auditor", Scope: "label:group=prod"},
		{Principal: "user:dave", Role: "reader", Scope: "label:group=prod"}} {
		if _, err := c.Bind(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	token := func(user string) string {
		tc, err := c.CreateToken(ctx, wire.TokenCreate{User: user, Name: "browser test", TTL: wire.Duration(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return tc.Secret
	}
	// killStatus is the status of the kill endpoint called by the page's
	// own origin, cookie and CSRF token.
	killStatus := func(p *person) int {
		var status int
		p.eval(fmt.Sprintf(`fetch('/api/v1/sessions/%s/kill', {method: 'POST', credentials: 'same-origin',
			headers: {'Content-Type': 'application/json', 'X-CSRF-Token': document.body.dataset.csrf},
			body: JSON.stringify({reason: 'not mine to end'})}).then(r => r.status)`, id), &status)
		return status
	}
	carol := newPerson(t, browser, "carol", token("carol"))
	carol.do(chromedp.Navigate(testlab.ServerURL+"/ui/sessions"), chromedp.WaitVisible(chromedp.CSS(row)))
	var buttons int
	carol.eval(`document.querySelectorAll('[data-kill]').length`, &buttons)
	if buttons != 0 {
		t.Errorf("an auditor is offered %d Disconnect buttons", buttons)
	}
	if st := killStatus(carol); st != http.StatusForbidden {
		t.Errorf("an auditor's kill: %d, want 403", st)
	}
	dave := newPerson(t, browser, "dave", token("dave"))
	dave.do(chromedp.Navigate(testlab.ServerURL+"/ui/sessions"), chromedp.WaitVisible(chromedp.ID("no-live")))
	dave.eval(`document.querySelectorAll('[data-kill]').length + document.querySelectorAll('tr[data-id]').length`, &buttons)
	if buttons != 0 {
		t.Errorf("a reader sees %d sessions or buttons", buttons)
	}
	if st := killStatus(dave); st != http.StatusForbidden {
		t.Errorf("a reader's kill: %d, want 403", st)
	}
	if ss, err := c.Sessions(ctx, true); err != nil || len(ss) != 1 || ss[0].ID != id {
		t.Fatalf("after the refused kills the session is not live: %+v, %v", ss, err)
	}

	admin := newPerson(t, browser, "admin", l.Token)
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/sessions"), chromedp.WaitVisible(chromedp.CSS(row)))
	text := admin.text(row)
	for _, want := range []string{"admin", testlab.Client1.String(), "web-01", "22/tcp", req.ID, "live"} {
		if !strings.Contains(text, want) {
			t.Errorf("the session's row %q lacks %q", text, want)
		}
	}
	// sshd sent its banner and waits for ours: nothing in yet.
	before := admin.text(row + " .bytes")
	if !strings.HasPrefix(before, "0 B / ") || before == "0 B / 0 B" {
		t.Errorf("the row's bytes: %q, want sshd's banner out and nothing in", before)
	}
	// Our banner goes in, sshd answers with its key exchange: the open
	// page follows the bytes without a reload.
	fmt.Fprint(conn, "SSH-2.0-jitgate_test\r\n")
	admin.waitFor("the bytes move both ways on the open page", fmt.Sprintf(
		`(t => t.startsWith('22 B / ') && t.split(' / ')[1] !== %s)(document.querySelector('#session-%s .bytes').textContent)`,
		jsString(strings.TrimPrefix(before, "0 B / ")), id))
	admin.shot("sessions")
	admin.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-kill=%q]`, id))), chromedp.WaitVisible(chromedp.ID("kill-reason")))
	// An empty reason is refused in the dialog, nothing is sent.
	admin.do(chromedp.Click(chromedp.ID("kill-submit")))
	admin.waitFor("the dialog asks for a reason", `document.querySelector('#kill-error').textContent.includes('Say why')`)
	admin.do(chromedp.SendKeys(chromedp.ID("kill-reason"), "suspicious activity"), chromedp.Click(chromedp.ID("kill-submit")))
	admin.waitFor("disconnected", `document.querySelector('#sessions-status').textContent.startsWith('Disconnected')`)

	// The client's tunnel closes, and the session is recorded as killed.
	// No read deadline here: the tunnel (a WebSocket's net.Conn) reports
	// one as "context canceled" and closes itself, which would pass for
	// the disconnect.
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, conn); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the tunnel is still open 5 s after the disconnect")
	}
	ss, err = c.Sessions(ctx, false)
	if err != nil || len(ss) != 1 {
		t.Fatalf("sessions: %+v, %v", ss, err)
	}
	if x := ss[0]; x.State != "ended" || x.EndReason != "killed" || x.EndedBy != "admin" || x.Message != "suspicious activity" || x.BytesIn == 0 || x.BytesOut == 0 {
		t.Errorf("the disconnected session: %+v", x)
	}
	admin.do(chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#ended-sessions "+row)))
	if got := admin.text(row + " .s-reason"); !strings.Contains(got, "killed by admin") || !strings.Contains(got, "suspicious activity") {
		t.Errorf("the ended row says %q", got)
	}
}
