package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestApprovalRechecksRequester: through the HTTP edge, a request awaiting
// approval whose requester lost the right to ask meanwhile — their role
// binding removed, or the token they asked with revoked — is not granted
// by the approver's click: the approval answers 403 saying why, the
// request ends failed with the reason (audited), and the target's desired
// state holds no grant of it. A requester who kept both is granted.
func TestApprovalRechecksRequester(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	bob := f.c.WithToken(f.user(t, "bob", authz.Approver, "*"))
	cases := []struct {
		user      string
		meanwhile func(t *testing.T)
		says      string
	}{
		{user: "kept"},
		{user: "unbound", says: "no longer holds a role", meanwhile: func(t *testing.T) {
			if err := f.c.Unbind(ctx, wire.Binding{Principal: "user:unbound", Role: string(authz.Requester), Scope: "*"}); err != nil {
				t.Fatal(err)
			}
		}},
		{user: "revoked", says: "was revoked", meanwhile: func(t *testing.T) {
			toks, err := f.c.Tokens(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range toks {
				if tk.Subject == "revoked" {
					if err := f.c.RevokeToken(ctx, tk.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
		}},
	}
	for i, c := range cases {
		requester := f.c.WithToken(f.user(t, c.user, authz.Requester, "*"))
		r, err := requester.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"3389"}, Source: fmt.Sprintf("198.51.100.%d", 20+i),
			Duration: wire.Duration(time.Hour), Reason: "x"})
		if err != nil || r.State != "pending_approval" {
			t.Fatalf("%s: request: %v %+v", c.user, err, r)
		}
		if c.meanwhile != nil {
			c.meanwhile(t)
		}
		got, err := bob.Approve(ctx, r.ID, "ok", 0)
		if c.says == "" {
			if err != nil || got.State != "pending" {
				t.Errorf("%s: approval: %v, %s; want granted (pending)", c.user, err, got.State)
			}
			continue
		}
		if client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "no longer may ask") {
			t.Errorf("%s: approval: %v; want 403 saying the requester no longer may ask (%s)", c.user, err, c.says)
		}
		after, err := f.c.Request(ctx, r.ID)
		if err != nil || after.State != "failed" || !strings.Contains(after.Message, c.says) {
			t.Errorf("%s: request after the approval: %v, %s (%q); want failed saying %q", c.user, err, after.State, after.Message, c.says)
		}
		evs, err := f.st.ListAudit(ctx, store.AuditFilter{RequestID: r.ID, Action: "request.failed"})
		if err != nil || len(evs) != 1 || evs[0].Actor != "bob" {
			t.Errorf("%s: request.failed events %+v, %v; want one by bob", c.user, evs, err)
		}
	}
	_, _, gs, err := f.st.DesiredState(ctx, "web-01", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Port.Number == 3389 && g.Requester != "kept" {
			t.Errorf("desired state holds %+v of a requester who no longer may ask", g)
		}
	}
}
