package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// testLiveCaps: the caps on live requests are decided in the transaction of
// the insert: concurrent requests cannot overshoot, a refusal writes
// nothing, an extension at the cap passes, an ended request frees a place.
func testLiveCaps(t *testing.T, s *store.Store) {
	newTarget(t, s, "web-1", t0)
	limits := policy.DefaultLimits()
	limits.MaxLivePerRequester, limits.MaxLivePerTarget = 3, 4
	const tries = 12
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []store.Request
		limited int
	)
	for i := range tries {
		wg.Go(func() {
			r, err := s.CreateRequest(t.Context(), alice, "web-1", ask(fmt.Sprintf("198.51.100.%d/32", i+1), time.Hour, tcp(443)), limits, at(time.Millisecond))
			var le *policy.LimitError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created = append(created, r)
			case errors.As(err, &le) && le.Limit == policy.LimitLivePerRequester && le.Max == 3:
				limited++
			default:
				t.Errorf("request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if len(created) != 3 || limited != tries-3 {
		t.Fatalf("%d created, %d refused; want 3 and %d", len(created), limited, tries-3)
	}
	if n := countRequests(t, s, store.RequestFilter{Target: "web-1"}); n != 3 {
		t.Errorf("%d requests stored, want 3: a refusal writes nothing", n)
	}
	if got := len(trail(t, s, store.AuditFilter{Action: "request.created"})); got != 3 {
		t.Errorf("%d request.created events, want 3", got)
	}
	if gs := grants(t, s, "web-1", at(time.Second)); len(gs) != 3 {
		t.Errorf("%d grants, want 3", len(gs))
	}

	// Extending one's grant at the cap supersedes the extended request.
	old := created[0]
	ext, err := s.CreateRequest(t.Context(), alice, "web-1", ask(old.Source.String(), time.Hour, tcp(22), tcp(443)), limits, at(time.Minute))
	if err != nil {
		t.Fatalf("extension at the cap: %v", err)
	}
	wantState(t, s, old.ID, access.Superseded)
	// The target's cap counts every requester: bob has one place left.
	mustRequest(t, s, bob, "web-1", ask("198.51.100.200/32", time.Hour, tcp(443)), at(time.Minute))
	_, err = s.CreateRequest(t.Context(), bob, "web-1", ask("198.51.100.201/32", time.Hour, tcp(443)), limits, at(time.Minute))
	var le *policy.LimitError
	if !errors.As(err, &le) || le.Limit != policy.LimitLivePerTarget {
		t.Fatalf("bob's request on a full target: %v, want the per-target cap", err)
	}
	// Revoking frees a place.
	if _, err := s.RevokeRequest(t.Context(), alice, ext.ID, "", at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRequest(t.Context(), bob, "web-1", ask("198.51.100.201/32", time.Hour, tcp(443)), limits, at(2*time.Minute)); err != nil {
		t.Fatalf("a request after a revocation: %v", err)
	}
	// Requests the sweeper ends free their places too; the cap still holds.
	if _, err := s.Sweep(t.Context(), at(3*time.Hour), activation); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		_, err := s.CreateRequest(t.Context(), alice, "web-1", ask(fmt.Sprintf("198.51.100.%d/32", 100+i), time.Hour, tcp(443)), limits, at(3*time.Hour))
		if i < 3 && err != nil {
			t.Fatalf("request %d after the sweep: %v", i, err)
		}
		if i == 3 && !errors.As(err, &le) {
			t.Fatalf("a 4th live request after the sweep: %v, want the per-requester cap", err)
		}
	}
}

// testPruneTokens: expired tokens (sessions, personal, enrollment) are
// deleted in bounded batches; unexpired and never-expiring ones stay.
func testPruneTokens(t *testing.T, s *store.Store) {
	ctx := t.Context()
	admin, err := s.CreateAdminToken(ctx, alice, "alice", t0)
	if err != nil {
		t.Fatal(err)
	}
	var short []string
	for i, kind := range []string{store.KindSession, store.KindSession, store.KindPersonal, store.KindService} {
		sec, _, err := s.CreateToken(ctx, alice, store.TokenSpec{Kind: kind, Subject: fmt.Sprintf("user-%d", i), TTL: time.Hour}, t0)
		if err != nil {
			t.Fatal(err)
		}
		short = append(short, sec)
	}
	long, _, err := s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: "carol", TTL: 3 * time.Hour}, t0)
	if err != nil {
		t.Fatal(err)
	}
	newTarget(t, s, "web-1", t0) // its enrollment token expires after enrollTTL (1h)

	if n, err := s.PruneExpiredTokens(ctx, at(time.Hour-time.Millisecond), 10); err != nil || n != 0 {
		t.Fatalf("prune before anything expired = %d, %v; want 0", n, err)
	}
	// 5 expired at 1h: batches of 2, 2, 1, then nothing.
	for i, want := range []int64{2, 2, 1, 0} {
		if n, err := s.PruneExpiredTokens(ctx, at(2*time.Hour), 2); err != nil || n != want {
			t.Fatalf("prune batch %d = %d, %v; want %d", i, n, err, want)
		}
	}
	for kind, want := range map[string]int{store.KindSession: 0, store.KindService: 0, store.KindPersonal: 1, store.KindAdmin: 1, store.KindEnroll: 0} {
		if n, err := s.CountTokens(ctx, kind); err != nil || n != want {
			t.Errorf("%s tokens left: %d, %v; want %d", kind, n, err, want)
		}
	}
	for _, sec := range []string{admin, long} {
		if _, err := s.Authenticate(ctx, sec, at(2*time.Hour)); err != nil {
			t.Errorf("a token that has not expired no longer authenticates: %v", err)
		}
	}
	for _, sec := range short {
		wantErrIs(t, "a pruned token", func() error { _, err := s.Authenticate(ctx, sec, t0); return err }(), store.ErrUnauthorized)
	}
}
