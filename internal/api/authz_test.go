package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// matrixFixture is a server with target web-01 (group=prod, 22/tcp auto and
// 3389/tcp manual) and two requests by the admin alice: one granted, one
// awaiting approval.
type matrixFixture struct {
	*env
	granted, awaiting string
	webhook           string // a webhook's id
	foreign           string // the id of another user's (dave's) token
	session           string // a bastion session of alice on web-01, recorded live
	schedule          string // a recurring schedule of carol on web-01
	alert, bgToken    string // a break-glass alert (open) and offline token
}

func newMatrixFixture(t *testing.T) *matrixFixture {
	t.Helper()
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"group": "prod"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(time.Hour), Access: "both"},
		{Port: 3389, MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "manual", Approvals: 1}},
	}}); err != nil {
		t.Fatal(err)
	}
	g, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"3389"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil || a.State != "pending_approval" {
		t.Fatalf("request awaiting approval: %v %s", err, a.State)
	}
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "group:ops", Role: authz.Auditor, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	wh, err := e.c.CreateWebhook(ctx, wire.WebhookCreate{URL: "https://hooks.example.com/x"})
	if err != nil {
		t.Fatal(err)
	}
	_, dave, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "dave", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sess := session.Session{ID: store.NewSessionID(), Target: "web-01", Principal: "alice", RequestID: g.ID, Protocol: "tcp", Port: 22,
		StartedAt: time.Now(), Deadline: time.Now().Add(time.Hour), State: session.Live}
	if err := e.st.StartSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	saveRecording(t, e, sess, "$ ")
	sc, err := e.c.CreateSchedule(ctx, wire.ScheduleCreate{Principal: "user:carol", Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.9",
		Cron: "0 22 * * *", TimeZone: "Europe/Berlin", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	alert, bgToken := breakGlassFixture(t, e)
	return &matrixFixture{env: e, granted: g.ID, awaiting: a.ID, webhook: wh.Webhook.ID, foreign: dave.ID, session: sess.ID, schedule: sc.ID,
		alert: alert, bgToken: bgToken}
}

// user makes a personal token for name, bound to role in scope.
func (f *matrixFixture) user(t *testing.T, name string, role authz.Role, scope authz.Scope) string {
	t.Helper()
	ctx := context.Background()
	if _, err := f.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: role, Scope: scope}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func (f *matrixFixture) do(t *testing.T, token, method, path, body string) int {
	t.Helper()
	path = strings.NewReplacer("{granted}", f.granted, "{awaiting}", f.awaiting, "{webhook}", f.webhook, "{foreign}", f.foreign, "{session}", f.session, "{schedule}", f.schedule,
		"{alert}", f.alert, "{bgtoken}", f.bgToken).Replace(path)
	req, _ := http.NewRequest(method, f.srv.URL+path, bytes.NewBufferString(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if p, _, _ := strings.Cut(path, "?"); method == http.MethodPut && strings.HasSuffix(p, "/policy") {
		// Whatever policy the target holds now (etag_test.go).
		k, v := currentPolicyHeader(t, f.c, strings.TrimSuffix(strings.TrimPrefix(p, "/api/v1/targets/"), "/policy"))
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// matrixUserKey is a public key the SSH certificate rows ask to sign.
const matrixUserKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

// TestAuthorizationMatrix sends every endpoint as every role, bound in scope
// and out of scope, and unauthenticated. Target endpoints are in scope for a
// binding on label group=prod and out of scope for group=production (scopes
// match whole segments); installation-wide endpoints are in scope only for a
// binding on "*".
func TestAuthorizationMatrix(t *testing.T) {
	const (
		target = iota // the endpoint acts on web-01
		global        // the endpoint acts on the whole installation
		own           // the endpoint acts on the caller's own things
	)
	A, R, Q, P, U, D, B := authz.Admin, authz.Reader, authz.Requester, authz.PolicyAdmin, authz.Auditor, authz.Approver, authz.Breakglass
	all := []authz.Role{R, Q, D, P, U, A, B}
	endpoints := []struct {
		method, path, body string
		kind               int
		allowed            []authz.Role // in scope
	}{
		{"GET", "/api/v1/whoami", "", own, all},
		{"GET", "/api/v1/openapi.json", "", own, all},
		{"GET", "/api/v1/tokens", "", own, all},
		{"POST", "/api/v1/tokens", `{"name":"t","ttl":"1h"}`, own, all},
		{"GET", "/api/v1/tokens?all=true", "", global, []authz.Role{A}},
		{"POST", "/api/v1/tokens", `{"name":"t","ttl":"1h","service":"ci"}`, global, []authz.Role{A}},
		// Impersonation (allowed without single sign-on, as here; TestUserTokensWithSSO refuses it with).
		{"POST", "/api/v1/tokens", `{"name":"t","ttl":"1h","user":"carol"}`, global, []authz.Role{A}},
		// A limit may not widen the caller's own grants.
		{"POST", "/api/v1/tokens", `{"name":"t","ttl":"1h","limits":[{"role":"admin","scope":"*"}]}`, global, []authz.Role{A}},
		{"DELETE", "/api/v1/tokens/{foreign}", "", global, []authz.Role{A}},
		{"GET", "/api/v1/webhooks", "", global, []authz.Role{A}},
		{"POST", "/api/v1/webhooks", `{"url":"https://hooks.example.com/y"}`, global, []authz.Role{A}},
		{"GET", "/api/v1/webhooks/{webhook}/deliveries", "", global, []authz.Role{A}},
		{"DELETE", "/api/v1/webhooks/{webhook}", "", global, []authz.Role{A}},
		{"GET", "/api/v1/targets", "", own, all}, // filtered, never refused
		{"GET", "/api/v1/requests", "", own, all},
		{"GET", "/api/v1/targets/web-01", "", target, all},
		{"GET", "/api/v1/targets/web-01/policy", "", target, all},
		// Break-glass: only its own role opens (not even admin), auditors
		// and admins see and review the alerts, admins hold the tokens.
		{"POST", "/api/v1/breakglass", `{"target":"web-01","ports":["22"],"source":"198.51.100.9","duration":"30m","reason":"db down"}`, target, []authz.Role{B}},
		{"GET", "/api/v1/breakglass/alerts?open=true", "", global, []authz.Role{U, A}},
		{"POST", "/api/v1/breakglass/alerts/{alert}/review", `{"note":"checked with bob"}`, global, []authz.Role{U, A}},
		{"POST", "/api/v1/breakglass/tokens", `{"targets":["web-01"],"ports":["22/tcp"],"max_duration":"30m","expires":"2160h"}`, global, []authz.Role{A}},
		{"GET", "/api/v1/breakglass/tokens", "", global, []authz.Role{U, A}},
		{"DELETE", "/api/v1/breakglass/tokens/{bgtoken}", "", global, []authz.Role{A}},
		{"POST", "/api/v1/agent/breakglass", `{"token":"x","source":"198.51.100.9","port":22,"protocol":"tcp","duration":"30m","used_at":"2026-01-01T00:00:00Z"}`, own, nil},
		{"POST", "/api/v1/targets", `{"name":"web-02","labels":{"group":"prod"}}`, target, []authz.Role{P, A}},
		{"DELETE", "/api/v1/targets/web-01", "", target, []authz.Role{P, A}},
		{"POST", "/api/v1/targets/web-01/enroll-token", "", target, []authz.Role{P, A}},
		{"PUT", "/api/v1/targets/web-01/policy", `{"rules":[{"port":22}]}`, target, []authz.Role{P, A}},
		{"DELETE", "/api/v1/targets/web-01/policy", "", target, []authz.Role{P, A}},
		{"PUT", "/api/v1/targets/web-01/policy?dry_run=true", `{"rules":[{"port":22}]}`, target, []authz.Role{P, A}},
		{"POST", "/api/v1/policies/enable?dry_run=true", `{"selector":"group=prod","default":true}`, target, []authz.Role{P, A}},
		{"POST", "/api/v1/policies/enable?dry_run=true", `{"targets":["web-01"],"default":true}`, target, []authz.Role{P, A}},
		{"POST", "/api/v1/requests", `{"target":"web-01","ports":["22"],"source":"198.51.100.9","duration":"1h","reason":"x"}`, target, []authz.Role{Q, A}},
		{"GET", "/api/v1/requests/{granted}", "", target, []authz.Role{D, P, U, A}},
		{"POST", "/api/v1/requests/{granted}/revoke", "", target, []authz.Role{D, A}},
		{"POST", "/api/v1/requests/{awaiting}/approve", "", target, []authz.Role{D, A}},
		{"POST", "/api/v1/requests/{awaiting}/deny", "", target, []authz.Role{D, A}},
		{"GET", "/api/v1/audit?target=web-01", "", target, []authz.Role{U, A}},
		{"GET", "/api/v1/audit", "", global, []authz.Role{U, A}},
		{"GET", "/api/v1/audit/verify", "", global, []authz.Role{U, A}},
		// The whole chain whatever ?target= names: a scoped auditor is refused.
		{"GET", "/api/v1/audit/verify?target=web-01", "", global, []authz.Role{U, A}},
		{"GET", "/api/v1/audit/export?format=jsonl", "", global, []authz.Role{U, A}},
		{"GET", "/metrics", "", global, []authz.Role{U, A}},
		{"GET", "/metrics?target=web-01", "", global, []authz.Role{U, A}},
		{"GET", "/api/v1/bindings", "", global, []authz.Role{A}},
		{"POST", "/api/v1/bindings", `{"principal":"group:ops","role":"reader","scope":"*"}`, global, []authz.Role{A}},
		{"DELETE", "/api/v1/bindings", `{"principal":"group:ops","role":"auditor","scope":"*"}`, global, []authz.Role{A}},
		{"GET", "/api/v1/sessions", "", own, all}, // filtered, never refused
		{"GET", "/api/v1/sessions?active=true", "", own, all},
		{"POST", "/api/v1/sessions/{session}/kill", `{"reason":"x"}`, target, []authz.Role{D, A}},
		// A recording: those who see others' sessions on the target (and
		// the session's own principal, alice here: TestRecordingAccess).
		{"GET", "/api/v1/sessions/{session}/recording", "", target, []authz.Role{D, P, U, A}},
		// Watching: the same roles. The fixture's session is no live
		// browser terminal, so the allowed get 409 after authorization
		// (TestWatchTerminal watches one).
		{"GET", "/api/v1/sessions/{session}/watch", "", target, []authz.Role{D, P, U, A}},
		// Nobody but the grant's own principal gets a tunnel: bob holds no
		// grant, so every role is refused (TestTunnelRefusals tells the
		// refusals apart).
		{"GET", "/api/v1/tunnel?target=web-01&port=22", "", target, nil},
		// Only another replica, with the replicas' secret, forwards a
		// stream (TestReplicaEndpointRefusals attacks it with and without).
		{"GET", "/api/v1/replica/tunnel?target=web-01&port=22&principal=alice&session=s-x", "", own, nil},
		// Nobody but the request's requester gets an SSH certificate for
		// it (TestSSHCertificate covers the requester's own).
		{"POST", "/api/v1/requests/{granted}/ssh-certificate", `{"public_key":"` + matrixUserKey + `"}`, target, nil},
		// Nobody but the request's requester opens a terminal with it
		// (TestTerminal* and the e2e browser test cover the requester).
		{"GET", "/api/v1/requests/{granted}/terminal?port=22&login=ubuntu", "", target, nil},
		{"GET", "/api/v1/ssh/ca", "", own, all},
		// Recurring schedules (issue 15): policy.write on the target.
		{"GET", "/api/v1/schedules", "", own, all}, // filtered, never refused
		{"POST", "/api/v1/schedules", `{"principal":"user:carol","target":"web-01","ports":["22"],"source":"198.51.100.9","cron":"0 8 * * 1-5","timezone":"UTC","duration":"1h","reason":"x"}`, target, []authz.Role{P, A}},
		{"DELETE", "/api/v1/schedules/{schedule}", "", target, []authz.Role{P, A}},
		{"GET", "/api/v1/agent/ssh-ca", "", own, nil},
		{"GET", "/api/v1/agent/tunnel", "", own, nil},
		{"GET", "/api/v1/agent/desired", "", own, nil},
		{"POST", "/api/v1/agent/report", `{"revision":1}`, own, nil},
		// A report carrying its next poll: the agent's own too (another
		// agent's credential: TestReportPollIsTheAgentsOwn).
		{"POST", "/api/v1/agent/report?after=0&since=0&rules=1", `{"revision":1}`, own, nil},
	}
	seen := map[string]int{}
	for _, ep := range endpoints {
		// Rows of one endpoint with other bodies get distinct subtest names
		// (Go's "#01" suffix would end up in the SQLite file URI as a fragment).
		label := ep.path
		if seen[ep.method+label]++; seen[ep.method+label] > 1 {
			label += fmt.Sprintf(" (%d)", seen[ep.method+label])
		}
		for _, role := range all {
			for _, inScope := range []bool{true, false} {
				name := fmt.Sprintf("%s %s/%s/in=%v", ep.method, label, role, inScope)
				t.Run(name, func(t *testing.T) {
					f := newMatrixFixture(t)
					scope := authz.Scope("label:group=prod")
					switch {
					case ep.kind == global && inScope:
						scope = authz.Everywhere
					case !inScope:
						scope = "label:group=production"
					}
					tok := f.user(t, "bob", role, scope)
					allowed := false
					for _, r := range ep.allowed {
						if r == role && (inScope || ep.kind == own) {
							allowed = true
						}
					}
					got := f.do(t, tok, ep.method, ep.path, ep.body)
					refused := http.StatusForbidden
					if !inScope && strings.HasPrefix(ep.path, "/api/v1/policies/enable") && strings.Contains(ep.body, "selector") {
						// Out of scope, web-01 does not exist for the caller:
						// the selector matches nothing it may read (named, it
						// is refused as any target it may not see).
						refused = http.StatusUnprocessableEntity
					}
					if allowed && strings.HasSuffix(ep.path, "/watch") && got == http.StatusConflict {
						got = http.StatusOK // authorized; not a live terminal (see its row)
					}
					switch {
					case allowed && (got < 200 || got > 299):
						t.Errorf("%s as %s (in scope %v): %d, want success", ep.path, role, inScope, got)
					case !allowed && got != refused:
						t.Errorf("%s as %s (in scope %v): %d, want %d", ep.path, role, inScope, got, refused)
					}
				})
			}
		}
		t.Run(ep.method+" "+label+"/unauthenticated", func(t *testing.T) {
			f := newMatrixFixture(t)
			if got := f.do(t, "", ep.method, ep.path, ep.body); got != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d, want 401", ep.method, ep.path, got)
			}
		})
	}
}

// TestScopedVisibility: lists are filtered to what a role may see.
func TestScopedVisibility(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	if _, err := f.c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01", Labels: map[string]string{"group": "production"}}); err != nil {
		t.Fatal(err)
	}
	reader := f.user(t, "bob", authz.Reader, "label:group=prod")
	ts, err := f.c.WithToken(reader).Targets(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "web-01" {
		t.Fatalf("reader on group=prod sees %v, %v; want only web-01", ts, err)
	}
	rs, err := f.c.WithToken(reader).Requests(ctx, clientFilter())
	if err != nil || len(rs) != 0 {
		t.Fatalf("a reader sees others' requests: %v %v", rs, err)
	}
	approver := f.user(t, "carol", authz.Approver, "label:group=prod")
	rs, err = f.c.WithToken(approver).Requests(ctx, clientFilter())
	// alice's two and the fixture's break-glass (breakGlassFixture).
	if err != nil || len(rs) != 3 {
		t.Fatalf("an approver in scope sees %d requests, %v; want 3", len(rs), err)
	}
}

func clientFilter() client.RequestFilter { return client.RequestFilter{} }

// TestAuthorizationMatrixGateway: placing a target behind a gateway,
// publishing a port on it and choosing a mapped port change what the
// gateway enforces and exposes, so they need policy.write on the gateway's
// scope as well as on the target's. A policy-admin of the targets (group=prod)
// who only reads the gateway is refused with a message naming the gateway and
// changes nothing; with write on both the same calls pass. Protecting a port
// without publishing it stays a matter of the target's scope alone.
func TestAuthorizationMatrixGateway(t *testing.T) {
	const (
		place     = `{"name":"web-02","labels":{"group":"prod"},"gateway":"gw-1","address":"10.0.0.6"}`
		publish   = `{"rules":[{"port":22,"publish":true}]}`
		mapped    = `{"rules":[{"port":22,"publish":true,"mapped_port":20022}]}`
		protected = `{"rules":[{"port":22}]}`
	)
	for _, tc := range []struct {
		name               string
		gatewayRole        authz.Role // bob's role on target:gw-1 ("" for none)
		method, path, body string
		want               int
	}{
		{"place behind, gateway reader", authz.Reader, "POST", "/api/v1/targets", place, http.StatusForbidden},
		{"place behind, no role on gateway", "", "POST", "/api/v1/targets", place, http.StatusForbidden},
		{"place behind, gateway policy-admin", authz.PolicyAdmin, "POST", "/api/v1/targets", place, http.StatusCreated},
		{"publish, gateway reader", authz.Reader, "PUT", "/api/v1/targets/web-01/policy", publish, http.StatusForbidden},
		{"publish, gateway requester", authz.Requester, "PUT", "/api/v1/targets/web-01/policy", publish, http.StatusForbidden},
		{"publish, gateway policy-admin", authz.PolicyAdmin, "PUT", "/api/v1/targets/web-01/policy", publish, http.StatusOK},
		{"mapped port, gateway reader", authz.Reader, "PUT", "/api/v1/targets/web-01/policy", mapped, http.StatusForbidden},
		{"mapped port, gateway policy-admin", authz.PolicyAdmin, "PUT", "/api/v1/targets/web-01/policy", mapped, http.StatusOK},
		{"protect only, gateway reader", authz.Reader, "PUT", "/api/v1/targets/web-01/policy", protected, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := gatewayEnv(t)
			ctx := context.Background()
			if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01", Labels: map[string]string{"group": "prod"}, Gateway: "gw-1", Address: "10.0.0.5"}); err != nil {
				t.Fatal(err)
			}
			f := &matrixFixture{env: e}
			tok := f.user(t, "bob", authz.PolicyAdmin, "label:group=prod")
			if tc.gatewayRole != "" {
				if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:bob", Role: tc.gatewayRole, Scope: "target:gw-1"}, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := e.c.Target(ctx, "web-01")
			k, v := currentPolicyHeader(t, e.c, "web-01")
			status, body := e.raw(t, tc.method, tc.path, tok, "application/json", strings.NewReader(tc.body), k, v)
			if status != tc.want {
				t.Fatalf("%s %s as a policy-admin of group=prod with %q on gw-1: %d %s, want %d", tc.method, tc.path, tc.gatewayRole, status, body, tc.want)
			}
			if status != http.StatusForbidden {
				return
			}
			if !strings.Contains(string(body), "gateway") || !strings.Contains(string(body), "gw-1") || !strings.Contains(string(body), "policy.write") {
				t.Errorf("refusal %s does not say that writing on gateway gw-1 is needed", body)
			}
			if _, err := e.c.Target(ctx, "web-02"); client.StatusOf(err) != http.StatusNotFound {
				t.Errorf("web-02 exists after a refusal: %v", err)
			}
			after, _ := e.c.Target(ctx, "web-01")
			if after.Policy != nil || len(after.Mappings) != 0 || after.Agent.Revision != before.Agent.Revision {
				t.Errorf("web-01 changed after a refusal: policy %+v, mappings %+v", after.Policy, after.Mappings)
			}
		})
	}
}

// TestTargetNamesCannotBeProbed: a principal with no role at all, and one
// whose roles cover other targets only, get the same answer, status and
// body, for an existing target and a missing one on every endpoint that
// names a target (the name itself aside); the default-policy selector
// neither matches nor names targets they cannot read.
func TestTargetNamesCannotBeProbed(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	nobody, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "nobody", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	outside := f.user(t, "bob", authz.Admin, "label:group=production")
	for _, ep := range []struct{ method, path, body string }{
		{"GET", "/api/v1/targets/NAME", ""},
		{"DELETE", "/api/v1/targets/NAME", ""},
		{"GET", "/api/v1/targets/NAME/policy", ""},
		{"PUT", "/api/v1/targets/NAME/policy", `{"rules":[{"port":22}]}`},
		{"PUT", "/api/v1/targets/NAME/policy?dry_run=true", `{"rules":[{"port":22}]}`},
		{"DELETE", "/api/v1/targets/NAME/policy", ""},
		{"POST", "/api/v1/requests", `{"target":"NAME","ports":["22"],"source":"198.51.100.9","duration":"1h","reason":"x"}`},
		{"GET", "/api/v1/audit?target=NAME", ""},
		{"GET", "/api/v1/requests?target=NAME", ""},
		{"POST", "/api/v1/targets", `{"name":"web-02","gateway":"NAME","address":"10.0.0.9"}`},
		{"POST", "/api/v1/targets", `{"name":"NAME"}`},
		{"POST", "/api/v1/policies/enable", `{"selector":"group=NAME","default":true}`},
		{"POST", "/api/v1/policies/enable", `{"targets":["NAME"],"default":true}`},
	} {
		for who, tok := range map[string]string{"no role": nobody, "roles elsewhere": outside} {
			answer := func(name string) (int, string) {
				r := strings.NewReplacer("NAME", name)
				status, body := f.raw(t, ep.method, r.Replace(ep.path), tok, "application/json", strings.NewReader(r.Replace(ep.body)))
				return status, strings.ReplaceAll(sameProblem(body), name, "NAME")
			}
			// web-01 exists (label group=prod); web-99 does not.
			name, missing := "web-01", "web-99"
			if strings.Contains(ep.body, "group=NAME") {
				name, missing = "prod", "nope"
			}
			s1, b1 := answer(name)
			s2, b2 := answer(missing)
			if s1 != s2 || b1 != b2 {
				t.Errorf("%s %s as %s: existing %d %s; missing %d %s; want the same", ep.method, ep.path, who, s1, b1, s2, b2)
			}
			if s1 >= 200 && s1 < 300 && ep.method != "GET" {
				t.Errorf("%s %s as %s succeeded: %d %s", ep.method, ep.path, who, s1, b1)
			}
		}
	}
	// Nothing changed: web-01 keeps its policy and stays.
	if tg, err := f.c.Target(ctx, "web-01"); err != nil || tg.Policy == nil || len(tg.Policy.Rules) != 2 {
		t.Errorf("web-01 after the probes: %+v, %v", tg, err)
	}
}

// TestNamesInPathsAreInert: a target name or request id in a URL path is
// untrusted text too. A name that is not a DNS label (escape sequences,
// newlines, bidirectional overrides, percent-encoded in the path) is
// refused as such, before any authorization, and nothing of it reaches the
// answer or the audit trail raw: before, a principal without any role
// planted "\u202e..." (which displays reversed in the console) or
// ESC sequences in the trail's target, reason and path of its own refusals.
func TestNamesInPathsAreInert(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	nobody, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "nobody", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	const evil = "%1b%5d0;pwned%07%0aApproved%20by%20the%20CISO%e2%80%ae"
	// raw reports a character of the name that must not reach a reader
	// as is; rawJSON the same in JSON (which escapes ESC, BEL and newline
	// but not U+202E). A name quoted with its escapes (%q) is inert.
	raw := func(s string) bool { return strings.ContainsAny(s, "\x1b\x07\n\u202e") }
	rawJSON := func(s string) bool {
		return raw(s) || strings.Contains(s, `\u001b`) || strings.Contains(s, `\u0007`) || strings.Contains(s, `\n`)
	}
	for _, ep := range []struct{ method, path, body string }{
		{"GET", "/api/v1/targets/" + evil, ""},
		{"DELETE", "/api/v1/targets/" + evil, ""},
		{"PUT", "/api/v1/targets/" + evil + "/policy", `{"rules":[{"port":22}]}`},
		{"DELETE", "/api/v1/targets/" + evil + "/policy", ""},
		{"POST", "/api/v1/requests/r-" + evil + "/revoke", `{"reason":"x"}`},
		{"POST", "/api/v1/requests/r-" + evil + "/approve", `{"reason":"x"}`},
		{"POST", "/api/v1/requests", `{"target":"\u001b]0;pwned\u0007\u202e","ports":["22"],"source":"198.51.100.9","duration":"1h","reason":"x"}`},
	} {
		for who, tok := range map[string]string{"no role": nobody, "admin": f.admin} {
			status, body := f.raw(t, ep.method, ep.path, tok, "application/json", strings.NewReader(ep.body))
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatalf("%s %s as %s: %d %s", ep.method, ep.path, who, status, body)
			}
			msg, _ := m["error"].(string)
			if status != http.StatusUnprocessableEntity && status != http.StatusNotFound || raw(msg) {
				t.Errorf("%s %s as %s: %d %q; want 422 or 404, the name escaped", ep.method, ep.path, who, status, msg)
			}
		}
	}
	es, err := f.st.ListAudit(ctx, store.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, _ := json.Marshal(e.Details)
		details := string(b) // JSON escapes ESC, BEL and newline; not U+202E
		if raw(e.Target) || raw(e.RequestID) || raw(e.Reason) || rawJSON(details) {
			t.Errorf("audit event %s holds the raw name: target %q, request %q, reason %q, details %s", e.Action, e.Target, e.RequestID, e.Reason, details)
		}
	}
}

// TestRefusalAuditIsBounded: what a refused call writes to the audit trail
// is bounded, however long the name or id the caller sent: before, a
// principal without any role wrote its whole path (and the message quoting
// the name) into a row, up to the server's header limit of a megabyte per
// call.
func TestRefusalAuditIsBounded(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	nobody, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "nobody", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", 100_000)
	for _, ep := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/targets/" + long + "/policy", `{"rules":[{"port":22}]}`},
		{"DELETE", "/api/v1/targets/" + long, ""},
		{"POST", "/api/v1/requests/r-" + long + "/revoke", `{"reason":"x"}`},
		{"POST", "/api/v1/requests", `{"target":"` + long + `","ports":["22"],"source":"198.51.100.9","duration":"1h","reason":"x"}`},
	} {
		if status, body := f.raw(t, ep.method, ep.path, nobody, "application/json", strings.NewReader(ep.body)); status < 400 || status >= 500 {
			t.Fatalf("%s %.40s...: %d %.200s", ep.method, ep.path, status, body)
		}
	}
	es, err := f.st.ListAudit(ctx, store.AuditFilter{Actor: "nobody", Limit: 100})
	if err != nil || len(es) != 4 {
		t.Fatalf("%d refusals audited, %v; want 4", len(es), err)
	}
	for _, e := range es {
		b, _ := json.Marshal(e)
		if len(b) > 4000 {
			t.Errorf("refusal audited with %d bytes: %.300s...", len(b), b)
		}
	}
}
