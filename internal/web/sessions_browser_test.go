package web_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
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

// TestConsoleSessionsPages pages through 120 ended sessions on the Sessions
// page (the real server; the sessions written into its database, as the
// relay would): 50 on the first page, newest first, Older to the next 50
// and to the last 20 (no Older there), Newer back one page at a time to
// the first; every ended session is shown exactly once, and the live one
// on each page above them. An altered place in the list is refused by the
// API and the page says so, with a link to the newest sessions. Before, the
// page showed the 50 newest ended sessions and no way to older ones.
func TestConsoleSessionsPages(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	if _, err := l.APIClient().CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, l.DBPath(), store.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	const ended = 120
	base := time.Now().Add(-3 * time.Hour)
	for i := range ended + 1 {
		// s-060 stays live, in the middle of the list's order.
		x := session.Session{ID: fmt.Sprintf("s-%03d", i), Target: "web-01", Principal: "admin", RequestID: "r-pages",
			Protocol: "tcp", Port: 22, StartedAt: base.Add(time.Duration(i) * time.Second), Deadline: time.Now().Add(time.Hour), State: session.Live}
		if err := st.StartSession(ctx, x); err != nil {
			t.Fatal(err)
		}
		if i == 60 {
			continue
		}
		if _, err := st.EndSession(ctx, x.ID, session.Closed, "", "", 0, 0, x.StartedAt.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	admin := newPerson(t, browser, "admin", l.Token)
	// page reads the ids of the ended sessions shown, checks the live one
	// is listed above them, and which page links there are.
	page := func(heading string, wantOlder, wantNewer bool) []string {
		t.Helper()
		admin.do(chromedp.WaitVisible(chromedp.ID("ended-heading")))
		if got := admin.text("#ended-heading"); got != heading {
			t.Errorf("the heading of ended sessions: %q, want %q", got, heading)
		}
		var ids []string
		admin.eval(`[...document.querySelectorAll('#ended-sessions tr[data-id]')].map(r => r.dataset.id)`, &ids)
		var live []string
		admin.eval(`[...document.querySelectorAll('#live-sessions tr[data-id]')].map(r => r.dataset.id)`, &live)
		if len(live) != 1 || live[0] != "s-060" {
			t.Errorf("%s: live sessions %v, want s-060", heading, live)
		}
		var links struct{ Older, Newer bool }
		admin.eval(`({older: !!document.querySelector('#page-older'), newer: !!document.querySelector('#page-newer')})`, &links)
		if links.Older != wantOlder || links.Newer != wantNewer {
			t.Errorf("%s: Older link %v, Newer link %v; want %v, %v", heading, links.Older, links.Newer, wantOlder, wantNewer)
		}
		return ids
	}
	want := func(from, to int) []string { // ids from..to, newest first, s-060 aside
		var ids []string
		for i := from; i >= to; i-- {
			if i != 60 {
				ids = append(ids, fmt.Sprintf("s-%03d", i))
			}
		}
		return ids
	}
	// click follows a page link (its href, as the browser would; a click
	// and a poll across the navigation lose the poll's page) and checks
	// the page it leads to.
	click := func(id, heading string) {
		t.Helper()
		var href string
		admin.eval(fmt.Sprintf(`document.querySelector('#%s').getAttribute('href')`, id), &href)
		admin.do(chromedp.Navigate(testlab.ServerURL + href))
		if got := admin.text("#ended-heading"); got != heading {
			t.Fatalf("%s leads to %q, want %q", id, got, heading)
		}
	}
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/sessions"))
	first := page("Recently ended", true, false)
	if !slices.Equal(first, want(120, 71)) {
		t.Fatalf("the first page: %v, want s-120 down to s-071", first)
	}
	click("page-older", "Ended, page 2")
	second := page("Ended, page 2", true, true)
	checkAxe(t, admin, "the second page of ended sessions")
	if !slices.Equal(second, want(70, 20)) {
		t.Errorf("the second page: %v, want s-070 down to s-020 without the live s-060", second)
	}
	click("page-older", "Ended, page 3")
	third := page("Ended, page 3", false, true)
	if !slices.Equal(third, want(19, 0)) {
		t.Errorf("the third page: %v, want s-019 down to s-000", third)
	}
	if all := slices.Concat(first, second, third); len(all) != ended || len(slices.Compact(slices.Sorted(slices.Values(all)))) != ended {
		t.Errorf("the three pages show %d sessions, want each of the %d ended once", len(all), ended)
	}
	click("page-newer", "Ended, page 2")
	if got := page("Ended, page 2", true, true); !slices.Equal(got, second) {
		t.Errorf("Newer from the third page: %v, want the second page again", got)
	}
	click("page-newer", "Recently ended")
	if got := page("Recently ended", true, false); !slices.Equal(got, first) {
		t.Errorf("Newer from the second page: %v, want the first page again", got)
	}

	// A place in the list that the API did not give (altered by hand).
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/sessions?cursor=AAAA&back="), chromedp.WaitVisible(chromedp.ID("ended-error")))
	if got := admin.text("#ended-error"); !strings.Contains(got, "no longer valid") || !strings.Contains(got, "cursor") {
		t.Errorf("the page with an altered cursor says %q", got)
	}
	click("page-newest", "Recently ended")
	if got := page("Recently ended", true, false); !slices.Equal(got, first) {
		t.Errorf("Newest after the refusal: %v, want the first page", got)
	}
}
