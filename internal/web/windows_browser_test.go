package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestConsoleWindowsAndGroups (issue 15, items 2 and 4): the policy editor
// shows and accepts time windows and approvals by group; a bad window is
// refused with the server's field error and changes nothing; the policy
// table shows them; the approvals page says which groups are still
// missing.
func TestConsoleWindowsAndGroups(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	c := l.APIClient()
	if _, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetPolicy(ctx, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 5432, MaxDuration: wire.Duration(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	admin := newPerson(t, browser, "admin", l.Token)
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/db-01"), chromedp.Click(chromedp.CSS("details.editor summary")))
	admin.setValue("#rules tr.rule:first-child .r-windows", "Mon-Fri 08:00-18:00")
	admin.do(chromedp.Click(chromedp.ID("save-policy")))
	admin.waitFor("the refusal", `document.querySelector('#policy-status').textContent.includes('rules[0].windows[0]')`)
	if got := admin.text("#policy-status"); !strings.Contains(got, "DAYS HH:MM-HH:MM ZONE") {
		t.Errorf("the editor's refusal %q does not say how to write a window", got)
	}
	if tg, err := c.Target(ctx, "db-01"); err != nil || len(tg.Policy.Rules[0].Windows) != 0 {
		t.Fatalf("a refused window changed the policy: %+v %v", tg.Policy, err)
	}

	// Always open, so that the request below is not refused by the clock.
	admin.setValue("#rules tr.rule:first-child .r-windows", "mon-sun 00:00-24:00 UTC; Sat 22:00-06:00 Europe/Berlin")
	admin.setValue("#rules tr.rule:first-child .r-groups", "group:dba=1, group:security")
	admin.do(chromedp.Click(chromedp.ID("save-policy")))
	admin.waitFor("policy saved", `document.querySelector('#policy-status').textContent.startsWith('Saved')`)
	tg, err := c.Target(ctx, "db-01")
	if err != nil {
		t.Fatal(err)
	}
	r := tg.Policy.Rules[0]
	if strings.Join(r.Windows, "; ") != "Mon-Sun 00:00-24:00 UTC; Sat 22:00-06:00 Europe/Berlin" ||
		len(r.Approvals) != 2 || r.Approvals[1] != (wire.GroupApproval{From: "group:security", Count: 1}) || r.Approval.Mode != "manual" || r.Approval.Approvals != 2 {
		t.Fatalf("policy after the editor: %+v", r)
	}
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/db-01"), chromedp.WaitVisible(chromedp.ID("policy")))
	if got := admin.text("#policy"); !strings.Contains(got, "Mon-Sun 00:00-24:00 UTC; Sat 22:00-06:00 Europe/Berlin") || !strings.Contains(got, "group:dba=1, group:security=1") {
		t.Errorf("the policy table does not show the windows and groups:\n%s", got)
	}

	req, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "db-01", Ports: []string{"5432"}, Source: "198.51.100.7", Duration: wire.Duration(10 * time.Minute), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/approvals"), chromedp.WaitVisible(chromedp.ID("approval-"+req.ID)))
	if got := admin.text("#approval-" + req.ID + " .missing"); got != "still missing: 1 from group:dba, 1 from group:security" {
		t.Errorf("the approvals page says %q", got)
	}
}
