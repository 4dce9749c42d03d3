package storetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// scheduledAsk creates a request of actor (as user:NAME) starting at start.
func scheduledAsk(t *testing.T, s *store.Store, actor store.Actor, target string, req policy.Request, start, now time.Time) store.Request {
	t.Helper()
	r, err := s.CreateRequestWith(t.Context(), actor, target, req, policy.DefaultLimits(), now,
		store.RequestOptions{Start: start, Subject: authz.Subject{Principals: []string{"user:" + actor.Name}}})
	if err != nil {
		t.Fatalf("CreateRequestWith(%s, start %s): %v", target, start, err)
	}
	return r
}

// startScheduled runs the sweeper's start of scheduled requests at now.
func startScheduled(t *testing.T, s *store.Store, now time.Time) int {
	t.Helper()
	return sweepStep(t, "StartScheduled", s.StartScheduled, now)
}

// sweepStep runs one step of the sweeper (ProduceOccurrences,
// StartScheduled) at now with the default limits: how many requests it
// moved.
func sweepStep(t *testing.T, name string, step func(context.Context, policy.Limits, time.Time) (int, error), now time.Time) int {
	t.Helper()
	n, err := step(t.Context(), policy.DefaultLimits(), now)
	if err != nil {
		t.Fatalf("%s(%s): %v", name, now, err)
	}
	return n
}

// testScheduled (issue 15, item 1): a request with a later start holds no
// grant until StartScheduled at its start re-checks it: eligible, it gets
// grants until start + duration; its requester unbound, or its window
// gone by, it never opens and the trail says why. Approvals before the
// start schedule it; an approval after the start grants what remains.
func testScheduled(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	carol := store.Actor{Name: "carol", ClientAddr: "192.0.2.12"}
	dave := store.Actor{Name: "dave", ClientAddr: "192.0.2.13"}
	for _, b := range []authz.Binding{
		{Principal: "user:carol", Role: authz.Requester, Scope: authz.Everywhere},
		{Principal: "user:dave", Role: authz.Requester, Scope: authz.Everywhere},
		{Principal: "user:bob", Role: authz.Approver, Scope: authz.Everywhere},
	} {
		if _, err := s.CreateBinding(ctx, alice, b, t0); err != nil {
			t.Fatal(err)
		}
	}
	// bob approves as the API records an approver (the start asks again
	// whether he still may: ScheduledApproverRecheck).
	bob := store.Actor{Name: bob.Name, ClientAddr: bob.ClientAddr, Subject: authz.Subject{Principals: []string{"user:bob"}}}
	rev0 := mustTarget(t, s, "web-1").Revision

	r := scheduledAsk(t, s, carol, "web-1", ask("198.51.100.7/32", 30*time.Minute, tcp(22)), at(time.Hour), t0)
	if r.State != access.Scheduled || r.StartsAt == nil || !r.StartsAt.Equal(at(time.Hour)) || !r.ExpiresAt.Equal(at(90*time.Minute)) {
		t.Fatalf("scheduled request: %s, starts %v, expires %v; want scheduled from +1h to +90m", r.State, r.StartsAt, r.ExpiresAt)
	}
	if len(grants(t, s, "web-1", at(time.Minute))) != 0 || mustTarget(t, s, "web-1").Revision != rev0 {
		t.Fatal("a scheduled request changed the desired state before its start")
	}
	if next, err := s.NextDeadline(ctx, activation); err != nil || !next.Equal(at(time.Hour)) {
		t.Fatalf("NextDeadline = %v, %v; want the start, +1h", next, err)
	}
	if n := startScheduled(t, s, at(time.Hour-time.Millisecond)); n != 0 {
		t.Fatalf("started %d requests before the start", n)
	}
	// dave asks for the same start, then loses his role.
	rd := scheduledAsk(t, s, dave, "web-1", ask("198.51.100.8/32", 30*time.Minute, tcp(22)), at(time.Hour), t0)
	if err := s.DeleteBinding(ctx, alice, authz.Binding{Principal: "user:dave", Role: authz.Requester, Scope: authz.Everywhere}, at(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := startScheduled(t, s, at(time.Hour+time.Second)); n != 2 {
		t.Fatalf("started %d requests at the start, want 2 (one begun, one refused)", n)
	}
	got := wantState(t, s, r.ID, access.Pending)
	if !got.ExpiresAt.Equal(at(90 * time.Minute)) {
		t.Errorf("started request expires %v, want start + duration (+90m)", got.ExpiresAt)
	}
	if g := grants(t, s, "web-1", at(time.Hour+time.Second)); len(g) != 1 || !g[0].ExpiresAt.Equal(at(90*time.Minute)) {
		t.Errorf("grants at the start = %+v, want carol's one until +90m", g)
	}
	failed := wantState(t, s, rd.ID, access.Failed)
	if !strings.Contains(failed.Message, "dave no longer holds a role") {
		t.Errorf("dave's request: %q, want it to say he lost the role", failed.Message)
	}
	if tr := strings.Join(trail(t, s, store.AuditFilter{Target: "web-1"}), "\n"); !strings.Contains(tr, string(audit.RequestStarted)+" "+r.ID) ||
		!strings.Contains(tr, string(audit.RequestFailed)+" "+rd.ID) {
		t.Errorf("trail lacks the start of %s or the refusal of %s:\n%s", r.ID, rd.ID, tr)
	}

	// Its whole window passed with nothing running: expired, never opened.
	late := scheduledAsk(t, s, carol, "web-1", ask("198.51.100.9/32", 10*time.Minute, tcp(22)), at(3*time.Hour), at(2*time.Hour))
	startScheduled(t, s, at(4*time.Hour))
	wantState(t, s, late.ID, access.Expired)
	if g := grants(t, s, "web-1", at(4*time.Hour)); len(g) != 0 {
		t.Errorf("grants after a missed window = %+v, want none", g)
	}

	// With approvers: approved before the start it is scheduled; approved
	// after it, it gets what remains of its window.
	manualTarget(t, s, "db-1", t0)
	ra := scheduledAsk(t, s, carol, "db-1", ask("198.51.100.7/32", time.Hour, tcp(3389)), at(5*time.Hour), at(4*time.Hour+30*time.Minute))
	if ra.State != access.PendingApproval || ra.ApproveBy == nil || !ra.ApproveBy.Equal(at(5*time.Hour+30*time.Minute)) {
		t.Fatalf("request with approvers: %s, approve by %v; want pending_approval until +5h30 (the timeout)", ra.State, ra.ApproveBy)
	}
	if ap, err := s.ApproveRequest(ctx, bob, ra.ID, "", 0, at(4*time.Hour+40*time.Minute)); err != nil || ap.State != access.Scheduled {
		t.Fatalf("approval before the start: %v, %s; want scheduled", err, ap.State)
	}
	startScheduled(t, s, at(5*time.Hour))
	if g := wantState(t, s, ra.ID, access.Pending); !g.ExpiresAt.Equal(at(6 * time.Hour)) {
		t.Errorf("approved scheduled request expires %v, want +6h", g.ExpiresAt)
	}
	rl := scheduledAsk(t, s, carol, "db-1", ask("198.51.100.8/32", time.Hour, tcp(3389)), at(5*time.Hour), at(4*time.Hour+50*time.Minute))
	if ap, err := s.ApproveRequest(ctx, bob, rl.ID, "", 0, at(5*time.Hour+20*time.Minute)); err != nil || ap.State != access.Pending ||
		!ap.ExpiresAt.Equal(at(6*time.Hour)) {
		t.Fatalf("approval 20 minutes after the start: %v, %s until %v; want pending until +6h", err, ap.State, ap.ExpiresAt)
	}
	// Revoking a scheduled request ends it before it holds anything.
	rv := scheduledAsk(t, s, carol, "web-1", ask("198.51.100.10/32", time.Minute, tcp(22)), at(8*time.Hour), at(7*time.Hour))
	if _, err := s.RevokeRequest(ctx, carol, rv.ID, "", at(7*time.Hour)); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, rv.ID, access.Revoked)
}
