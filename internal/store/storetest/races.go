package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recur"
	"github.com/jitgate/jitgate/internal/store"
)

// RunReplicas runs the invariants that must hold when several servers
// (replicas) share one database: open must return n stores opened
// separately on one new, empty database (each with its own connections, as
// separate processes have), closed at t.Cleanup. Every test races
// goroutines through all of them at once.
func RunReplicas(t *testing.T, open func(t *testing.T, n int) []*store.Store) {
	tests := []struct {
		name string
		f    func(*testing.T, []*store.Store)
	}{
		{"SameGrant", testReplicasSameGrant},
		{"ManyRequests", testReplicasManyRequests},
		{"AuditChain", testReplicasAuditChain},
		{"ApprovalCompareAndSet", testReplicasApprovalCAS},
		{"ApprovalRace", testReplicasApprovalRace},
		{"OccurrenceOnce", testReplicasOccurrenceOnce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.f(t, open(t, 3))
		})
	}
}

// race runs f(i, store) for i in [0, n) at once, store i going to replica
// i mod len(ss), and returns the errors.
func race(ss []*store.Store, n int, f func(i int, s *store.Store) error) []error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			if err := f(i, ss[i%len(ss)]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// verified fails t unless the audit chain verifies, read through every
// replica, and returns the number of events.
func verified(t *testing.T, ss []*store.Store) int {
	t.Helper()
	n := -1
	for i, s := range ss {
		v, err := s.VerifyAudit(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !v.OK {
			t.Fatalf("replica %d: audit chain broken at event %d: %s", i, v.FirstBad, v.Problem)
		}
		if n >= 0 && v.Events != n {
			t.Errorf("replica %d sees %d events, replica 0 %d", i, v.Events, n)
		}
		n = v.Events
	}
	return n
}

// testReplicasSameGrant: the same grant asked for through every replica at
// once ends up as one grant row held by one live request; the others are
// superseded, none duplicated.
func testReplicasSameGrant(t *testing.T, ss []*store.Store) {
	const n = 30
	newTarget(t, ss[0], "web-1", t0)
	errs := race(ss, n, func(i int, s *store.Store) error {
		req := ask("198.51.100.7/32", time.Duration(i+1)*time.Minute, tcp(22))
		_, err := s.CreateRequest(t.Context(), alice, "web-1", req, policy.DefaultLimits(), t0)
		return err
	})
	for _, err := range errs {
		t.Error(err)
	}
	for i, s := range ss {
		if diff := cmp.Diff([]store.GrantRow{{Source: pfx("198.51.100.7/32"), Port: tcp(22), ExpiresAt: at(n * time.Minute)}},
			grants(t, s, "web-1", t0), cmpOpts); diff != "" {
			t.Errorf("replica %d: grants (-want +got):\n%s", i, diff)
		}
	}
	live := countRequests(t, ss[1], store.RequestFilter{States: []access.State{access.Pending, access.Active}})
	superseded := countRequests(t, ss[2], store.RequestFilter{States: []access.State{access.Superseded}})
	if live != 1 || superseded != n-1 {
		t.Errorf("%d live and %d superseded requests, want 1 and %d", live, superseded, n-1)
	}
	verified(t, ss)
}

// testReplicasManyRequests: requests for different sources through every
// replica get one revision each, one grant each, one audit event each.
func testReplicasManyRequests(t *testing.T, ss []*store.Store) {
	const targets, n = 2, 40
	for i := range targets {
		newTarget(t, ss[i%len(ss)], fmt.Sprintf("web-%d", i), t0)
	}
	errs := race(ss, n, func(i int, s *store.Store) error {
		target := fmt.Sprintf("web-%d", i%targets)
		req := ask(fmt.Sprintf("198.51.100.%d/32", i+1), time.Hour, tcp(22))
		_, err := s.CreateRequest(t.Context(), alice, target, req, policy.DefaultLimits(), at(time.Duration(i)*time.Millisecond))
		return err
	})
	for _, err := range errs {
		t.Error(err)
	}
	for i := range targets {
		name := fmt.Sprintf("web-%d", i)
		rs := mustList(t, ss[0], store.RequestFilter{Target: name})
		revs := map[int64]bool{}
		for _, r := range rs {
			revs[r.Revision] = true
		}
		if len(rs) != n/targets || len(revs) != len(rs) {
			t.Errorf("%s: %d requests share %d revisions, want %d requests with their own", name, len(rs), len(revs), n/targets)
		}
		if tg := mustTarget(t, ss[1], name); tg.Revision != int64(2+len(rs)) {
			t.Errorf("%s: revision %d after %d requests, want %d", name, tg.Revision, len(rs), 2+len(rs))
		}
		if gs := grants(t, ss[2], name, at(time.Second)); len(gs) != len(rs) {
			t.Errorf("%s: %d grants for %d requests", name, len(gs), len(rs))
		}
	}
	if got := len(trail(t, ss[0], store.AuditFilter{Action: "request.created"})); got != n {
		t.Errorf("%d request.created events, want %d", got, n)
	}
	verified(t, ss)
}

// testReplicasAuditChain: events appended through every replica at once
// form one chain, ids 1..N without a gap, that verifies; a transaction that
// fails after writing its events leaves no gap either.
func testReplicasAuditChain(t *testing.T, ss []*store.Store) {
	const n = 60
	errs := race(ss, n, func(i int, s *store.Store) error {
		e := audit.Event{At: at(time.Duration(i) * time.Millisecond), Actor: fmt.Sprintf("replica-%d", i%len(ss)),
			Action: audit.AccessDenied, Target: "web-1", Reason: fmt.Sprintf("event %d", i)}
		if i%3 == 0 {
			e2 := e
			e2.Reason += "b"
			return s.AuditEvents(t.Context(), []audit.Event{e, e2})
		}
		if i%5 == 0 {
			// A request for a target that does not exist fails and
			// rolls its transaction back.
			_, err := s.CreateRequest(t.Context(), alice, "nowhere", ask("198.51.100.7/32", time.Hour, tcp(22)), policy.DefaultLimits(), t0)
			if !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("request for a missing target: %v, want ErrNotFound", err)
			}
		}
		return s.Audit(t.Context(), e)
	})
	for _, err := range errs {
		t.Error(err)
	}
	want := n + (n+2)/3 // one event each, a second for every third
	if got := verified(t, ss); got != want {
		t.Errorf("%d events in the trail, want %d", got, want)
	}
	es, err := ss[1].ListAudit(t.Context(), store.AuditFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if e.ID != int64(i+1) {
			t.Fatalf("event %d has id %d: ids must run 1..N without gaps", i+1, e.ID)
		}
	}
}

// testReplicasApprovalCAS: approvals of one request version through every
// replica at once: exactly one is taken, the others are refused as stale (ErrStale)
// (compare-and-set on the request's version), and the request counts one
// approval.
func testReplicasApprovalCAS(t *testing.T, ss []*store.Store) {
	manualTarget(t, ss[0], "db-1", t0)
	r := mustRequest(t, ss[1], alice, "db-1", ask("198.51.100.7/32", time.Hour, tcp(22)), t0)
	const n = 12
	errs := race(ss, n, func(i int, s *store.Store) error {
		approver := store.Actor{Name: fmt.Sprintf("approver-%d", i)}
		_, err := s.ApproveRequest(t.Context(), approver, r.ID, "", r.Version, at(time.Minute))
		return err
	})
	if len(errs) != n-1 {
		t.Fatalf("%d of %d approvals of version %d refused, want all but one: %v", len(errs), n, r.Version, errs)
	}
	for _, err := range errs {
		if !errors.Is(err, store.ErrStale) {
			t.Errorf("stale approval: %v, want ErrStale", err)
		}
	}
	got := mustGet(t, ss[2], r.ID)
	if got.State != access.PendingApproval || got.Version != r.Version+1 {
		t.Errorf("request %s at version %d after one of two approvals, want pending_approval at %d", got.State, got.Version, r.Version+1)
	}
	if a := trail(t, ss[0], store.AuditFilter{Action: string(audit.RequestApproved)}); len(a) != 1 {
		t.Errorf("%d approval events, want 1", len(a))
	}
	verified(t, ss)
}

// testReplicasApprovalRace: approve, deny, revoke and a new request for the
// same grant, each through another replica at once: denial and revocation
// win, and nothing stays granted.
func testReplicasApprovalRace(t *testing.T, ss []*store.Store) {
	ctx := t.Context()
	mayRequest(t, ss[0], "alice", "carol")
	manualTarget(t, ss[0], "db-1", t0)
	for round := range 8 {
		now := at(time.Duration(round+1) * time.Hour)
		src := "198.51.100.7/32"
		r := mustRequest(t, ss[round%len(ss)], alice, "db-1", ask(src, time.Hour, tcp(3389)), now)
		race(ss, 5, func(i int, s *store.Store) error {
			switch (i + round) % 5 {
			case 0:
				s.ApproveRequest(ctx, bob, r.ID, "", 0, now)
			case 1:
				s.ApproveRequest(ctx, carol, r.ID, "", 0, now)
			case 2:
				s.DenyRequest(ctx, carol, r.ID, "race", 0, now)
			case 3:
				s.RevokeRequest(ctx, alice, r.ID, "race", now)
			case 4:
				s.CreateRequest(ctx, alice, "db-1", ask(src, time.Hour, tcp(3389)), policy.DefaultLimits(), now)
			}
			return nil
		})
		final := mustGet(t, ss[(round+1)%len(ss)], r.ID)
		if final.State != access.Denied && final.State != access.Revoked {
			t.Fatalf("round %d: request ended %s; want denied or revoked", round, final.State)
		}
		if g := grants(t, ss[(round+2)%len(ss)], "db-1", now); len(g) != 0 {
			t.Fatalf("round %d: grants %v survive a %s request", round, g, final.State)
		}
		for _, q := range mustList(t, ss[0], store.RequestFilter{Target: "db-1", States: []access.State{access.PendingApproval, access.Pending, access.Active}}) {
			ss[0].RevokeRequest(ctx, alice, q.ID, "", now)
		}
	}
	verified(t, ss)
}

// testReplicasOccurrenceOnce: replicas that all produce a schedule's
// occurrences at once (two sweepers, say, if the lease were ever held
// twice) make its occurrence one request, never two: each production is
// one transaction with a compare-and-set on the schedule's next_at; a
// replica that loses the race gets ErrStale and nothing is recorded.
func testReplicasOccurrenceOnce(t *testing.T, ss []*store.Store) {
	ctx := t.Context()
	sc := carolsSchedule(t, ss[0], "0 22 * * *", "UTC", time.Hour, "nightly")
	// Every replica at the lead, and again late in the window.
	for _, now := range []time.Time{sc.NextAt.Add(-recur.Lead), sc.NextAt.Add(30 * time.Minute)} {
		errs := race(ss, 12, func(i int, s *store.Store) error {
			_, err := s.ProduceOccurrences(ctx, policy.DefaultLimits(), now)
			return err
		})
		for _, err := range errs {
			if !errors.Is(err, store.ErrStale) {
				t.Errorf("ProduceOccurrences: %v, want nil or ErrStale", err)
			}
		}
	}
	if n := countRequests(t, ss[1], store.RequestFilter{Requester: "carol"}); n != 1 {
		t.Errorf("%d requests for one occurrence, want 1", n)
	}
	errs := race(ss, 6, func(i int, s *store.Store) error {
		_, err := s.StartScheduled(ctx, policy.DefaultLimits(), sc.NextAt.Add(time.Minute))
		return err
	})
	for _, err := range errs {
		t.Errorf("StartScheduled: %v", err)
	}
	if g := grants(t, ss[2], "web-1", sc.NextAt.Add(time.Minute)); len(g) != 1 {
		t.Errorf("grants = %+v, want one", g)
	}
	verified(t, ss)
}
