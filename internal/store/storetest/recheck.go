package storetest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// setGroups gives name's 22/tcp a rule asking for approvals manual
// approvals, of which the groups' counts.
func setGroups(t *testing.T, s *store.Store, name string, approvals int, groups []policy.GroupApproval, now time.Time) {
	t.Helper()
	p, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{
		{Port: tcp(22), MaxDuration: 2 * time.Hour, Approval: policy.Approval{Mode: policy.Manual, Approvals: approvals}, ApprovalGroups: groups},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetPolicy(t.Context(), alice, name, p, now); err != nil {
		t.Fatal(err)
	}
}

// testScheduledGroupsRecheck: a scheduled request approved before its
// start is decided again at the start with the approval rules of that
// instant — the groups too, not only the number of approvals. A rule that
// now asks for a security approver (same total) does not start on the
// approvals of two dba members, and the trail says what is missing; one
// whose rules did not change starts.
func testScheduledGroupsRecheck(t *testing.T, s *store.Store) {
	ctx := t.Context()
	for _, name := range []string{"db-1", "db-2"} {
		if _, _, err := s.CreateTarget(ctx, alice, name, nil, t0, enrollTTL); err != nil {
			t.Fatal(err)
		}
		setGroups(t, s, name, 2, []policy.GroupApproval{{From: "group:dba", Count: 1}}, t0)
	}
	if _, err := s.CreateBinding(ctx, alice, authz.Binding{Principal: "user:carol", Role: authz.Requester, Scope: authz.Everywhere}, t0); err != nil {
		t.Fatal(err)
	}
	// Approvers as the API records them: principals, and a role that
	// may approve (the start asks again: ScheduledApproverRecheck).
	bob := store.Actor{Name: "bob", Member: []string{"group:dba"}, Subject: authz.Subject{Principals: []string{"user:bob", "group:dba"}}}
	erin := store.Actor{Name: "erin", Member: []string{"group:dba"}, Subject: authz.Subject{Principals: []string{"user:erin", "group:dba"}}}
	if _, err := s.CreateBinding(ctx, alice, authz.Binding{Principal: "group:dba", Role: authz.Approver, Scope: authz.Everywhere}, t0); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, name := range []string{"db-1", "db-2"} {
		r := scheduledAsk(t, s, carol, name, ask("198.51.100.7/32", 30*time.Minute, tcp(22)), at(time.Hour), t0)
		for _, a := range []store.Actor{bob, erin} {
			if _, err := s.ApproveRequest(ctx, a, r.ID, "", 0, at(time.Minute)); err != nil {
				t.Fatalf("approval of %s by %s: %v", r.ID, a.Name, err)
			}
		}
		wantState(t, s, r.ID, access.Scheduled)
		ids = append(ids, r.ID)
	}
	// db-1's rule now wants one of the two approvers from security.
	setGroups(t, s, "db-1", 2, []policy.GroupApproval{{From: "group:dba", Count: 1}, {From: "group:security", Count: 1}}, at(2*time.Minute))
	if n := startScheduled(t, s, at(time.Hour)); n != 2 {
		t.Fatalf("StartScheduled handled %d requests, want 2", n)
	}
	failed := wantState(t, s, ids[0], access.Failed)
	if !strings.Contains(failed.Message, "group:security") {
		t.Errorf("db-1's request: %q, want it to say a security approval is missing", failed.Message)
	}
	if g := grants(t, s, "db-1", at(time.Hour)); len(g) != 0 {
		t.Errorf("grants on db-1 = %+v, want none: its rule now asks for a security approver", g)
	}
	wantState(t, s, ids[1], access.Pending)
	if g := grants(t, s, "db-2", at(time.Hour)); len(g) != 1 {
		t.Errorf("grants on db-2 = %+v, want the one of the unchanged rule", g)
	}
}

// testApprovalsTightened: a rule tightened while a request awaits approval
// binds it (access.Stricter): the approval the old rule called enough
// leaves it awaiting the added group, kept on the request; loosening the
// rule again does not lower what it needs.
func testApprovalsTightened(t *testing.T, s *store.Store) {
	ctx := t.Context()
	mayRequest(t, s, "alice", "carol") // their last approval asks again (ApprovalRechecksRequester)
	if _, _, err := s.CreateTarget(ctx, alice, "db-1", nil, t0, enrollTTL); err != nil {
		t.Fatal(err)
	}
	dba, sec := policy.GroupApproval{From: "group:dba", Count: 1}, policy.GroupApproval{From: "group:security", Count: 1}
	setGroups(t, s, "db-1", 0, []policy.GroupApproval{dba}, t0)
	r := mustRequest(t, s, carol, "db-1", ask("198.51.100.7/32", time.Hour, tcp(22)), at(time.Minute))
	setGroups(t, s, "db-1", 0, []policy.GroupApproval{dba, sec}, at(2*time.Minute))
	r1, err := s.ApproveRequest(ctx, store.Actor{Name: "bob", Member: []string{"group:dba"}}, r.ID, "", 0, at(3*time.Minute))
	if err != nil || r1.State != access.PendingApproval || r1.ApprovalsRequired != 2 || len(r1.ApprovalGroups) != 2 || r1.Tally.String() != "1 more from group:security" {
		t.Fatalf("dba approval after the rule was tightened: %v %s, %d required, groups %+v, tally %q; want awaiting 1 more from group:security",
			err, r1.State, r1.ApprovalsRequired, r1.ApprovalGroups, r1.Tally)
	}
	setGroups(t, s, "db-1", 0, []policy.GroupApproval{dba}, at(4*time.Minute))
	_, err = s.ApproveRequest(ctx, store.Actor{Name: "erin", Member: []string{"group:dba"}}, r.ID, "", 0, at(5*time.Minute))
	wantErrIs(t, "a second dba approver after the rule was loosened", err, store.ErrForbidden)
	r2, err := s.ApproveRequest(ctx, store.Actor{Name: "dave", Member: []string{"group:security"}}, r.ID, "", 0, at(6*time.Minute))
	if err != nil || r2.State != access.Pending {
		t.Fatalf("security approval: %v %s; want pending", err, r2.State)
	}
	if g := grants(t, s, "db-1", at(6*time.Minute)); len(g) != 1 {
		t.Errorf("grants = %+v, want one", g)
	}
}

// testSamePersonTwoTokens: one person approving at once through two
// tokens that carry different groups (a session with dba, another with
// security) fills one seat, never both: the request stays awaiting the
// other group, with one decision, whichever call wins.
func testSamePersonTwoTokens(t *testing.T, s *store.Store) {
	ctx := t.Context()
	if _, _, err := s.CreateTarget(ctx, alice, "db-1", nil, t0, enrollTTL); err != nil {
		t.Fatal(err)
	}
	setGroups(t, s, "db-1", 0, []policy.GroupApproval{{From: "group:dba", Count: 1}, {From: "group:security", Count: 1}}, t0)
	for round := range 10 {
		now := at(time.Duration(round+1) * time.Minute)
		r := mustRequest(t, s, carol, "db-1", ask("198.51.100.7/32", time.Hour, tcp(22)), now)
		var wg sync.WaitGroup
		for _, g := range []string{"group:dba", "group:security"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.ApproveRequest(ctx, store.Actor{Name: "bob", Member: []string{g}}, r.ID, "", 0, now)
			}()
		}
		wg.Wait()
		got := mustGet(t, s, r.ID)
		if got.State != access.PendingApproval || len(got.Decisions) != 1 || len(got.Tally.Missing) != 1 {
			t.Fatalf("round %d: %s with %d decisions, missing %+v; want awaiting one group, one decision", round, got.State, len(got.Decisions), got.Tally.Missing)
		}
		if _, err := s.RevokeRequest(ctx, carol, r.ID, "", now); err != nil {
			t.Fatal(err)
		}
	}
}

// testScheduledApproverRecheck: the approvals of a scheduled request are
// weighed again at its start, approver by approver: one whose approver
// has since lost every role that may approve on the target counts for
// nothing there, as does one whose approver's identity was not recorded
// (approvals given before migration 0030), so the request fails without
// ever holding a grant and the trail names the approver; one whose
// approver still holds the role starts.
func testScheduledApproverRecheck(t *testing.T, s *store.Store) {
	ctx := t.Context()
	manualTarget(t, s, "db-1", t0)
	bind := func(p string, role authz.Role, scope authz.Scope) authz.Binding {
		b := authz.Binding{Principal: p, Role: role, Scope: scope}
		if _, err := s.CreateBinding(ctx, alice, b, t0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	bind("user:carol", authz.Requester, authz.Everywhere)
	bobs := bind("user:bob", authz.Approver, "target:db-1")
	bind("user:erin", authz.Approver, authz.Everywhere)
	approver := func(name string) store.Actor {
		return store.Actor{Name: name, Subject: authz.Subject{Principals: []string{"user:" + name}}}
	}
	cases := []struct {
		approver store.Actor
		want     access.State
		says     string
	}{
		{approver("bob"), access.Failed, "bob"},            // unbound below
		{approver("erin"), access.Pending, ""},             // still an approver
		{store.Actor{Name: "erin"}, access.Failed, "erin"}, // identity not recorded
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		r := scheduledAsk(t, s, carol, "db-1", ask(fmt.Sprintf("198.51.100.%d/32", 7+i), 30*time.Minute, tcp(3389)), at(time.Hour), t0)
		if ap, err := s.ApproveRequest(ctx, c.approver, r.ID, "", 0, at(time.Minute)); err != nil || ap.State != access.Scheduled {
			t.Fatalf("approval of %s by %s: %v; want it scheduled", r.ID, c.approver.Name, err)
		}
		ids[i] = r.ID
	}
	if err := s.DeleteBinding(ctx, alice, bobs, at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := startScheduled(t, s, at(time.Hour)); n != len(cases) {
		t.Fatalf("StartScheduled handled %d requests, want %d", n, len(cases))
	}
	for i, c := range cases {
		got := wantState(t, s, ids[i], c.want)
		if c.says != "" && !strings.Contains(got.Message, c.says) {
			t.Errorf("case %d: message %q, want it to name %s", i, got.Message, c.says)
		}
	}
	if g := grants(t, s, "db-1", at(time.Hour)); len(g) != 1 || g[0].RequestID != ids[1] {
		t.Errorf("grants at the start = %+v, want only the one erin approved with her identity recorded", g)
	}
}

// testScheduledApprovedAfterStart: a scheduled request that needs an
// approver and gets it only after its start begins at that approval, not
// in StartScheduled; its requester's roles must be asked again there too.
// Carol loses her requester role between the ask and the late approval:
// the approval grants nothing (ErrForbidden): the request fails, nothing
// opens; a requester who kept the role is granted what remains.
func testScheduledApprovedAfterStart(t *testing.T, s *store.Store) {
	ctx := t.Context()
	manualTarget(t, s, "db-1", t0)
	carols := authz.Binding{Principal: "user:carol", Role: authz.Requester, Scope: authz.Everywhere}
	for _, b := range []authz.Binding{carols, {Principal: "user:dave", Role: authz.Requester, Scope: authz.Everywhere},
		{Principal: "user:bob", Role: authz.Approver, Scope: authz.Everywhere}} {
		if _, err := s.CreateBinding(ctx, alice, b, t0); err != nil {
			t.Fatal(err)
		}
	}
	bob := store.Actor{Name: "bob", Subject: authz.Subject{Principals: []string{"user:bob"}}}
	rc := scheduledAsk(t, s, carol, "db-1", ask("198.51.100.7/32", time.Hour, tcp(3389)), at(time.Hour), t0)
	rd := scheduledAsk(t, s, store.Actor{Name: "dave"}, "db-1", ask("198.51.100.8/32", time.Hour, tcp(3389)), at(time.Hour), t0)
	if err := s.DeleteBinding(ctx, alice, carols, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	startScheduled(t, s, at(time.Hour)) // nothing approved: nothing to start
	_, err := s.ApproveRequest(ctx, bob, rc.ID, "", 0, at(70*time.Minute))
	wantErrIs(t, "a late approval of a request whose requester lost the role", err, store.ErrForbidden)
	if got := mustGet(t, s, rc.ID); got.State != access.Failed {
		t.Errorf("carol's request after the refused approval: %s, want failed", got.State)
	}
	if ap, err := s.ApproveRequest(ctx, bob, rd.ID, "", 0, at(70*time.Minute)); err != nil || ap.State != access.Pending {
		t.Fatalf("late approval of dave's request: %v; want pending", err)
	}
	if g := grants(t, s, "db-1", at(70*time.Minute)); len(g) != 1 || g[0].RequestID != rd.ID {
		t.Errorf("grants = %+v, want only dave's", g)
	}
}

// testApprovalRechecksRequester: the last approval of an ordinary
// (unscheduled) request grants it only if its requester still may ask for
// it, as at the ask: their role binding still there, the token they asked
// with neither revoked nor expired. One who no longer may gets nothing:
// the approval is recorded but grants nothing (ErrRequesterLapsed, an
// ErrForbidden): the request fails with the reason, audited, no grant. A
// request recorded without a subject (asked before subjects were kept for
// every request) is judged by the requester's own name's bindings today.
func testApprovalRechecksRequester(t *testing.T, s *store.Store) {
	ctx := t.Context()
	manualTarget(t, s, "db-1", t0)
	bob := store.Actor{Name: "bob", Subject: authz.Subject{Principals: []string{"user:bob"}}}
	binds := []authz.Binding{{Principal: "user:bob", Role: authz.Approver, Scope: authz.Everywhere}}
	for _, u := range []string{"carol", "dave", "erin", "frank", "gina"} {
		binds = append(binds, authz.Binding{Principal: "user:" + u, Role: authz.Requester, Scope: authz.Everywhere})
	}
	binds = append(binds, authz.Binding{Principal: "group:ops", Role: authz.Requester, Scope: authz.Everywhere})
	for _, b := range binds {
		if _, err := s.CreateBinding(ctx, alice, b, t0); err != nil {
			t.Fatal(err)
		}
	}
	newToken := func(user string, ttl time.Duration) string {
		_, info, err := s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: user, TTL: ttl}, t0)
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	user := func(u string) authz.Subject { return authz.Subject{Principals: []string{"user:" + u}} }
	cases := []struct {
		name      string
		requester string
		opt       store.RequestOptions
		meanwhile func(opt store.RequestOptions) // between the ask and the approval
		granted   bool
		says      string
	}{
		{name: "still bound", requester: "carol", opt: store.RequestOptions{Subject: user("carol"), Token: newToken("carol", 0)}, granted: true},
		{name: "binding removed", requester: "dave", opt: store.RequestOptions{Subject: user("dave"), Token: newToken("dave", 0)},
			meanwhile: func(store.RequestOptions) {
				if err := s.DeleteBinding(ctx, alice, authz.Binding{Principal: "user:dave", Role: authz.Requester, Scope: authz.Everywhere}, at(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}, says: "no longer holds a role"},
		{name: "token revoked", requester: "erin", opt: store.RequestOptions{Subject: user("erin"), Token: newToken("erin", 0)},
			meanwhile: func(o store.RequestOptions) {
				if _, err := s.RevokeToken(ctx, alice, o.Token, at(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}, says: "was revoked"},
		{name: "token expired", requester: "frank", opt: store.RequestOptions{Subject: user("frank"), Token: newToken("frank", 5*time.Minute)}, says: "expired"},
		{name: "unrecorded, bound by name", requester: "gina", granted: true},
		{name: "unrecorded, bound only through a group", requester: "hank", says: "no longer holds a role"},
	}
	for _, c := range cases {
		r, err := s.CreateRequestWith(ctx, store.Actor{Name: c.requester}, "db-1", ask("198.51.100.7/32", time.Hour, tcp(3389)), policy.DefaultLimits(), t0, c.opt)
		if err != nil {
			t.Fatalf("%s: asking: %v", c.name, err)
		}
		if c.meanwhile != nil {
			c.meanwhile(c.opt)
		}
		got, err := s.ApproveRequest(ctx, bob, r.ID, "", 0, at(10*time.Minute))
		if c.granted {
			if err != nil || got.State != access.Pending {
				t.Errorf("%s: approval: %v, state %s; want granted (pending)", c.name, err, got.State)
			}
			continue
		}
		wantErrIs(t, c.name, err, store.ErrRequesterLapsed)
		wantErrIs(t, c.name, err, store.ErrForbidden)
		if err != nil && !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: error %q, want it to say %q", c.name, err, c.says)
		}
		got = mustGet(t, s, r.ID)
		if got.State != access.Failed || !strings.Contains(got.Message, c.says) || len(got.Decisions) != 1 {
			t.Errorf("%s: request is %s (%q, %d decisions), want failed saying %q with bob's approval recorded", c.name, got.State, got.Message, len(got.Decisions), c.says)
		}
		evs, err := s.ListAudit(ctx, store.AuditFilter{RequestID: r.ID})
		if err != nil {
			t.Fatal(err)
		}
		failed := false
		for _, e := range evs {
			failed = failed || (e.Action == audit.RequestFailed && e.Actor == "bob")
		}
		if !failed {
			t.Errorf("%s: audit %+v, want request.failed by bob", c.name, evs)
		}
	}
	for _, g := range grants(t, s, "db-1", at(10*time.Minute)) {
		if g.Requester != "carol" && g.Requester != "gina" {
			t.Errorf("grant %+v of a requester who no longer may ask", g)
		}
	}

	// Scheduled, approved before its start, then the token it was asked
	// with revoked: the start asks the same rule and fails it.
	opt := store.RequestOptions{Start: at(2 * time.Hour), Subject: user("carol"), Token: newToken("carol", 0)}
	r, err := s.CreateRequestWith(ctx, carol, "db-1", ask("198.51.100.9/32", time.Hour, tcp(3389)), policy.DefaultLimits(), at(20*time.Minute), opt)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ApproveRequest(ctx, bob, r.ID, "", 0, at(30*time.Minute)); err != nil || got.State != access.Scheduled {
		t.Fatalf("approval before the start: %v, %s; want scheduled", err, got.State)
	}
	if _, err := s.RevokeToken(ctx, alice, opt.Token, at(time.Hour)); err != nil {
		t.Fatal(err)
	}
	startScheduled(t, s, at(2*time.Hour))
	if got := mustGet(t, s, r.ID); got.State != access.Failed || !strings.Contains(got.Message, "was revoked") {
		t.Errorf("scheduled request whose token was revoked, at its start: %s (%q), want failed saying the token was revoked", got.State, got.Message)
	}
	for _, g := range grants(t, s, "db-1", at(2*time.Hour)) {
		if g.RequestID == r.ID {
			t.Errorf("grant %+v of a request asked with a revoked token", g)
		}
	}
}

// mayRequest binds users to the requester role everywhere: the last
// approval of their requests asks again whether they may ask
// (testApprovalRechecksRequester), judged by their name when the request
// records no subject.
func mayRequest(t *testing.T, s *store.Store, users ...string) {
	t.Helper()
	for _, u := range users {
		if _, err := s.CreateBinding(t.Context(), alice, authz.Binding{Principal: "user:" + u, Role: authz.Requester, Scope: authz.Everywhere}, t0); err != nil {
			t.Fatalf("binding %s as requester: %v", u, err)
		}
	}
}
