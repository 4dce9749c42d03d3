package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// state is everything an admin can read that a refused call must leave
// alone: targets, policies, bindings, tokens, requests, webhooks, and the
// audit trail apart from the record of the refusal itself.
func (e *env) state(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	var parts []any
	ts, err := e.c.Targets(ctx)
	parts = append(parts, ts, err)
	for _, tg := range ts {
		p, err := e.c.Policy(ctx, tg.Name)
		parts = append(parts, p, err)
	}
	bs, err := e.c.Bindings(ctx)
	parts = append(parts, bs, err)
	toks, err := e.c.Tokens(ctx, true)
	parts = append(parts, toks, err)
	rs, err := e.c.Requests(ctx, client.RequestFilter{})
	parts = append(parts, rs, err)
	hs, err := e.c.Webhooks(ctx)
	parts = append(parts, hs, err)
	es, err := e.st.ListAudit(ctx, store.AuditFilter{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range es {
		if ev.Action != "access.denied" {
			parts = append(parts, ev.ID, ev.Action)
		}
	}
	b, err := json.Marshal(parts)
	if err != nil {
		t.Fatal(err)
	}
	// Times of "last seen" move on their own; everything else must not.
	return string(b)
}

// TestUntrustedTextRefused: every name, label, principal, token name and
// reason refuses control characters, newlines and bidirectional overrides
// with a 422 naming the field, and nothing changes.
func TestUntrustedTextRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01", "198.51.100.10")
	manual := sshPolicy("127.0.0.0/8")
	manual.Rules[0].Approval = &wire.Approval{Mode: "manual", Approvals: 1}
	e.setPolicy(t, "web-01", manual)
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
		Duration: wire.Duration(30 * time.Minute), Reason: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	id := req.ID
	for _, tc := range []struct {
		name, method, path string
		body               any
		field              string
	}{
		{"target name", "POST", "/api/v1/targets", wire.TargetCreate{Name: "web-02\x1b[2J"}, "name"},
		{"gateway name", "POST", "/api/v1/targets", wire.TargetCreate{Name: "app-01", Gateway: "gw\a", Address: "10.0.0.5"}, "gateway"},
		{"label value ESC", "POST", "/api/v1/targets", wire.TargetCreate{Name: "web-03", Labels: map[string]string{"env": "prod\x1b[31m"}}, "labels"},
		{"label value C1", "POST", "/api/v1/targets", wire.TargetCreate{Name: "web-03", Labels: map[string]string{"env": "prod\u009b"}}, "labels"},
		{"label value bidi", "POST", "/api/v1/targets", wire.TargetCreate{Name: "web-03", Labels: map[string]string{"env": "\u202edorp"}}, "labels"},
		{"label key", "POST", "/api/v1/targets", wire.TargetCreate{Name: "web-03", Labels: map[string]string{"en\u0085v": "prod"}}, "labels"},
		{"binding principal", "POST", "/api/v1/bindings", wire.Binding{Principal: "user:bob\x1b]0;owned\a", Role: "admin", Scope: "*"}, "principal"},
		{"binding principal DEL", "POST", "/api/v1/bindings", wire.Binding{Principal: "group:ops\x7f", Role: "reader", Scope: "*"}, "principal"},
		{"binding principal bidi", "POST", "/api/v1/bindings", wire.Binding{Principal: "user:\u2066eve\u2069", Role: "reader", Scope: "*"}, "principal"},
		{"binding label scope", "POST", "/api/v1/bindings", wire.Binding{Principal: "user:bob", Role: "reader", Scope: "label:env=pr\u0085od"}, "binding.scope"},
		{"token name", "POST", "/api/v1/tokens", wire.TokenCreate{Name: "ci\x1b[1m", TTL: wire.Duration(time.Hour)}, "name"},
		{"service name", "POST", "/api/v1/tokens", wire.TokenCreate{Name: "ci", Service: "deploy\a", TTL: wire.Duration(time.Hour)}, "service"},
		{"user name", "POST", "/api/v1/tokens", wire.TokenCreate{Name: "x", User: "bob\u009b", TTL: wire.Duration(time.Hour)}, "user"},
		{"request reason newline", "POST", "/api/v1/requests", wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
			Duration: wire.Duration(time.Minute), Reason: "INC-1\nApproved by: the CISO"}, "reason"},
		{"request reason ESC", "POST", "/api/v1/requests", wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
			Duration: wire.Duration(time.Minute), Reason: "INC-1\x1b[8m"}, "reason"},
		{"request reason stacked marks", "POST", "/api/v1/requests", wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
			Duration: wire.Duration(time.Minute), Reason: "INC-1" + strings.Repeat("\u0336", 300)}, "reason"},
		{"label value stacked marks", "POST", "/api/v1/targets", wire.TargetCreate{Name: "web-03", Labels: map[string]string{"env": "p" + strings.Repeat("\u0301", 20)}}, "labels"},
		{"deny reason", "POST", "/api/v1/requests/" + id + "/deny", wire.Decide{Reason: "no\x1b[31m"}, "reason"},
		{"approve reason", "POST", "/api/v1/requests/" + id + "/approve", wire.Decide{Reason: "ok\r\nforged"}, "reason"},
		{"revoke reason", "POST", "/api/v1/requests/" + id + "/revoke", wire.Revoke{Reason: "bye\a"}, "reason"},
		{"selector", "POST", "/api/v1/policies/enable", wire.PolicyEnable{Default: true, Selector: "env=prod\x1b"}, "selector"},
		{"justification pattern", "PUT", "/api/v1/targets/web-01/policy", wire.Policy{Rules: []wire.PortRule{{Port: 22,
			Justification: &wire.Justification{Pattern: "^INC\x1b"}}}}, "rules[0].justification.pattern"},
		{"webhook url", "POST", "/api/v1/webhooks", wire.WebhookCreate{URL: "https://hooks.example.com/\u0085x"}, "url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.state(t)
			body, _ := json.Marshal(tc.body)
			status, out := e.raw(t, tc.method, tc.path, e.admin, "application/json", strings.NewReader(string(body)))
			var we wire.Error
			_ = json.Unmarshal(out, &we)
			if status != http.StatusUnprocessableEntity || we.Field != tc.field {
				t.Fatalf("%s %s = %d %s, want 422 naming field %q", tc.method, tc.path, status, out, tc.field)
			}
			for _, c := range []string{"\x1b", "\a", "\u009b", "\u0085", "\u202e"} {
				if strings.Contains(we.Error, c) {
					t.Errorf("the message echoes the control character %q: %q", c, we.Error)
				}
			}
			if after := e.state(t); after != before {
				t.Errorf("state changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestLengthsCountCharacters: the bounds the messages state in characters
// count characters, so text in other scripts gets the same room as ASCII.
func TestLengthsCountCharacters(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-02", Labels: map[string]string{"team": strings.Repeat("é", 63)}}); err != nil {
		t.Errorf("a 63-character label value: %v", err)
	}
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-03", Labels: map[string]string{"team": strings.Repeat("é", 64)}}); err == nil {
		t.Errorf("a 64-character label value was accepted")
	}
	if _, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: strings.Repeat("名", 100), TTL: wire.Duration(time.Hour)}); err != nil {
		t.Errorf("a 100-character token name: %v", err)
	}
	if _, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: strings.Repeat("名", 101), TTL: wire.Duration(time.Hour)}); err == nil ||
		!strings.Contains(err.Error(), "at most 100 characters") {
		t.Errorf("a 101-character token name: %v", err)
	}
	reason := strings.Repeat("ü", 1000) // 2000 bytes
	r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "127.0.0.1",
		Duration: wire.Duration(time.Minute), Reason: reason})
	if err != nil {
		t.Fatalf("a 1000-character reason: %v", err)
	}
	if _, err := e.c.Revoke(ctx, r.ID, reason+"ü"); err == nil || !strings.Contains(err.Error(), "at most 1000 characters") {
		t.Errorf("a 1001-character revoke reason: %v", err)
	}
	if _, err := e.c.Revoke(ctx, r.ID, reason); err != nil {
		t.Errorf("a 1000-character revoke reason: %v", err)
	}
}
