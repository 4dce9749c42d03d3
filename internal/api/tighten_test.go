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

// TestApprovalsTightenedWhilePending: a rule tightened while a request
// awaits approval (a security approver added to a dba one) binds that
// request too: the dba approval that the old rule would have called
// enough leaves it awaiting security, and a security member's approval —
// a group the request did not name when it was created — counts and
// grants it. A loosening does not help a pending request (its needs never
// shrink).
func TestApprovalsTightenedWhilePending(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	set := func(groups ...wire.GroupApproval) {
		t.Helper()
		if _, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 5432, MaxDuration: wire.Duration(time.Hour),
			Approvals: groups}}}); err != nil {
			t.Fatal(err)
		}
	}
	dba, sec := wire.GroupApproval{From: "group:dba", Count: 1}, wire.GroupApproval{From: "group:security", Count: 1}
	set(dba)
	member := func(name string, groups ...string) *client.Client {
		if _, err := f.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:" + name, Role: authz.Approver, Scope: "*"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		secret, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: name, Groups: groups, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return f.c.WithToken(secret)
	}
	bob, carol := member("bob", "dba"), member("carol", "security")

	r, err := f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"5432"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil || r.State != "pending_approval" || r.ApprovalsRequired != 1 {
		t.Fatalf("request: %v %+v", err, r)
	}
	set(dba, sec)
	r1, err := bob.Approve(ctx, r.ID, "", 0)
	if err != nil || r1.State != "pending_approval" || len(r1.MissingApprovals) != 1 || r1.MissingApprovals[0] != sec || r1.ApprovalsRequired != 2 {
		t.Fatalf("dba approval after the rule was tightened: %v %s, %d required, missing %+v; want awaiting 1 more from group:security",
			err, r1.State, r1.ApprovalsRequired, r1.MissingApprovals)
	}
	set(dba) // loosened again: the request keeps what it needed
	r2, err := carol.Approve(ctx, r.ID, "", 0)
	if err != nil || r2.State != "pending" || len(r2.Decisions) != 2 || len(r2.Decisions[1].Member) != 1 || r2.Decisions[1].Member[0] != "group:security" {
		t.Fatalf("security approval: %v %s, decisions %+v; want pending, carol counted for group:security", err, r2.State, r2.Decisions)
	}
}

// TestApprovalUnderTightenedRule: the approval that would grant a request
// is refused when the target's rule, tightened since the ask, refuses the
// request now — a shorter maximum, a narrower source list — as an
// approval after the window closed is: 403 naming the rule, nothing
// recorded, the port not opened. Approvers cannot open more than the
// policy allows at the moment of the grant.
func TestApprovalUnderTightenedRule(t *testing.T) {
	f := newMatrixFixture(t)
	ctx := context.Background()
	set := func(max time.Duration, sources ...string) {
		t.Helper()
		if _, err := f.c.SetPolicy(ctx, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 5432, MaxDuration: wire.Duration(max),
			AllowedSources: sources, Approval: &wire.Approval{Mode: "manual"}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:bob", Role: authz.Approver, Scope: "*"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, _, err := f.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bob := f.c.WithToken(secret)
	for _, tc := range []struct {
		name    string
		tighten func()
		want    string
	}{
		{"shorter maximum", func() { set(30 * time.Minute) }, "exceeds the maximum"},
		{"narrower sources", func() { set(time.Hour, "10.0.0.0/8") }, "198.51.100.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set(time.Hour)
			r, err := f.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"5432"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"})
			if err != nil || r.State != "pending_approval" {
				t.Fatalf("request: %v %+v", err, r)
			}
			tc.tighten()
			_, err = bob.Approve(ctx, r.ID, "", 0)
			if client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("approval under the tightened rule: %v; want 403 saying %q", err, tc.want)
			}
			if got, _ := f.c.Request(ctx, r.ID); got.State != "pending_approval" || len(got.Decisions) != 0 {
				t.Fatalf("the refused approval changed the request: %s, %d decisions", got.State, len(got.Decisions))
			}
			if _, err := f.c.Revoke(ctx, r.ID, ""); err != nil {
				t.Fatal(err)
			}
		})
	}
}
