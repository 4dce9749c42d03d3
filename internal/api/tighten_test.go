package api_test

import (
	"context"
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
