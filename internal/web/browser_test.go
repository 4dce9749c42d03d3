package web_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/web"
	"github.com/jitgate/jitgate/internal/wire"
)

// The browser tests run the real jitgate binary (server and agent) in the
// lab's namespaces; TestMain builds it once.
func TestMain(m *testing.M) { os.Exit(testlab.Run(m)) }

// chromiumPath is Debian's chromium package.
const chromiumPath = "/usr/bin/chromium"

// startBrowser starts headless Chromium inside the lab's client namespace,
// so the server sees it come from testlab.Client1 ("my IP") and a grant
// for that address really lets it (and the lab's ssh client) through.
// chromedp talks to it over the DevTools pipe (file descriptors 3 and 4,
// which `ip netns exec` passes on).
func startBrowser(t *testing.T, l *testlab.Lab) context.Context {
	t.Helper()
	testenv.RequireTool(t, "chromium")
	ns := l.ClientNS.Name()
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter"),
		chromedp.Flag("password-store", "basic"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			cmd.Args = append([]string{ip, "netns", "exec", ns, chromiumPath}, cmd.Args[1:]...)
			cmd.Path = ip
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	}
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	t.Cleanup(cancelCtx)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// person is one signed-in browser profile (its own cookies).
type person struct {
	t    *testing.T
	name string
	ctx  context.Context
}

func newPerson(t *testing.T, browser context.Context, name, token string) *person {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelT)
	p := &person{t: t, name: name, ctx: ctx}
	p.do(chromedp.Navigate(testlab.ServerURL + "/ui/"))
	p.do(chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`#signin-form button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("whoami")))
	if got := p.text("#whoami"); got != name {
		t.Fatalf("signed in as %q, want %q", got, name)
	}
	return p
}

func (p *person) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		loc, _ := chromedp.Run(p.ctx, chromedp.Location())
		p.t.Fatalf("%s's browser at %s: %v", p.name, loc, err)
	}
}

func (p *person) text(sel string) string {
	p.t.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.t.Fatalf("%s's browser: text of %s: %v", p.name, sel, err)
	}
	return strings.TrimSpace(s)
}

func (p *person) eval(expr string, out any) {
	p.t.Helper()
	raw, err := chromedp.Run(p.ctx, chromedp.Evaluate[json.RawMessage](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s's browser: %s: %v", p.name, expr, err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		p.t.Fatalf("%s: decoding %s: %v", expr, raw, err)
	}
}

// setValue sets a form field's value as a person's edit would (input and
// change events).
func (p *person) setValue(sel, value string) {
	p.t.Helper()
	var ok bool
	p.eval(fmt.Sprintf(`(() => { const e = document.querySelector(%s); if (!e) return false; e.value = %s;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); return true; })()`,
		jsString(sel), jsString(value)), &ok)
	if !ok {
		p.t.Fatalf("%s's browser: no %s", p.name, sel)
	}
}

// waitFor polls a JavaScript predicate until it is true.
func (p *person) waitFor(what, predicate string) {
	p.t.Helper()
	if _, err := chromedp.Run(p.ctx, chromedp.Poll[bool](predicate, chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))); err != nil {
		html, _ := chromedp.Run(p.ctx, chromedp.OuterHTML(chromedp.CSS("main")))
		p.t.Fatalf("%s's browser: %s: %v\n%s", p.name, what, err, html)
	}
}

// shot saves a screenshot into docs/img when JITGATE_SCREENSHOTS=1 (so CI
// does not rewrite the pictures).
func (p *person) shot(name string) {
	p.t.Helper()
	if os.Getenv("JITGATE_SCREENSHOTS") != "1" {
		return
	}
	buf, err := chromedp.Run(p.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "img", name+".png"), buf, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestConsoleInBrowser drives the console in headless Chromium against the
// real server, with a real agent enforcing on the lab's server host.
func TestConsoleInBrowser(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	c := l.APIClient()

	// One target of each kind: web-01 with the real agent and no policy
	// (not configured), conf-01 with a policy and no agent (not enforcing
	// yet: never listed as configured), nonft-01 whose agent reports it
	// cannot enforce (unsupported).
	web01, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"group": "prod"}})
	if err != nil {
		t.Fatal(err)
	}
	l.StartAgent(web01.EnrollToken)
	if _, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "conf-01", Labels: map[string]string{"group": "prod"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetPolicy(ctx, "conf-01", web.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	nonft, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "nonft-01", Labels: map[string]string{"group": "lab"}})
	if err != nil {
		t.Fatal(err)
	}
	unsupported(t, c, nonft.EnrollToken)
	l.Eventually("web-01's agent connected", 10*time.Second, func() bool {
		tg, err := c.Target(ctx, "web-01")
		return err == nil && tg.Agent.State == "connected"
	})
	if !l.CanConnect(testlab.Client1, testlab.ServerIP, 22) {
		t.Fatal("ssh is closed before any policy")
	}

	admin := newPerson(t, browser, "admin", l.Token)
	for tab, want := range map[string]string{"not-enforcing": "conf-01", "not-configured": "web-01", "unsupported": "nonft-01"} {
		admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/?tab=" + tab))
		admin.waitFor(want+" in tab "+tab, fmt.Sprintf(`!!document.querySelector('#targets tr[data-name=%q]')`, want))
		if n := admin.text("#targets tbody"); strings.Count(n, "-01") != 1 {
			t.Errorf("tab %s lists more than %s: %q", tab, want, n)
		}
	}
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/?tab=unsupported"))
	if hint := admin.text(`#targets tr[data-name="nonft-01"] .hint`); !strings.Contains(hint, "nf_tables") {
		t.Errorf("the unsupported target's reason: %q", hint)
	}

	// Enable JIT on web-01 from the not-configured tab.
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/?tab=not-configured"), chromedp.WaitVisible(chromedp.ID("enable-jit")))
	admin.do(chromedp.Click(chromedp.CSS(`.pick[value="web-01"]`)), chromedp.Click(chromedp.ID("enable-jit")))
	admin.waitFor("JIT enabled", `document.querySelector('#enable-status').textContent.includes('JIT enabled on 1 target')`)
	tg, err := c.Target(ctx, "web-01")
	if err != nil || tg.Policy == nil || len(tg.Policy.Rules) != 4 || tg.Policy.Rules[0].Port != 22 || time.Duration(tg.Policy.Rules[0].MaxDuration) != 3*time.Hour {
		t.Fatalf("web-01's policy after enabling JIT: %+v, %v", tg.Policy, err)
	}
	l.WaitApplied("web-01")
	l.Eventually("ssh closed by the default policy", 5*time.Second, func() bool { return !l.CanConnect(testlab.Client1, testlab.ServerIP, 22) })

	// Request access: client-side refusal first, then a refusal only the
	// server can know (the policy changed under the open page).
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.ID("open-request")),
		chromedp.WaitVisible(chromedp.ID("request-form")))
	if got := admin.text("#my-ip"); got != testlab.Client1.String() {
		t.Errorf("my IP shows %q, want %s", got, testlab.Client1)
	}
	admin.setValue("#duration", "5h")
	if got := admin.text("#err-duration"); !strings.Contains(got, "22/tcp allows at most 3h") {
		t.Errorf("a 5h request on a 3h rule: the dialog says %q", got)
	}
	admin.shot("request-dialog")
	admin.setValue("#duration", "10m")
	admin.do(chromedp.SendKeys(chromedp.ID("reason"), "INC-1 disk full"))
	if got := admin.text("#err-duration"); got != "" {
		t.Errorf("a 10m request still refused: %q", got)
	}
	short := web.DefaultPolicy()
	short.Rules[0].MaxDuration = wire.Duration(5 * time.Minute)
	if _, err := c.SetPolicy(ctx, "web-01", short); err != nil {
		t.Fatal(err)
	}
	admin.do(chromedp.Click(chromedp.ID("request-submit")))
	admin.waitFor("the server's refusal next to the duration", `document.querySelector('#err-duration').textContent.includes('exceeds the maximum of 5m')`)
	if _, err := c.SetPolicy(ctx, "web-01", web.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}

	// Submit again: the dialog follows the request until it is active and
	// shows what to connect to; the port is really open for our address.
	admin.do(chromedp.Click(chromedp.ID("request-submit")))
	admin.waitFor("the request becomes active", `document.querySelector('#follow-state').textContent === 'active'`)
	admin.waitFor("connect instructions", `document.querySelectorAll('#connect-list li').length > 0`)
	if got := admin.text("#connect-list"); !strings.Contains(got, testlab.ServerIP.String()) {
		t.Errorf("connect: %q", got)
	}
	l.Eventually("ssh open for the browser's address", 5*time.Second, func() bool { return l.CanConnect(testlab.Client1, testlab.ServerIP, 22) })
	if l.CanConnect(testlab.Client2, testlab.ServerIP, 22) {
		t.Error("the grant opened ssh for another source")
	}
	admin.shot("request-active")
	first := admin.text("#follow-id")

	// Extend: a new request for the same ports takes the grant over.
	admin.do(chromedp.Click(chromedp.ID("follow-extend")))
	admin.waitFor("the extension is active", fmt.Sprintf(`document.querySelector('#follow-id').textContent !== %s && document.querySelector('#follow-state').textContent === 'active'`, jsString(first)))
	if r, err := c.Request(ctx, first); err != nil || r.State != "superseded" {
		t.Errorf("the extended request: %+v %v, want superseded", r.State, err)
	}

	// Revoke from the same place: the port closes.
	admin.do(chromedp.Click(chromedp.ID("follow-revoke")))
	admin.waitFor("revoked", `document.querySelector('#follow-state').textContent === 'revoked'`)
	l.Eventually("ssh closed after the revocation", 5*time.Second, func() bool { return !l.CanConnect(testlab.Client1, testlab.ServerIP, 22) })

	// The policy editor: 22/tcp now needs one approval.
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.CSS("details.editor summary")))
	admin.setValue("#rules tr.rule:first-child .r-mode", "manual")
	admin.do(chromedp.Click(chromedp.ID("save-policy")))
	admin.waitFor("policy saved", `document.querySelector('#policy-status').textContent.startsWith('Saved')`)
	tg, err = c.Target(ctx, "web-01")
	if err != nil || tg.Policy.Rules[0].Approval == nil || tg.Policy.Rules[0].Approval.Mode != "manual" || len(tg.Policy.Rules) != 4 {
		t.Fatalf("policy after the editor: %+v %v", tg.Policy, err)
	}
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.WaitVisible(chromedp.ID("policy")))
	admin.shot("target")

	// alice asks, bob approves in his own browser profile.
	for _, b := range []wire.Binding{{Principal: "user:alice", Role: "requester", Scope: "label:group=prod"},
		{Principal: "user:bob", Role: "approver", Scope: "label:group=prod"}} {
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
	alice := newPerson(t, browser, "alice", token("alice"))
	bob := newPerson(t, browser, "bob", token("bob"))
	alice.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.ID("open-request")),
		chromedp.WaitVisible(chromedp.ID("request-form")))
	alice.setValue("#duration", "15m")
	alice.do(chromedp.SendKeys(chromedp.ID("reason"), "INC-2 rotate logs"), chromedp.Click(chromedp.ID("request-submit")))
	alice.waitFor("waiting for an approval", `document.querySelector('#follow-msg').textContent.includes('Waiting for 1 more approval')`)
	id := alice.text("#follow-id")
	if l.CanConnect(testlab.Client1, testlab.ServerIP, 22) {
		t.Fatal("ssh opened before the approval")
	}
	bob.do(chromedp.Navigate(testlab.ServerURL+"/ui/approvals"), chromedp.WaitVisible(chromedp.ID("approval-"+id)))
	if row := bob.text("#approval-" + id); !strings.Contains(row, "alice") || !strings.Contains(row, "INC-2 rotate logs") || !strings.Contains(row, "192.0.2.1") {
		t.Errorf("bob's inbox row: %q", row)
	}
	bob.shot("approvals")
	bob.do(chromedp.SendKeys(chromedp.ID("reason-"+id), "ticket checked"),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#approval-%s button[value=approve]`, id))))
	bob.waitFor("approved", fmt.Sprintf(`document.querySelector('#approval-%s .status').textContent.startsWith('Approved')`, id))
	alice.waitFor("alice's dialog follows to active", `document.querySelector('#follow-state').textContent === 'active'`)
	l.Eventually("ssh open after bob's approval", 5*time.Second, func() bool { return l.CanConnect(testlab.Client1, testlab.ServerIP, 22) })

	// bob's page is stale now (the agent activated the request): a deny
	// sent with the version he saw gets a clear 409, not an overwrite.
	bob.do(chromedp.SendKeys(chromedp.ID("reason-"+id), " and changed my mind"),
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`#approval-%s button[value=deny]`, id))))
	bob.waitFor("stale view", fmt.Sprintf(`document.querySelector('#approval-%s .status').textContent.includes('changed since the page was loaded')`, id))
	if r, err := c.Request(ctx, id); err != nil || r.State != "active" {
		t.Fatalf("after bob's stale deny the request is %s (%v), want still active", r.State, err)
	}

	// The dashboard shows the live grant with its countdown.
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/?tab=configured"))
	admin.waitFor("countdown", `/\d+:\d\d left/.test(document.querySelector('#targets tr[data-name="web-01"] .countdown').textContent)`)
	admin.shot("dashboard")
	admin.do(chromedp.EmulateViewport(390, 844))
	admin.do(chromedp.Reload())
	admin.shot("dashboard-narrow")
	admin.do(chromedp.EmulateViewport(1280, 900))

	// Audit: the chain verifies, the filter works, both exports download.
	admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/audit?target=web-01"))
	admin.waitFor("chain verified", `document.querySelector('#verify').classList.contains('ok')`)
	if got := admin.text("#audit-table tbody"); !strings.Contains(got, "request.approved") || strings.Contains(got, "conf-01") {
		t.Errorf("the audit table of web-01 lacks the approval or shows other targets: %q", got)
	}
	admin.shot("audit")
	var csv, jsonl string
	admin.eval(`fetch(document.querySelector('#export-csv').href).then(r => r.text())`, &csv)
	admin.eval(`fetch(document.querySelector('#export-jsonl').href).then(r => r.text())`, &jsonl)
	if !strings.HasPrefix(csv, `"id","at","actor","action","target"`) || !strings.Contains(csv, "request.activated") || !strings.Contains(csv, "bob") {
		t.Errorf("CSV export:\n%s", csv)
	}
	for _, line := range strings.Split(strings.TrimSpace(jsonl), "\n") {
		var ev wire.AuditEvent
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Target != "web-01" {
			t.Fatalf("JSON-lines export line %q: %v", line, err)
		}
	}

	t.Run("dashboard of 1000 targets", func(t *testing.T) { measureDashboard(t, l, admin) })
}

// measureDashboard seeds 1,000 configured targets with a live grant each
// and reports how long the browser takes to load and render the dashboard,
// as the store is and with the index on requests(target, activated_at) that
// its last-access query lacks (added here to the test's copy only; see
// docs/web.md). It reports, not asserts: timings belong in docs/web.md.
func measureDashboard(t *testing.T, l *testlab.Lab, admin *person) {
	l.Server.Kill()
	if err := testlab.SeedDB(context.Background(), l.DBPath(), testlab.Seed{Targets: 1000, PerTarget: 1, PolicyFrom: "web-01",
		From: netip.MustParseAddr("198.51.100.1"), Port: 22, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	l.StartServer()
	admin.t = t
	load := func(label string) {
		var best time.Duration
		for i := range 4 {
			// The seeded targets have a policy and no agent: not enforcing yet.
			admin.do(chromedp.Navigate(testlab.ServerURL + "/ui/?tab=not-enforcing"))
			var nav struct {
				ResponseEnd, DOMContentLoaded, Load float64
				Rows                                int
			}
			admin.eval(`(() => { const n = performance.getEntriesByType('navigation')[0];
				return {ResponseEnd: n.responseEnd, DOMContentLoaded: n.domContentLoadedEventEnd, Load: n.loadEventEnd,
				        Rows: document.querySelectorAll('#targets tbody tr').length}; })()`, &nav)
			if nav.Rows < 1000 {
				t.Fatalf("the dashboard shows %d rows, want 1,000 and more", nav.Rows)
			}
			t.Logf("%s, run %d: %d rows; page received %.0f ms, DOM ready %.0f ms, load %.0f ms after navigation start",
				label, i, nav.Rows, nav.ResponseEnd, nav.DOMContentLoaded, nav.Load)
			if d := time.Duration(nav.Load * float64(time.Millisecond)); i == 0 || d < best {
				best = d
			}
		}
		t.Logf("%s: dashboard of 1,000+ targets loaded and rendered in %s (best of 4)", label, best.Round(time.Millisecond))
	}
	load("store as is")
	l.Server.Kill()
	db, err := sql.Open("sqlite", store.SQLiteDSN(l.DBPath()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE INDEX IF NOT EXISTS requests_target_activated ON requests(target, activated_at)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	l.StartServer()
	load("with an index on requests(target, activated_at)")
}

// TestConsoleEnableKeepsPolicySetMeanwhile: "Enable JIT on selected" goes
// through the server's rule (POST /api/v1/policies/enable, as `policy enable
// --default`): a target that got its own policy after the page loaded keeps
// it, one whose agent since reported it cannot enforce is left alone, and
// the page lists both with the server's reasons.
func TestConsoleEnableKeepsPolicySetMeanwhile(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	c := l.APIClient()
	enroll := map[string]string{}
	for _, n := range []string{"plain-01", "own-01", "nonft-01"} {
		created, err := c.CreateTarget(ctx, wire.TargetCreate{Name: n})
		if err != nil {
			t.Fatal(err)
		}
		enroll[n] = created.EnrollToken
	}
	admin := newPerson(t, browser, "admin", l.Token)
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/?tab=not-configured"), chromedp.WaitVisible(chromedp.ID("enable-jit")))
	admin.do(chromedp.Click(chromedp.ID("select-all")))

	// Meanwhile, someone gives own-01 its own policy and nonft-01's agent
	// reports that it cannot enforce.
	own := wire.Policy{Rules: []wire.PortRule{{Port: 2222, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)}}}
	if _, err := c.SetPolicy(ctx, "own-01", own); err != nil {
		t.Fatal(err)
	}
	unsupported(t, c, enroll["nonft-01"])

	admin.do(chromedp.Click(chromedp.ID("enable-jit")))
	admin.waitFor("the outcome", `document.querySelector('#enable-status').textContent.includes('JIT enabled on 1 target')`)
	if got := admin.text(`#enable-skipped li[data-name="own-01"]`); !strings.Contains(got, "already has a policy (2222/tcp)") {
		t.Errorf("own-01 in the skipped list: %q", got)
	}
	if got := admin.text(`#enable-skipped li[data-name="nonft-01"]`); !strings.Contains(got, "unsupported: nf_tables is not available") {
		t.Errorf("nonft-01 in the skipped list: %q", got)
	}
	for name, want := range map[string]uint16{"plain-01": 22, "own-01": 2222} {
		tg, err := c.Target(ctx, name)
		if err != nil || tg.Policy == nil || len(tg.Policy.Rules) == 0 || tg.Policy.Rules[0].Port != want {
			t.Errorf("%s's policy after enabling JIT: %+v, %v; want its first port %d", name, tg.Policy, err, want)
		}
	}
	if tg, err := c.Target(ctx, "nonft-01"); err != nil || tg.Policy != nil && len(tg.Policy.Rules) > 0 {
		t.Errorf("nonft-01 got a policy: %+v, %v", tg.Policy, err)
	}
}

// TestConsoleRequestFormLeavesPatternsToTheServer: the request form does
// not run a rule's justification pattern in the browser. JavaScript's
// backtracking engine takes exponential time on patterns RE2 runs in linear
// time: with `^(a+)+$` and a reason of many a's and a "!", the old form froze
// the requester's tab on every keystroke (a policy-admin could lock people
// out of the console), and it refused valid RE2 such as `\z` that
// JavaScript reads differently. Now the form shows the pattern as help and
// the server's refusal next to the reason field.
func TestConsoleRequestFormLeavesPatternsToTheServer(t *testing.T) {
	l := testlab.New(t)
	browser := startBrowser(t, l)
	l.StartServer()
	ctx := context.Background()
	c := l.APIClient()
	if _, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	pol := wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Protocol: "tcp", Justification: &wire.Justification{Pattern: `^(a+)+$`}},
		{Port: 2222, Protocol: "tcp", Justification: &wire.Justification{Pattern: `^INC-[0-9]+\z`}},
	}}
	if _, err := c.SetPolicy(ctx, "web-01", pol); err != nil {
		t.Fatal(err)
	}
	admin := newPerson(t, browser, "admin", l.Token)
	admin.do(chromedp.Navigate(testlab.ServerURL+"/ui/targets/web-01"), chromedp.Click(chromedp.ID("open-request")),
		chromedp.WaitVisible(chromedp.ID("request-form")))
	for _, port := range []string{"22/tcp", "2222/tcp"} {
		// Select only this port, then type a reason its pattern refuses.
		admin.eval(`(() => { for (const p of document.querySelectorAll('#request-form input[name=port]')) { p.checked = p.value === `+jsString(port)+`; } return true; })()`, new(bool))
		admin.setValue("#reason", strings.Repeat("a", 40)+"!")
		if got := admin.text("#err-reason"); got != "" {
			t.Errorf("%s: the form judges the pattern itself: %q", port, got)
		}
		if help := admin.text("#reason-help"); !strings.Contains(help, "must match") {
			t.Errorf("%s: the help does not show the pattern: %q", port, help)
		}
		admin.do(chromedp.Click(chromedp.ID("request-submit")))
		admin.waitFor(port+": the server's refusal next to the reason",
			`document.querySelector('#err-reason').textContent.includes('must match')`)
		admin.setValue("#reason", "")
	}
}
