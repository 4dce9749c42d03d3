package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestConsoleScheduledRequest (issue 15, item 1): the request dialog's start
// field makes a scheduled request, which the dialog follows as such; a start
// the server refuses (in the past) is shown next to the field, and nothing
// is requested.
func TestConsoleScheduledRequest(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	c := l.APIClient()
	if _, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	admin := newPerson(t, browser, "admin", l.Token)
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.ID("open-request")),
		chromedp.WaitVisible(chromedp.ID("request-form")))
	admin.setValue("#duration", "30m")
	admin.setValue("#reason", "change window")
	admin.setValue("#start", "2020-01-01T10:00")
	admin.do(chromedp.Click(chromedp.ID("request-submit")))
	admin.waitFor("the refused start next to its field", `document.querySelector('#err-start').textContent.includes('start is in the past')`)
	if rs, err := c.Requests(ctx, client.RequestFilter{}); err != nil || len(rs) != 0 {
		t.Fatalf("a refused start made requests: %v, %v", rs, err)
	}
	// Tomorrow at this time, in the browser's local time.
	var tomorrow string
	admin.eval(`(() => { const d = new Date(Date.now() + 86400e3); const p = (n) => String(n).padStart(2, '0');
		return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes()); })()`, &tomorrow)
	admin.setValue("#start", tomorrow)
	admin.do(chromedp.Click(chromedp.ID("request-submit")))
	admin.waitFor("the dialog follows a scheduled request", `document.querySelector('#follow-state').textContent === 'scheduled' &&
		document.querySelector('#follow-msg').textContent.startsWith('Scheduled: opens at')`)
	rs, err := c.Requests(ctx, client.RequestFilter{})
	if err != nil || len(rs) != 1 || rs[0].State != "scheduled" || rs[0].StartsAt == nil || time.Until(*rs[0].StartsAt) < 23*time.Hour {
		t.Fatalf("requests after a scheduled ask: %+v, %v; want one scheduled about a day ahead", rs, err)
	}
}
