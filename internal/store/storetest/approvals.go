package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

var carol = store.Actor{Name: "carol", ClientAddr: "192.0.2.12"}

// manualTarget creates name with 22/tcp needing two approvals and 3389/tcp one.
func manualTarget(t *testing.T, s *store.Store, name string, now time.Time) {
	t.Helper()
	if _, _, err := s.CreateTarget(t.Context(), alice, name, nil, now, enrollTTL); err != nil {
		t.Fatal(err)
	}
	p, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), MaxDuration: 2 * time.Hour, Approval: policy.Approval{Mode: policy.Manual, Approvals: 2}},
		{Port: tcp(3389), MaxDuration: 2 * time.Hour, Approval: policy.Approval{Mode: policy.Manual}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(t.Context(), alice, name, p, now); err != nil {
		t.Fatal(err)
	}
}

func testApprovals(t *testing.T, s *store.Store) {
	ctx := t.Context()
	mayRequest(t, s, "alice", "carol") // their last approval asks again (ApprovalRechecksRequester)
	manualTarget(t, s, "db-1", t0)
	rev0 := mustTarget(t, s, "db-1").Revision
	r := mustRequest(t, s, alice, "db-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(time.Minute))
	if r.State != access.PendingApproval || r.ApprovalsRequired != 2 || r.ApproveBy == nil || !r.ApproveBy.Equal(at(time.Minute+store.DefaultApprovalTimeout)) {
		t.Fatalf("request = %s, %d approvals, approve by %v; want pending_approval, 2, +1h", r.State, r.ApprovalsRequired, r.ApproveBy)
	}
	if len(grants(t, s, "db-1", at(time.Minute))) != 0 || mustTarget(t, s, "db-1").Revision != rev0 {
		t.Fatal("a request awaiting approval changed the desired state")
	}
	_, err := s.ApproveRequest(ctx, alice, r.ID, "", 0, at(2*time.Minute))
	wantErrIs(t, "self-approval", err, store.ErrForbidden)
	r1, err := s.ApproveRequest(ctx, bob, r.ID, "looks fine", 0, at(2*time.Minute))
	if err != nil || r1.State != access.PendingApproval || len(r1.Decisions) != 1 {
		t.Fatalf("first approval: %v, state %s, %d decisions; want still pending_approval with 1", err, r1.State, len(r1.Decisions))
	}
	_, err = s.ApproveRequest(ctx, bob, r.ID, "", 0, at(3*time.Minute))
	wantErrIs(t, "approving twice", err, store.ErrConflict)
	_, err = s.ApproveRequest(ctx, carol, r.ID, "", r.Version, at(3*time.Minute))
	wantErrIs(t, "approval on a stale version", err, store.ErrStale)
	r2, err := s.ApproveRequest(ctx, carol, r.ID, "", r1.Version, at(10*time.Minute))
	if err != nil || r2.State != access.Pending {
		t.Fatalf("second approval: %v, state %s; want pending", err, r2.State)
	}
	// The clock starts at approval, not at the ask.
	if !r2.ExpiresAt.Equal(at(70*time.Minute)) || r2.ApprovedAt == nil || !r2.ApprovedAt.Equal(at(10*time.Minute)) {
		t.Errorf("approved request expires %v (approved %v), want +70m", r2.ExpiresAt, r2.ApprovedAt)
	}
	if g := grants(t, s, "db-1", at(11*time.Minute)); len(g) != 1 || !g[0].ExpiresAt.Equal(at(70*time.Minute)) {
		t.Errorf("grants after approval = %v, want one until +70m", g)
	}
	_, err = s.ApproveRequest(ctx, carol, r.ID, "", 0, at(11*time.Minute))
	wantErrIs(t, "approving a granted request", err, store.ErrConflict)

	// A denial wins even after approval: the grant leaves at once.
	d, err := s.DenyRequest(ctx, bob, r.ID, "changed my mind", 0, at(12*time.Minute))
	if err != nil || d.State != access.Denied {
		t.Fatalf("deny after approval: %v, state %s", err, d.State)
	}
	if g := grants(t, s, "db-1", at(12*time.Minute)); len(g) != 0 {
		t.Errorf("grants after a denial = %v, want none", g)
	}
	_, err = s.DenyRequest(ctx, bob, r.ID, "", 0, at(13*time.Minute))
	wantErrIs(t, "denying a denied request", err, store.ErrConflict)

	// Denial of a request awaiting approval; the requester cannot deny.
	r3 := mustRequest(t, s, alice, "db-1", ask("198.51.100.8/32", time.Hour, tcp(3389)), at(20*time.Minute))
	_, err = s.DenyRequest(ctx, alice, r3.ID, "", 0, at(21*time.Minute))
	wantErrIs(t, "self-denial", err, store.ErrForbidden)
	if d, err := s.DenyRequest(ctx, carol, r3.ID, "no ticket", 0, at(21*time.Minute)); err != nil || d.State != access.Denied || d.Message != "denied by carol: no ticket" {
		t.Fatalf("deny: %v, %s %q", err, d.State, d.Message)
	}

	// Nobody approves: the request expires after the approval timeout.
	r4 := mustRequest(t, s, alice, "db-1", ask("198.51.100.9/32", time.Hour, tcp(3389)), at(30*time.Minute))
	if _, err := s.Sweep(ctx, at(30*time.Minute+store.DefaultApprovalTimeout), activation); err != nil {
		t.Fatal(err)
	}
	if e := wantState(t, s, r4.ID, access.Expired); e.Message != "not approved in time" {
		t.Errorf("unapproved request message %q", e.Message)
	}
	_, err = s.ApproveRequest(ctx, bob, r4.ID, "", 0, at(91*time.Minute))
	wantErrIs(t, "approving an expired request", err, store.ErrConflict)

	wantTrail(t, s, store.AuditFilter{RequestID: r.ID},
		"request.created "+r.ID, "request.approved "+r.ID, "request.approved "+r.ID, "request.denied "+r.ID)
}

// testApprovalRace sends approvals, denials, revocations and extensions of
// the same request at once: whatever the order, a denial or revocation wins,
// and no grant of the request survives it.
func testApprovalRace(t *testing.T, s *store.Store) {
	ctx := t.Context()
	mayRequest(t, s, "alice", "carol") // their last approval asks again (ApprovalRechecksRequester)
	manualTarget(t, s, "db-1", t0)
	for round := 0; round < 10; round++ {
		now := at(time.Duration(round+1) * time.Hour)
		src := "198.51.100.7/32"
		r := mustRequest(t, s, alice, "db-1", ask(src, time.Hour, tcp(3389)), now)
		var wg sync.WaitGroup
		for i, f := range []func(){
			func() { s.ApproveRequest(ctx, bob, r.ID, "", 0, now) },
			func() { s.ApproveRequest(ctx, carol, r.ID, "", 0, now) },
			func() { s.DenyRequest(ctx, carol, r.ID, "race", 0, now) },
			func() { s.RevokeRequest(ctx, alice, r.ID, "race", now) },
			func() {
				s.CreateRequest(ctx, alice, "db-1", ask(src, time.Hour, tcp(3389)), policy.DefaultLimits(), now)
			},
		} {
			if round%2 == 1 && i == 3 {
				continue // half the rounds without the requester's own revoke
			}
			wg.Add(1)
			go func() { defer wg.Done(); f() }()
		}
		wg.Wait()
		final := mustGet(t, s, r.ID)
		if final.State != access.Denied && final.State != access.Revoked {
			t.Fatalf("round %d: request ended %s; want denied or revoked (the security-biased outcome)", round, final.State)
		}
		// The concurrent new request awaits approval and holds nothing, so
		// no grant may be left at all.
		if g := grants(t, s, "db-1", now); len(g) != 0 {
			t.Fatalf("round %d: grants %v survive a %s request", round, g, final.State)
		}
		// Clean up whatever the concurrent new request left.
		for _, q := range mustList(t, s, store.RequestFilter{Target: "db-1", States: []access.State{access.PendingApproval, access.Pending, access.Active}}) {
			s.RevokeRequest(ctx, alice, q.ID, "", now)
		}
	}
}

func mustList(t *testing.T, s *store.Store, f store.RequestFilter) []store.Request {
	t.Helper()
	rs, err := s.ListRequests(t.Context(), f)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func testBindings(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if _, err := s.CreateAdminToken(ctx, alice, "root", t0); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBinding(ctx, alice, authz.Binding{Principal: "group:ops", Role: authz.Approver, Scope: "label:group=prod"}, t0)
	if err != nil || b.ID == 0 {
		t.Fatalf("CreateBinding: %v", err)
	}
	_, err = s.CreateBinding(ctx, alice, authz.Binding{Principal: "group:ops", Role: authz.Approver, Scope: "label:group=prod"}, t0)
	wantErrIs(t, "duplicate binding", err, store.ErrConflict)
	bs, err := s.ListBindings(ctx)
	if err != nil || len(bs) != 2 {
		t.Fatalf("ListBindings = %v, %v; want the bootstrap admin and group:ops", bs, err)
	}
	err = s.DeleteBinding(ctx, alice, authz.Binding{Principal: "user:root", Role: authz.Admin, Scope: authz.Everywhere}, t0)
	wantErrIs(t, "removing the last admin", err, store.ErrConflict)
	if err := s.DeleteBinding(ctx, alice, authz.Binding{Principal: "group:ops", Role: authz.Approver, Scope: "label:group=prod"}, t0); err != nil {
		t.Fatalf("DeleteBinding: %v", err)
	}
	err = s.DeleteBinding(ctx, alice, authz.Binding{Principal: "group:ops", Role: authz.Approver, Scope: "label:group=prod"}, t0)
	wantErrIs(t, "deleting a missing binding", err, store.ErrNotFound)
	wantTrail(t, s, store.AuditFilter{Action: "binding.created"}, "binding.created")
}

func testUserTokens(t *testing.T, s *store.Store) {
	ctx := t.Context()
	limits := []authz.Grant{{Role: authz.Requester, Scope: "target:web-1"}}
	secret, info, err := s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", Name: "laptop",
		Limits: limits, TTL: time.Hour}, t0)
	if err != nil || info.ID == "" || info.ExpiresAt == nil {
		t.Fatalf("CreateToken: %v %+v", err, info)
	}
	p, err := s.Authenticate(ctx, secret, at(time.Minute))
	if err != nil || p.Subject != "alice" || p.Kind != store.KindPersonal || len(p.Limits) != 1 || p.Limits[0] != limits[0] {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	if _, err := s.Authenticate(ctx, secret, at(time.Hour)); err == nil {
		t.Error("an expired personal token authenticated")
	}
	sess, _, err := s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindSession, Subject: "bob", Groups: []string{"ops", "dba"}, TTL: time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	p, _ = s.Authenticate(ctx, sess, t0)
	if got := p.Authz().Principals; len(got) != 3 || got[0] != "user:bob" || got[1] != "group:ops" {
		t.Errorf("session principals = %v", got)
	}
	ts, err := s.ListTokens(ctx, &store.Owner{Name: "alice"}, at(time.Minute))
	if err != nil || len(ts) != 1 || ts[0].Name != "laptop" {
		t.Fatalf("ListTokens(alice) = %v, %v", ts, err)
	}
	if _, err := s.RevokeToken(ctx, alice, info.ID, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, secret, at(time.Minute)); err == nil {
		t.Error("a revoked token authenticated")
	}
	_, err = s.RevokeToken(ctx, alice, info.ID, t0)
	wantErrIs(t, "revoking twice", err, store.ErrNotFound)
}

// testWindowsAndGroups: a rule's time windows are checked when a grant
// starts (at creation, and again at the approval that completes a request)
// and clip its deadline, recorded as WindowEnd; approvals by group are
// tallied one seat per approver, with the groups each approval counted for
// recorded, and an approval that fills nothing is refused and changes
// nothing. t0 is Friday 10:00 UTC.
func testWindowsAndGroups(t *testing.T, s *store.Store) {
	ctx := t.Context()
	mayRequest(t, s, "alice", "carol") // their last approval asks again (ApprovalRechecksRequester)
	if _, _, err := s.CreateTarget(ctx, alice, "win-1", nil, t0, enrollTTL); err != nil {
		t.Fatal(err)
	}
	p, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), MaxDuration: 2 * time.Hour, Windows: []string{"Fri 09:00-11:00 UTC"},
			ApprovalGroups: []policy.GroupApproval{{From: "group:dba"}, {From: "group:security"}}},
		{Port: tcp(443), MaxDuration: 2 * time.Hour, Windows: []string{"Fri 09:00-10:30 UTC"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(ctx, alice, "win-1", p, t0); err != nil {
		t.Fatal(err)
	}
	r := mustRequest(t, s, alice, "win-1", ask("198.51.100.7/32", time.Hour, tcp(443)), t0)
	if !r.ExpiresAt.Equal(at(30*time.Minute)) || r.WindowEnd == nil || !r.WindowEnd.Equal(at(30*time.Minute)) {
		t.Fatalf("inside the window: expires %s, window end %v; want both 10:30", r.ExpiresAt, r.WindowEnd)
	}
	if gs := grants(t, s, "win-1", t0); len(gs) != 1 || !gs[0].ExpiresAt.Equal(at(30*time.Minute)) {
		t.Fatalf("grants = %+v, want one ending 10:30", gs)
	}
	_, err = s.CreateRequest(ctx, bob, "win-1", ask("198.51.100.8/32", time.Hour, tcp(443)), policy.DefaultLimits(), at(40*time.Minute))
	var de *policy.DenyError
	if !errors.As(err, &de) || de.Rule != "443/tcp" || !de.NextOpening.Equal(at(7*24*time.Hour-time.Hour)) {
		t.Fatalf("outside the window: %v, want a refusal by 443/tcp opening next Friday 09:00", err)
	}

	dba, sec := store.Actor{Name: "bob", Member: []string{"group:dba"}}, store.Actor{Name: "carol", Member: []string{"group:security"}}
	erin := store.Actor{Name: "erin", Member: []string{"group:dba", "group:other"}}
	r = mustRequest(t, s, alice, "win-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(10*time.Minute))
	if r.State != access.PendingApproval || r.ApprovalsRequired != 2 || len(r.ApprovalGroups) != 2 || len(r.Tally.Missing) != 2 {
		t.Fatalf("request = %s, %d approvals, groups %+v, tally %+v", r.State, r.ApprovalsRequired, r.ApprovalGroups, r.Tally)
	}
	r1, err := s.ApproveRequest(ctx, dba, r.ID, "", 0, at(20*time.Minute))
	if err != nil || r1.State != access.PendingApproval || len(r1.Tally.Missing) != 1 || r1.Tally.Missing[0].From != "group:security" ||
		len(r1.Decisions) != 1 || len(r1.Decisions[0].Member) != 1 {
		t.Fatalf("after dba: %v %s tally %+v decisions %+v", err, r1.State, r1.Tally, r1.Decisions)
	}
	_, err = s.ApproveRequest(ctx, erin, r.ID, "", 0, at(21*time.Minute))
	wantErrIs(t, "a second dba approver", err, store.ErrForbidden)
	r2, err := s.ApproveRequest(ctx, sec, r.ID, "", 0, at(30*time.Minute))
	// Asked until 11:30; the window closes at 11:00.
	if err != nil || r2.State != access.Pending || !r2.ExpiresAt.Equal(at(time.Hour)) || r2.WindowEnd == nil {
		t.Fatalf("after security: %v %s expires %s window end %v; want pending until 11:00", err, r2.State, r2.ExpiresAt, r2.WindowEnd)
	}

	// The last approval after the window closed: refused, nothing recorded.
	r = mustRequest(t, s, alice, "win-1", ask("198.51.100.9/32", time.Hour, tcp(22)), at(50*time.Minute))
	if _, err := s.ApproveRequest(ctx, dba, r.ID, "", 0, at(55*time.Minute)); err != nil {
		t.Fatal(err)
	}
	_, err = s.ApproveRequest(ctx, sec, r.ID, "", 0, at(65*time.Minute))
	if !errors.As(err, &de) || de.NextOpening.IsZero() {
		t.Fatalf("approval after the window closed: %v, want a refusal with the next opening", err)
	}
	if got, err := s.GetRequest(ctx, r.ID); err != nil || got.State != access.PendingApproval || len(got.Decisions) != 1 {
		t.Fatalf("the refused approval changed the request: %v %s, %d decisions", err, got.State, len(got.Decisions))
	}
}
