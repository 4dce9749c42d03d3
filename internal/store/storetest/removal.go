package storetest

import (
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/store"
)

// wantRemoval checks the removal of request id's grants at now: recorded at
// revision rev (0: none recorded) and in state want.
func wantRemoval(t *testing.T, s *store.Store, id string, rev int64, want access.RemovalState, now time.Time) store.Request {
	t.Helper()
	r := mustGet(t, s, id)
	switch {
	case rev == 0 && r.Removal != nil:
		t.Errorf("%s (%s): removal %+v, want none to confirm", id, r.State, *r.Removal)
	case rev == 0:
	case r.Removal == nil:
		t.Errorf("%s (%s): no removal recorded, want one at revision %d", id, r.State, rev)
	case r.Removal.Revision != rev || !r.Removal.Deadline.Equal(r.ExpiresAt):
		t.Errorf("%s: removal at revision %d closing by %v, want revision %d closing by %v", id, r.Removal.Revision, r.Removal.Deadline, rev, r.ExpiresAt)
	case r.Removal.State(now) != want:
		t.Errorf("%s: removal %s at %v, want %s", id, r.Removal.State(now), now, want)
	}
	return r
}

func wantUnconfirmed(t *testing.T, s *store.Store, now time.Time, requests, policies int) {
	t.Helper()
	r, p, err := s.UnconfirmedRemovals(t.Context(), now)
	if err != nil || r != requests || p != policies {
		t.Errorf("UnconfirmedRemovals at %v = %d requests, %d policies, %v; want %d, %d", now, r, p, err, requests, policies)
	}
}

// testRemovalConfirmation: a revocation (a denial after approval, a failure,
// a policy removal) is unconfirmed until the agent reports a revision at
// least the one that removed it, or its kernel deadline passes.
func testRemovalConfirmation(t *testing.T, s *store.Store) {
	ctx := t.Context()
	mayRequest(t, s, "alice", "carol") // their last approval asks again (ApprovalRechecksRequester)
	newTarget(t, s, "web-1", t0)
	r1 := mustRequest(t, s, alice, "web-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	mustReport(t, s, "web-1", r1.Revision, at(time.Second))
	wantUnconfirmed(t, s, at(time.Second), 0, 0)

	// Revoked while the agent is away: unconfirmed, closing by the deadline.
	rv, err := s.RevokeRequest(ctx, bob, r1.ID, "done", at(time.Minute))
	if err != nil {
		t.Fatalf("RevokeRequest: %v", err)
	}
	rev := mustTarget(t, s, "web-1").Revision
	got := wantRemoval(t, s, r1.ID, rev, access.RemovalUnconfirmed, at(time.Minute))
	if got.Removal != nil && (!got.Removal.At.Equal(at(time.Minute)) || got.Removal.ConfirmedAt != nil || got.RemovalEnforcer != "web-1") {
		t.Errorf("removal = %+v by %q, want since %v, unconfirmed, by web-1", *got.Removal, got.RemovalEnforcer, at(time.Minute))
	}
	if rv.Removal == nil || rv.Removal.Revision != rev {
		t.Errorf("RevokeRequest returned removal %+v, want revision %d", rv.Removal, rev)
	}
	wantUnconfirmed(t, s, at(time.Minute), 1, 0)

	// A report of an older revision (the kernel still holds the grant)
	// confirms nothing.
	mustReport(t, s, "web-1", rev-1, at(2*time.Minute))
	wantRemoval(t, s, r1.ID, rev, access.RemovalUnconfirmed, at(2*time.Minute))
	wantUnconfirmed(t, s, at(2*time.Minute), 1, 0)
	// Without a confirmation, the kernel's deadline closes it.
	wantUnconfirmed(t, s, r1.ExpiresAt, 0, 0)
	wantRemoval(t, s, r1.ID, rev, access.RemovalDeadlinePassed, r1.ExpiresAt)

	// The agent reports the revision without it: confirmed, and the
	// request's version moves so followers wake.
	before := mustGet(t, s, r1.ID).Version
	mustReport(t, s, "web-1", rev, at(3*time.Minute))
	got = wantRemoval(t, s, r1.ID, rev, access.RemovalConfirmed, at(3*time.Minute))
	if got.Removal != nil && (got.Removal.ConfirmedAt == nil || !got.Removal.ConfirmedAt.Equal(at(3*time.Minute))) {
		t.Errorf("confirmed at %v, want %v", got.Removal.ConfirmedAt, at(3*time.Minute))
	}
	if got.Version != before+1 {
		t.Errorf("version after confirmation = %d, want %d", got.Version, before+1)
	}
	wantUnconfirmed(t, s, at(3*time.Minute), 0, 0)

	// A later report keeps the first confirmation time.
	mustReport(t, s, "web-1", rev, at(4*time.Minute))
	if r := mustGet(t, s, r1.ID); r.Removal == nil || r.Removal.ConfirmedAt == nil || !r.Removal.ConfirmedAt.Equal(at(3*time.Minute)) {
		t.Errorf("a repeated report moved the confirmation: %+v", r.Removal)
	}

	// A pending request (sent to the agent, not confirmed) needs the same
	// confirmation when it is revoked.
	r2 := mustRequest(t, s, alice, "web-1", ask("198.51.100.8/32", time.Hour, tcp(22)), at(5*time.Minute))
	if _, err := s.RevokeRequest(ctx, alice, r2.ID, "", at(6*time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantRemoval(t, s, r2.ID, mustTarget(t, s, "web-1").Revision, access.RemovalUnconfirmed, at(6*time.Minute))

	// Failed after the activation timeout: the agent may have applied it
	// without its report arriving, so its removal needs confirming too.
	r3 := mustRequest(t, s, bob, "web-1", ask("198.51.100.9/32", time.Hour, tcp(22)), at(7*time.Minute))
	if _, err := s.Sweep(ctx, at(7*time.Minute+activation), activation); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, r3.ID, access.Failed)
	wantRemoval(t, s, r3.ID, mustTarget(t, s, "web-1").Revision, access.RemovalUnconfirmed, at(7*time.Minute+activation))
	wantUnconfirmed(t, s, at(7*time.Minute+activation), 2, 0)
	mustReport(t, s, "web-1", mustTarget(t, s, "web-1").Revision, at(10*time.Minute))
	wantRemoval(t, s, r2.ID, mustGet(t, s, r2.ID).Removal.Revision, access.RemovalConfirmed, at(10*time.Minute))
	wantRemoval(t, s, r3.ID, mustGet(t, s, r3.ID).Removal.Revision, access.RemovalConfirmed, at(10*time.Minute))

	// Nothing to confirm: an expiry (the kernel closed it at the deadline)
	// and a request that never held a grant.
	r4 := mustRequest(t, s, alice, "web-1", ask("198.51.100.10/32", 5*time.Minute, tcp(22)), at(11*time.Minute))
	mustReport(t, s, "web-1", r4.Revision, at(11*time.Minute))
	if _, err := s.Sweep(ctx, r4.ExpiresAt, activation); err != nil {
		t.Fatal(err)
	}
	wantState(t, s, r4.ID, access.Expired)
	wantRemoval(t, s, r4.ID, 0, "", r4.ExpiresAt)

	// Denied after approval: the approved grant was sent, so its removal
	// is confirmed like a revocation; a request denied before approval
	// held nothing.
	manualTarget(t, s, "db-1", t0)
	d1 := mustRequest(t, s, alice, "db-1", ask("198.51.100.7/32", time.Hour, tcp(3389)), at(20*time.Minute))
	if _, err := s.ApproveRequest(ctx, bob, d1.ID, "", 0, at(21*time.Minute)); err != nil {
		t.Fatal(err)
	}
	d2 := mustRequest(t, s, alice, "db-1", ask("198.51.100.8/32", time.Hour, tcp(3389)), at(21*time.Minute))
	for _, id := range []string{d1.ID, d2.ID} {
		if _, err := s.DenyRequest(ctx, carol, id, "no", 0, at(22*time.Minute)); err != nil {
			t.Fatalf("DenyRequest(%s): %v", id, err)
		}
	}
	wantRemoval(t, s, d1.ID, mustTarget(t, s, "db-1").Revision, access.RemovalUnconfirmed, at(22*time.Minute))
	wantRemoval(t, s, d2.ID, 0, "", at(22*time.Minute))
	// Another target's agent confirms nothing of db-1.
	mustReport(t, s, "web-1", mustTarget(t, s, "web-1").Revision, at(23*time.Minute))
	wantRemoval(t, s, d1.ID, mustTarget(t, s, "db-1").Revision, access.RemovalUnconfirmed, at(23*time.Minute))

	// Removing a policy re-opens ports: unconfirmed until the agent
	// reports the revision without it; a new policy clears it.
	if err := s.RemovePolicy(ctx, alice, "web-1", at(30*time.Minute)); err != nil {
		t.Fatal(err)
	}
	tg := mustTarget(t, s, "web-1")
	if tg.PolicyRemoval == nil || tg.PolicyRemoval.Revision != tg.Revision || !tg.PolicyRemoval.At.Equal(at(30*time.Minute)) ||
		tg.PolicyRemoval.State(at(time.Hour*48)) != access.RemovalUnconfirmed {
		t.Fatalf("policy removal = %+v, want unconfirmed at revision %d (no deadline)", tg.PolicyRemoval, tg.Revision)
	}
	wantUnconfirmed(t, s, at(30*time.Minute), 1, 1) // d1 and the policy
	mustReport(t, s, "web-1", tg.Revision-1, at(31*time.Minute))
	if tg := mustTarget(t, s, "web-1"); tg.PolicyRemoval.State(at(31*time.Minute)) != access.RemovalUnconfirmed {
		t.Errorf("an older report confirmed the policy removal")
	}
	mustReport(t, s, "web-1", tg.Revision, at(32*time.Minute))
	if tg := mustTarget(t, s, "web-1"); tg.PolicyRemoval == nil || tg.PolicyRemoval.ConfirmedAt == nil || !tg.PolicyRemoval.ConfirmedAt.Equal(at(32*time.Minute)) {
		t.Errorf("policy removal after the report = %+v, want confirmed at %v", tg.PolicyRemoval, at(32*time.Minute))
	}
	wantUnconfirmed(t, s, at(32*time.Minute), 1, 0)
	if _, err := s.SetPolicy(ctx, alice, "web-1", testPolicy(t), at(33*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if tg := mustTarget(t, s, "web-1"); tg.PolicyRemoval != nil {
		t.Errorf("policy removal after a new policy = %+v, want none", tg.PolicyRemoval)
	}
}
