package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// testBreakGlassKey is the test servers' break-glass signing key.
var testBreakGlassKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

// breakGlassFixture makes an open break-glass alert and an offline token
// on web-01 for the authorization matrix, and returns their ids.
func breakGlassFixture(t *testing.T, e *env) (alert, token string) {
	t.Helper()
	ctx := context.Background()
	src, _ := policy.ParsePrefix("198.51.100.8")
	_, a, err := e.st.OpenBreakGlass(ctx, store.Actor{Name: "frank"}, "web-01",
		policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "fixture"},
		policy.DefaultLimits(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tok := access.Token{ID: "bgt-fixture", Targets: []string{"web-01"}, Ports: []string{"22/tcp"}, MaxDuration: time.Hour,
		IssuedAt: time.Now().UTC(), ExpiresAt: time.Now().UTC().Add(time.Hour), IssuedBy: "alice"}
	if err := e.st.IssueBreakGlassToken(ctx, store.Actor{Name: "alice"}, tok); err != nil {
		t.Fatal(err)
	}
	return a.ID, tok.ID
}

// userWith returns a client of a new user bound to role in scope.
func (e *env) userWith(t *testing.T, name string, role authz.Role, scope authz.Scope) *client.Client {
	t.Helper()
	return e.c.WithToken(e.userToken(t, name, role, scope))
}

func auditActions(t *testing.T, e *env, target string) []string {
	t.Helper()
	evs, err := e.st.ListAudit(context.Background(), store.AuditFilter{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		out = append(out, string(ev.Action))
	}
	return out
}

// TestBreakGlassOnline: the breakglass role opens a port whose rule wants
// an approver at once, within the rule's source limits and the server's
// cap, with a reason; it is audited as breakglass.opened, enqueued for a
// webhook that subscribed to something else, and raises an alert that only
// a review clears. Each refusal changes nothing.
func TestBreakGlassOnline(t *testing.T) {
	e := newEnvWith(t, func(d *api.Deps) { d.BreakGlassMax = 20 * time.Minute })
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(time.Hour), AllowedSources: []string{"198.51.100.0/24"}, Approval: &wire.Approval{Mode: "manual", Approvals: 1}},
	}})
	wh, err := e.c.CreateWebhook(ctx, wire.WebhookCreate{URL: "https://hooks.example.com/x", Events: []string{"request.denied"}})
	if err != nil {
		t.Fatal(err)
	}
	bg := e.userWith(t, "carol", authz.Breakglass, authz.Everywhere)
	ok := wire.BreakGlassCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(15 * time.Minute), Reason: "primary DB down, INC-42"}

	for _, tc := range []struct {
		name   string
		edit   func(*wire.BreakGlassCreate)
		status int
		says   string
	}{
		{"no reason", func(in *wire.BreakGlassCreate) { in.Reason = "  " }, http.StatusUnprocessableEntity, "reason is mandatory"},
		{"reason too long", func(in *wire.BreakGlassCreate) { in.Reason = strings.Repeat("x", 501) }, http.StatusUnprocessableEntity, "longer than 500"},
		{"over the server cap", func(in *wire.BreakGlassCreate) { in.Duration = wire.Duration(30 * time.Minute) }, http.StatusUnprocessableEntity, "cap of 20m0s"},
		{"source outside the rule", func(in *wire.BreakGlassCreate) { in.Source = "203.0.113.9" }, http.StatusForbidden, "not inside any allowed prefix"},
		{"port without a rule", func(in *wire.BreakGlassCreate) { in.Ports = []string{"3389"} }, http.StatusForbidden, "does not configure"},
	} {
		in := ok
		tc.edit(&in)
		_, err := bg.BreakGlass(ctx, in)
		if client.StatusOf(err) != tc.status || err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v (status %d), want %d saying %q", tc.name, err, client.StatusOf(err), tc.status, tc.says)
		}
	}
	requester := e.userWith(t, "dave", authz.Requester, authz.Everywhere)
	if _, err := requester.BreakGlass(ctx, ok); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("a requester broke the glass: %v", err)
	}
	if as, _ := e.c.BreakGlassAlerts(ctx, false); len(as) != 0 {
		t.Fatalf("refusals raised alerts: %+v", as)
	}

	out, err := bg.BreakGlass(ctx, ok)
	if err != nil {
		t.Fatal(err)
	}
	if out.Request.State != string(access.Pending) || out.Request.ApprovalsRequired != 0 {
		t.Errorf("break-glass request is %s with %d approvals required; want pending with none", out.Request.State, out.Request.ApprovalsRequired)
	}
	if !slices.Contains(auditActions(t, e, "web-01"), "breakglass.opened") {
		t.Errorf("no breakglass.opened in the trail: %v", auditActions(t, e, "web-01"))
	}
	ds, err := e.st.ListDeliveries(ctx, wh.Webhook.ID, 10)
	if err != nil || len(ds) != 1 || ds[0].Event != "breakglass.opened" {
		t.Errorf("deliveries to a webhook subscribed to request.denied only: %+v, %v; want breakglass.opened", ds, err)
	}
	open, err := e.c.BreakGlassAlerts(ctx, true)
	if err != nil || len(open) != 1 || open[0].ID != out.Alert.ID || open[0].Reason != ok.Reason || open[0].Actor != "carol" {
		t.Fatalf("open alerts %+v, %v; want the one raised", open, err)
	}

	// Only auditors and admins review; a review is audited and final.
	if _, err := bg.ReviewAlert(ctx, out.Alert.ID, "mine"); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("the breaker reviewed its own alert: %v", err)
	}
	auditor := e.userWith(t, "erin", authz.Auditor, authz.Everywhere)
	if _, err := auditor.ReviewAlert(ctx, out.Alert.ID, "called carol, legit"); err != nil {
		t.Fatal(err)
	}
	if _, err := auditor.ReviewAlert(ctx, out.Alert.ID, "again"); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("second review: %v, want 409", err)
	}
	if open, _ := e.c.BreakGlassAlerts(ctx, true); len(open) != 0 {
		t.Errorf("still open after review: %+v", open)
	}
	if !slices.Contains(auditActions(t, e, "web-01"), "breakglass.reviewed") {
		t.Errorf("no breakglass.reviewed in the trail")
	}
}

// TestBreakGlassTokens: an issued token verifies against the key agents are
// sent; a revocation reaches the target's desired state; a use reported by
// the agent is audited once however often it is reported, marks the token
// used, and a forged token or one for another target is refused.
func TestBreakGlassTokens(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	second := e.addTarget(t, "db-01")
	other := e.addTarget(t, "app-01")
	created, err := e.c.IssueBreakGlassToken(ctx, wire.BreakGlassTokenCreate{Targets: []string{"web-01", "db-01"}, Ports: []string{"22"},
		MaxDuration: wire.Duration(30 * time.Minute), Expires: wire.Duration(90 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := base64.StdEncoding.DecodeString(ds.BreakGlassKey)
	if err != nil {
		t.Fatalf("desired state key %q: %v", ds.BreakGlassKey, err)
	}
	tok, err := access.VerifyToken(created.Text, ed25519.PublicKey(pub))
	if err != nil || tok.ID != created.Token.ID || tok.Ports[0] != "22/tcp" {
		t.Fatalf("issued token does not verify with the agents' key: %+v %v", tok, err)
	}
	for _, bad := range []wire.BreakGlassTokenCreate{
		{Targets: []string{"Web_01"}, Ports: []string{"22"}, MaxDuration: wire.Duration(time.Minute), Expires: wire.Duration(time.Hour)},
		{Targets: []string{"web-01"}, Ports: []string{"22"}, MaxDuration: 0, Expires: wire.Duration(time.Hour)},
		{Targets: []string{"web-01"}, Ports: []string{"22"}, MaxDuration: wire.Duration(time.Minute), Expires: wire.Duration(5000 * 24 * time.Hour)},
	} {
		if _, err := e.c.IssueBreakGlassToken(ctx, bad); client.StatusOf(err) != http.StatusUnprocessableEntity {
			t.Errorf("issue %+v: %v, want 422", bad, err)
		}
	}

	use := wire.BreakGlassUse{Token: created.Text, Operator: "root", Source: "198.51.100.7/32", Port: 22, Protocol: "tcp",
		Duration: wire.Duration(10 * time.Minute), UsedAt: time.Now().UTC()}
	dbBefore, err := second.Desired(ctx, 0, 0)
	if err != nil || len(dbBefore.BreakGlassRevoked) != 0 {
		t.Fatalf("db-01's desired state before any use: %+v, %v", dbBefore.BreakGlassRevoked, err)
	}
	// Forged: signed by another key; and a token for web-01 and db-01 reported by app-01.
	forgedKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	forgedText, _ := tok.Sign(forgedKey)
	forged := use
	forged.Token = forgedText
	// A token this server's key does not verify is recorded all the same
	// (the agent opened with it: its key was replaced, or the server's
	// changed), unverified and apart, without marking the token used; a
	// 422 made the agent never report it.
	if a, err := agent.ReportBreakGlassUse(ctx, forged); err != nil || a.TokenID != tok.ID+" (unverified)" {
		t.Errorf("report of a token this server does not verify: %+v, %v; want recorded as unverified", a, err)
	}
	if _, err := other.ReportBreakGlassUse(ctx, use); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("another target's agent reported the use: %v, want 422", err)
	}
	for range 2 {
		if _, err := agent.ReportBreakGlassUse(ctx, use); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, a := range auditActions(t, e, "web-01") {
		if a == "breakglass.used" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d breakglass.used events for one unverified use and one use reported twice, want 2", n)
	}
	// Used on web-01: db-01's agent is sent it as revoked (single use across targets).
	dbAfter, err := second.Desired(ctx, dbBefore.Revision, time.Second)
	if err != nil || dbAfter.Revision <= dbBefore.Revision || !slices.Equal(dbAfter.BreakGlassRevoked, []string{tok.ID}) {
		t.Errorf("db-01 after the use on web-01: rev %d (was %d), revoked %v, %v", dbAfter.Revision, dbBefore.Revision, dbAfter.BreakGlassRevoked, err)
	}
	if w, _ := agent.Desired(ctx, 0, 0); len(w.BreakGlassRevoked) != 0 {
		t.Errorf("web-01, where it was used, is sent it as revoked: %v", w.BreakGlassRevoked)
	}
	ts, err := e.c.BreakGlassTokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].UsedTarget != "web-01" || ts[0].UsedAt == nil {
		t.Errorf("tokens after the use: %+v %v; want used on web-01", ts, err)
	}
	if open, _ := e.c.BreakGlassAlerts(ctx, true); len(open) != 2 || open[0].Kind != "offline" || open[0].TokenID != tok.ID || open[1].TokenID != tok.ID+" (unverified)" {
		t.Errorf("open alerts %+v; want the offline use and the unverified one", open)
	}

	if _, err := e.c.RevokeBreakGlassToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	ds2, err := agent.Desired(ctx, ds.Revision, time.Second)
	if err != nil || ds2.Revision <= ds.Revision || !slices.Equal(ds2.BreakGlassRevoked, []string{tok.ID}) {
		t.Errorf("desired state after the revocation: rev %d (was %d), revoked %v, %v", ds2.Revision, ds.Revision, ds2.BreakGlassRevoked, err)
	}
	if _, err := e.c.RevokeBreakGlassToken(ctx, tok.ID); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("second revocation: %v, want 409", err)
	}
}

// TestBreakGlassUseReportedWhateverItsText: an offline use whose reason or
// operator the server would refuse in a request (control characters, an
// escape sequence, a bidirectional override, a long SUDO_USER) is recorded
// all the same, escaped into one inert line: the agent accepted it on the
// host, so the access happened, and a 4xx made the agent mark the use
// refused and never report it again — a token holder could hide a use from
// the audit trail, the webhooks and the alerts (and keep the token unspent
// on its other targets) by putting a tab in the reason.
func TestBreakGlassUseReportedWhateverItsText(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	created, err := e.c.IssueBreakGlassToken(ctx, wire.BreakGlassTokenCreate{Targets: []string{"web-01"}, Ports: []string{"22"},
		MaxDuration: wire.Duration(30 * time.Minute), Expires: wire.Duration(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	reason := "INC-9\tsee \x1b[2Jhere \u202eevil"
	use := wire.BreakGlassUse{Token: created.Text, Operator: strings.Repeat("o", 100) + "\x07", Source: "198.51.100.7/32", Port: 22, Protocol: "tcp",
		Duration: wire.Duration(10 * time.Minute), Reason: reason, UsedAt: time.Now().UTC()}
	if _, err := agent.ReportBreakGlassUse(ctx, use); err != nil {
		t.Fatalf("report of a use with an unprintable reason and a long operator: %v, want it recorded", err)
	}
	evs, err := e.st.ListAudit(ctx, store.AuditFilter{Target: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, ev := range evs {
		if ev.Action != "breakglass.used" {
			continue
		}
		found = true
		if text.Check(ev.Reason) != nil || text.Check(ev.Actor) != nil || !strings.Contains(ev.Reason, "INC-9") || !strings.Contains(ev.Reason, `\u202e`) {
			t.Errorf("recorded reason %q, actor %q: want them escaped into one inert line", ev.Reason, ev.Actor)
		}
	}
	if !found {
		t.Fatal("no breakglass.used event")
	}
}

// TestBreakGlassAlertsKeptToScope: an auditor bound to one target reads
// that target's audit trail (?target=web-01 passes the check), but the
// alert list ignored the parameter and answered every target's alerts
// (who broke the glass on db-01, from where, why). It lists only the named
// target's alerts; without the parameter it stays for installation-wide
// auditors; a scoped auditor cannot review another target's alert.
func TestBreakGlassAlertsKeptToScope(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bg := e.userWith(t, "carol", authz.Breakglass, authz.Everywhere)
	alerts := map[string]string{}
	for _, name := range []string{"web-01", "db-01"} {
		e.addTarget(t, name)
		e.setPolicy(t, name, wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(time.Hour), AllowedSources: []string{"198.51.100.0/24"}}}})
		out, err := bg.BreakGlass(ctx, wire.BreakGlassCreate{Target: name, Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(15 * time.Minute), Reason: "INC on " + name})
		if err != nil {
			t.Fatal(err)
		}
		alerts[name] = out.Alert.ID
	}
	scoped := e.userWith(t, "sam", authz.Auditor, authz.Scope("target:web-01"))
	if _, err := scoped.BreakGlassAlerts(ctx, true); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("a scoped auditor listed the installation's alerts: %v, want 403", err)
	}
	secret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "sam", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	status, body := e.raw(t, http.MethodGet, "/api/v1/breakglass/alerts?open=true&target=web-01", secret, "", nil)
	var got []wire.BreakGlassAlert
	if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
		t.Fatalf("scoped auditor, ?target=web-01: %d %s", status, body)
	}
	if len(got) != 1 || got[0].Target != "web-01" {
		t.Errorf("scoped auditor, ?target=web-01, got %d alerts %+v; want web-01's only", len(got), got)
	}
	if status, _ := e.raw(t, http.MethodGet, "/api/v1/breakglass/alerts?target=db-01", secret, "", nil); status != http.StatusForbidden {
		t.Errorf("scoped auditor, ?target=db-01: %d, want 403", status)
	}
	if _, err := scoped.ReviewAlert(ctx, alerts["db-01"], "not mine"); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("a web-01 auditor reviewed db-01's alert: %v, want 403", err)
	}
	if all, err := e.c.BreakGlassAlerts(ctx, true); err != nil || len(all) != 2 {
		t.Errorf("admin, all alerts: %d, %v; want 2", len(all), err)
	}
}

// TestBreakGlassTokenNotForANewTargetOfTheSameName: a token names targets
// by name; once web-01 is removed and another host is enrolled as web-01
// (a name reused for another machine), the tokens issued for the old one
// must not open the new one: its desired state lists them as revoked. A
// token cannot be issued for a target that does not exist (what it would
// cover is unknown).
func TestBreakGlassTokenNotForANewTargetOfTheSameName(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	created, err := e.c.IssueBreakGlassToken(ctx, wire.BreakGlassTokenCreate{Targets: []string{"web-01"}, Ports: []string{"22"},
		MaxDuration: wire.Duration(30 * time.Minute), Expires: wire.Duration(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.IssueBreakGlassToken(ctx, wire.BreakGlassTokenCreate{Targets: []string{"web-01"}, Ports: []string{"22"},
		MaxDuration: wire.Duration(30 * time.Minute), Expires: wire.Duration(24 * time.Hour)}); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("token issued for a target that does not exist: %v, want 422", err)
	}
	// The clock of the store is millisecond-grained: the new web-01 is
	// created after the token was issued, as in life.
	time.Sleep(2 * time.Millisecond)
	agent := e.addTarget(t, "web-01")
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ds.BreakGlassRevoked, created.Token.ID) {
		t.Errorf("the new web-01's desired state revokes %v; want the old web-01's token %s", ds.BreakGlassRevoked, created.Token.ID)
	}
}

// TestBreakGlassIgnoresTimeWindows pins a documented choice: an emergency
// does not wait for a rule's time window (a request outside it is refused,
// a break-glass on the same rule opens), while the rule's sources and
// maximum and the server's cap still hold.
func TestBreakGlassIgnoresTimeWindows(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	now := time.Now().UTC().Truncate(time.Minute)
	closed := windowAround(now.Add(2*time.Hour), now.Add(3*time.Hour))
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(time.Hour), AllowedSources: []string{"198.51.100.0/24"}, Windows: []string{closed}}}})
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(30 * time.Minute), Reason: "x"}); client.StatusOf(err) != http.StatusForbidden {
		t.Fatalf("a request outside the window: %v, want 403", err)
	}
	bg := e.userWith(t, "carol", authz.Breakglass, authz.Everywhere)
	out, err := bg.BreakGlass(ctx, wire.BreakGlassCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(30 * time.Minute), Reason: "INC-7"})
	if err != nil || !out.Request.ExpiresAt.After(now.Add(29*time.Minute)) {
		t.Fatalf("break-glass outside the window: %+v, %v; want opened for its whole duration", out.Request, err)
	}
	if _, err := bg.BreakGlass(ctx, wire.BreakGlassCreate{Target: "web-01", Ports: []string{"22"}, Source: "203.0.113.7", Duration: wire.Duration(30 * time.Minute), Reason: "INC-7"}); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("break-glass from a source outside the rule: %v, want 403", err)
	}
}

// TestBreakGlassAlertsOfANamesake: a target's name outlives it. web-01 is
// created with env=dev, broken into, removed, and created again with
// env=prod and broken into again. pat, an auditor of env=prod, is admitted
// to ?target=web-01 by today's labels: the alert list, like the audit
// listing (TestAuditByTargetKeepsToRecordedLabels), shows pat the prod
// web-01's alert only, not who broke the glass on the dev one, from where
// and why; an auditor of the name sees both. Before, pat saw both.
func TestBreakGlassAlertsOfANamesake(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bg := e.userWith(t, "carol", authz.Breakglass, authz.Everywhere)
	var ids []string
	for i, env := range []string{"dev", "prod"} {
		if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"env": env}}); err != nil {
			t.Fatal(err)
		}
		e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(time.Hour), AllowedSources: []string{"198.51.100.0/24"}}}})
		out, err := bg.BreakGlass(ctx, wire.BreakGlassCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(15 * time.Minute), Reason: "INC on the " + env + " web-01"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, out.Alert.ID)
		if i == 0 {
			if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tt := range []struct {
		who   string
		scope authz.Scope
		want  []string
	}{
		{"pat", "label:env=prod", ids[1:]},
		{"ada", "target:web-01", ids},
	} {
		secret := e.userToken(t, tt.who, authz.Auditor, tt.scope)
		status, body := e.raw(t, http.MethodGet, "/api/v1/breakglass/alerts?target=web-01", secret, "", nil)
		var got []wire.BreakGlassAlert
		if status != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("%s, ?target=web-01: %d %s", tt.who, status, body)
		}
		var gotIDs []string
		for _, a := range got {
			gotIDs = append(gotIDs, a.ID)
		}
		slices.Sort(gotIDs)
		want := slices.Sorted(slices.Values(tt.want))
		if !slices.Equal(gotIDs, want) {
			t.Errorf("%s (%s), ?target=web-01: alerts %v, want %v (the dev web-01's is %s)", tt.who, tt.scope, gotIDs, want, ids[0])
		}
	}
}
