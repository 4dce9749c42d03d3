package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestApprovalWorkflow: a request needing two approvals from approvers in
// scope; the requester cannot approve; nobody approves twice; the refused
// attempts are audited and change nothing.
func TestApprovalWorkflow(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	if _, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "manual", Approvals: 2},
			Justification: &wire.Justification{Required: true, Pattern: `^INC-[0-9]+`}},
	}}); err != nil {
		t.Fatal(err)
	}
	dave := f.c.WithToken(f.user(t, "dave", authz.Requester, "label:group=prod"))
	bob := f.c.WithToken(f.user(t, "bob", authz.Approver, "label:group=prod"))
	carol := f.c.WithToken(f.user(t, "carol", authz.Approver, "*"))
	eve := f.c.WithToken(f.user(t, "eve", authz.Approver, "label:group=production"))

	_, err := dave.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "disk"})
	if client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "must match") {
		t.Fatalf("a reason without a ticket: %v, want 403 naming the pattern", err)
	}
	r, err := dave.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "INC-42 disk"})
	if err != nil || r.State != "pending_approval" || r.ApprovalsRequired != 2 || len(r.Connect) != 0 {
		t.Fatalf("request: %v %+v", err, r)
	}
	if _, err := f.c.WithToken(f.user(t, "dave2", authz.Requester, "*")).Approve(ctx, r.ID, "", 0); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("approval by a requester: %v, want 403", err)
	}
	if _, err := eve.Approve(ctx, r.ID, "", 0); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("approval by an approver out of scope: %v, want 403", err)
	}
	r1, err := bob.Approve(ctx, r.ID, "ok", 0)
	if err != nil || r1.State != "pending_approval" || len(r1.Decisions) != 1 {
		t.Fatalf("first approval: %v %s", err, r1.State)
	}
	if _, err := bob.Approve(ctx, r.ID, "", 0); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("approving twice: %v, want 409", err)
	}
	if _, err := carol.Approve(ctx, r.ID, "", r.Version); client.StatusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "reload") {
		t.Errorf("approval on a stale version: %v, want 409 saying to reload", err)
	}
	r2, err := carol.Approve(ctx, r.ID, "", r1.Version)
	if err != nil || r2.State != "pending" {
		t.Fatalf("second approval: %v %s, want pending (sent to the agent)", err, r2.State)
	}
	// The requester's own approval is refused, and audited, even by an admin.
	own, err := f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.8", Duration: wire.Duration(time.Hour), Reason: "INC-43"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Approve(ctx, own.ID, "", 0); client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "own request") {
		t.Errorf("self-approval: %v, want 403 about one's own request", err)
	}
	if got, _ := f.c.Request(ctx, own.ID); got.State != "pending_approval" || len(got.Decisions) != 0 {
		t.Errorf("a refused self-approval changed the request: %s, %d decisions", got.State, len(got.Decisions))
	}
	denied, err := f.st.ListAudit(ctx, store.AuditFilter{Action: "access.denied"})
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range denied {
		reasons = append(reasons, e.Reason)
	}
	joined := strings.Join(reasons, " | ")
	for _, want := range []string{"own request", "already approved", "changed", "request.approve"} {
		if !strings.Contains(joined, want) {
			t.Errorf("audit of refused attempts lacks %q: %s", want, joined)
		}
	}
	// A deny by anyone in scope ends it, even after approval.
	if d, err := bob.Deny(ctx, r.ID, "second thoughts", 0); err != nil || d.State != "denied" {
		t.Fatalf("deny after approval: %v %s", err, d.State)
	}
	if _, err := carol.Approve(ctx, r.ID, "", 0); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("approving a denied request: %v, want 409", err)
	}
	pending, err := carol.Requests(ctx, client.RequestFilter{State: "pending_approval"})
	if err != nil || len(pending) != 2 { // the fixture's and own
		t.Errorf("pending approvals for carol: %d, %v", len(pending), err)
	}
}

// TestBindingAndTokenInput: unknown roles and scopes are 422 with the field
// named; a token cannot exceed its owner.
func TestBindingAndTokenInput(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	for _, b := range []wire.Binding{
		{Principal: "user:x", Role: "superuser", Scope: "*"},
		{Principal: "user:x", Role: "reader", Scope: "Web 01"},
		{Principal: "x", Role: "reader", Scope: "*"},
	} {
		if _, err := f.c.Bind(ctx, b); client.StatusOf(err) != http.StatusUnprocessableEntity {
			t.Errorf("Bind(%+v): %v, want 422", b, err)
		}
	}
	bobTok := f.user(t, "bob", authz.Requester, "target:web-01")
	bob := f.c.WithToken(bobTok)
	if _, err := bob.CreateToken(ctx, wire.TokenCreate{Name: "wide", TTL: wire.Duration(time.Hour), Limits: []wire.Grant{{Role: "requester", Scope: "*"}}}); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("a token wider than its owner: %v, want 403", err)
	}
	tc, err := bob.CreateToken(ctx, wire.TokenCreate{Name: "narrow", TTL: wire.Duration(time.Hour), Limits: []wire.Grant{{Role: "requester", Scope: "web-01"}}})
	if err != nil || tc.Secret == "" {
		t.Fatalf("a token within its owner: %v", err)
	}
	if _, err := bob.CreateToken(ctx, wire.TokenCreate{Name: "svc", TTL: wire.Duration(time.Hour), Service: "ci"}); client.StatusOf(err) != http.StatusForbidden {
		t.Errorf("a service token by a non-admin: %v, want 403", err)
	}
	if _, err := bob.CreateToken(ctx, wire.TokenCreate{Name: "forever", TTL: wire.Duration(400 * 24 * time.Hour)}); client.StatusOf(err) != http.StatusUnprocessableEntity {
		t.Errorf("a token for 400 days: %v, want 422", err)
	}
	ts, err := bob.Tokens(ctx, false)
	if err != nil || len(ts) != 2 {
		t.Fatalf("bob's tokens: %d, %v", len(ts), err)
	}
	if err := f.c.WithToken(tc.Secret).RevokeToken(ctx, tc.Token.ID); err != nil {
		t.Fatalf("revoking one's own token: %v", err)
	}
	if _, err := f.c.WithToken(tc.Secret).Whoami(ctx); client.StatusOf(err) != http.StatusUnauthorized {
		t.Errorf("a revoked token still works: %v", err)
	}
}
