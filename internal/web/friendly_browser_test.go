package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/web"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestConsoleFollowsRolesAndStates (issue 14 item 6), in headless Chromium
// against the real server and agent:
//   - a target with a policy whose agent never connected is "Not enforcing
//     yet", not listed with the protected ones;
//   - navigation follows the viewer's roles; someone without a role gets a
//     page that names the admins and the configured contact to ask;
//   - a policy-editor refusal shows next to its field; a save over another
//     editor's change is refused and says so;
//   - audit details show durations as durations; connect lines have a copy
//     button; an ended request says when it ended.
func TestConsoleFollowsRolesAndStates(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer("--contact", "it-desk@example.com")
	ctx := context.Background()
	c := l.APIClient()

	web01, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"group": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	l.StartAgent(web01.EnrollToken)
	if _, err := c.SetPolicy(ctx, "web-01", web.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "lone-01", Labels: map[string]string{"group": "prod"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetPolicy(ctx, "lone-01", web.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	l.WaitApplied("web-01")
	for _, b := range []wire.Binding{{Principal: "user:carol", Role: "admin", Scope: "*"},
		{Principal: "user:dave", Role: "requester", Scope: "label:group=prod"}} {
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
	admin := newPerson(t, browser, "admin", l.Token)

	// Not enforcing yet: lone-01 has a policy but no agent.
	for tab, want := range map[string]string{"configured": "web-01", "not-enforcing": "lone-01"} {
		admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/?tab=" + tab))
		admin.waitFor(want+" in tab "+tab, fmt.Sprintf(`!!document.querySelector('#targets tr[data-name=%q]')`, want))
		if rows := admin.text("#targets tbody"); strings.Count(rows, "-01") != 1 {
			t.Errorf("tab %s lists more than %s: %q", tab, want, rows)
		}
	}
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/?tab=not-enforcing"))
	if hint := admin.text(`#targets tr[data-name="lone-01"] .hint`); !strings.Contains(hint, "Not enforcing yet") || !strings.Contains(hint, "open to every source") {
		t.Errorf("lone-01's state: %q", hint)
	}
	if tab := admin.text("#tab-not-enforcing"); !strings.HasPrefix(tab, "Not enforcing yet") {
		t.Errorf("the tab reads %q", tab)
	}
	checkAxe(t, admin, "the not-enforcing tab")
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/targets/lone-01"))
	checkAxe(t, admin, "a target not enforcing yet")
	if callout := admin.text("main"); !strings.Contains(callout, "Not enforcing yet") {
		t.Errorf("lone-01's page does not say it is not enforced: %q", callout)
	}

	// Navigation follows the roles.
	navOf := func(p *person) string { return p.text("header nav") }
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/"))
	if nav := navOf(admin); !strings.Contains(nav, "Approvals") || !strings.Contains(nav, "Audit") {
		t.Errorf("admin's navigation: %q", nav)
	}
	dave := newPerson(t, browser, "dave", token("dave"))
	if nav := navOf(dave); !strings.Contains(nav, "Targets") || strings.Contains(nav, "Approvals") || strings.Contains(nav, "Audit") {
		t.Errorf("a requester's navigation: %q, want Targets without Approvals or Audit", nav)
	}
	dave.do(chromedp.Navigate(testlab.ServerURL + "/ui/targets/web-01"))
	var editable bool
	dave.eval(`!!document.querySelector('#policy-form')`, &editable)
	if editable {
		t.Error("a requester is offered the policy editor")
	}

	// No role at all: whom to ask.
	erin := newPerson(t, browser, "erin", token("erin"))
	if got := erin.text("main h1"); got != "You have no access yet" {
		t.Errorf("erin's page: %q", got)
	}
	if admins := erin.text("#admins"); !strings.Contains(admins, "user:carol") {
		t.Errorf("erin is not told to ask carol: %q", admins)
	}
	var contactHref string
	erin.eval(`document.querySelector('#contact a') ? document.querySelector('#contact a').getAttribute('href') : ''`, &contactHref)
	if contact := erin.text("#contact"); !strings.Contains(contact, "it-desk@example.com") || contactHref != "mailto:it-desk@example.com" {
		t.Errorf("erin is not told to ask the configured contact: %q (link %q)", contact, contactHref)
	}
	checkAxe(t, erin, "the page for people without a role")
	var navLinks int
	erin.eval(`document.querySelectorAll('header nav a').length`, &navLinks)
	if navLinks != 0 {
		t.Errorf("erin's navigation has %d links, want none", navLinks)
	}

	// The policy editor: a refusal next to its field.
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.CSS("details.editor summary")))
	admin.setValue("#rules tr.rule:nth-child(2) .r-max", "1000h")
	admin.do(chromedp.Click(chromedp.ID("save-policy")))
	admin.waitFor("the error next to the max duration", `!!document.querySelector('#rules tr.rule:nth-child(2) .field-error')`)
	var field struct {
		Invalid, Text string
	}
	admin.eval(`(() => { const r = document.querySelector('#rules tr.rule:nth-child(2)');
		return {Invalid: r.querySelector('.r-max').getAttribute('aria-invalid') || '', Text: r.querySelector('.r-max').closest('td').querySelector('.field-error').textContent}; })()`, &field)
	if field.Invalid != "true" || !strings.Contains(field.Text, "1000h") {
		t.Errorf("the max duration's error: %+v", field)
	}
	checkAxe(t, admin, "the policy editor with an error")

	// Another editor saves first: this page's save is refused, nothing is
	// overwritten.
	admin.setValue("#rules tr.rule:nth-child(2) .r-max", "2h")
	other := web.DefaultPolicy()
	other.Rules[0].MaxDuration = wire.Duration(time.Hour)
	if _, err := c.SetPolicy(ctx, "web-01", other); err != nil {
		t.Fatal(err)
	}
	admin.do(chromedp.Click(chromedp.ID("save-policy")))
	admin.waitFor("refused as stale", `document.querySelector('#policy-status').textContent.includes('Someone else changed this policy')`)
	if tg, err := c.Target(ctx, "web-01"); err != nil || time.Duration(tg.Policy.Rules[0].MaxDuration) != time.Hour || time.Duration(tg.Policy.Rules[1].MaxDuration) != 3*time.Hour {
		t.Errorf("policy after the stale save: %+v %v, want the other editor's", tg.Policy, err)
	}

	// A grant: its connect lines have copy buttons; once revoked, it says
	// when it ended.
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.ID("open-request")),
		chromedp.WaitVisible(chromedp.ID("request-form")))
	admin.setValue("#duration", "30m")
	admin.do(chromedp.SendKeys(chromedp.ID("reason"), "INC-3 check"), chromedp.Click(chromedp.ID("request-submit")))
	admin.waitFor("active with connect lines", `document.querySelector('#follow-state').textContent === 'active' && document.querySelectorAll('#connect-list li').length > 0`)
	var copyText string
	admin.eval(`document.querySelector('#connect-list li button[data-copy]').dataset.copy`, &copyText)
	if !strings.Contains(copyText, testlab.ServerIP.String()) {
		t.Errorf("the copy button copies %q", copyText)
	}
	admin.do(chromedp.Click(chromedp.CSS("#connect-list li button[data-copy]")))
	admin.waitFor("copied (or the text selected)", `['Copied', 'Press Ctrl+C'].includes(document.querySelector('#connect-list li button[data-copy] .copy-label').textContent)`)
	checkAxe(t, admin, "the request dialog with connect lines")
	admin.waitFor("counting down", `/^\d+:\d\d left$/.test(document.querySelector('#follow-countdown').textContent)`)
	admin.do(chromedp.Click(chromedp.ID("follow-revoke")))
	admin.waitFor("revoked", `document.querySelector('#follow-state').textContent === 'revoked'`)
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/targets/web-01"))
	if recent := admin.text(".recent tbody tr:first-child"); !strings.Contains(recent, "ended") || !strings.Contains(recent, "revoked") {
		t.Errorf("the revoked request's row: %q, want when it ended", recent)
	}
	checkAxe(t, admin, "the target page")
	dave.do(chromedp.Navigate(testlab.ServerURL + "/ui/"))
	checkAxe(t, dave, "a requester's dashboard")

	// Audit details: durations as durations.
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/audit?target=web-01"))
	admin.waitFor("audit table", `!!document.querySelector('#audit-table tbody tr')`)
	checkAxe(t, admin, "the audit page")
	details := admin.text("#audit-table tbody")
	if !strings.Contains(details, `"duration":"30m"`) || !strings.Contains(details, `"max_duration":"3h"`) || strings.Contains(details, "10800000000000") {
		t.Errorf("audit details do not read as durations: %q", details)
	}
}
