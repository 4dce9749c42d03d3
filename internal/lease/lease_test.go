package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// fakeStore keeps leases in memory with the store's semantics (one
// take-or-renew at a time); cut makes a holder's calls fail, as a replica
// cut off from the database sees them.
type fakeStore struct {
	mu     sync.Mutex
	leases map[string]store.Lease
	cut    map[string]bool
}

var errCut = errors.New("database unreachable")

func newFake() *fakeStore {
	return &fakeStore{leases: map[string]store.Lease{}, cut: map[string]bool{}}
}

func (f *fakeStore) AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (store.Lease, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut[holder] {
		return store.Lease{}, false, errCut
	}
	l, ok := f.leases[name]
	if !ok || l.Holder == holder || !l.Expires.After(now) {
		if l.Holder != holder {
			l.Acquired = now
		}
		l = store.Lease{Name: name, Holder: holder, Acquired: l.Acquired, Expires: now.Add(ttl)}
		f.leases[name] = l
	}
	return l, l.Holder == holder, nil
}

func (f *fakeStore) ReleaseLease(ctx context.Context, name, holder string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cut[holder] {
		return errCut
	}
	if f.leases[name].Holder == holder {
		delete(f.leases, name)
	}
	return nil
}

func (f *fakeStore) setCut(holder string, cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[holder] = cut
}

// jobs records which replicas run the job, and fails the test the moment
// two run it at once.
type jobs struct {
	t       *testing.T
	mu      sync.Mutex
	running map[string]bool
	started map[string]time.Time
	stopped map[string]time.Time
}

func (j *jobs) job(holder string) func(context.Context) {
	return func(ctx context.Context) {
		j.mu.Lock()
		for other, on := range j.running {
			if on && other != holder {
				j.t.Errorf("%s started the job while %s runs it", holder, other)
			}
		}
		j.running[holder] = true
		j.started[holder] = time.Now()
		j.mu.Unlock()
		<-ctx.Done()
		j.mu.Lock()
		j.running[holder] = false
		if j.stopped != nil {
			j.stopped[holder] = time.Now()
		}
		j.mu.Unlock()
	}
}

func (j *jobs) runs(holder string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.running[holder]
}

// TestExclusiveAndTakeover: of two replicas exactly one runs the job; when
// the holder is cut off from the database, it stops its job before its
// claim expires and the other replica takes over within TTL plus one
// renewal; a holder that stops cleanly hands over within one renewal.
func TestExclusiveAndTakeover(t *testing.T) {
	tests := []struct {
		name string
		// fail makes replica a stop holding: cut off, or stopped.
		fail func(f *fakeStore, stopA context.CancelFunc)
		// within bounds the takeover (synctest's clock: exact).
		within time.Duration
	}{
		{"holder cut off", func(f *fakeStore, _ context.CancelFunc) { f.setCut("a", true) }, DefaultTTL + DefaultRenew},
		{"holder stops", func(_ *fakeStore, stopA context.CancelFunc) { stopA() }, DefaultRenew},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFake()
				j := &jobs{t: t, running: map[string]bool{}, started: map[string]time.Time{}}
				ctxA, stopA := context.WithCancel(t.Context())
				ctxB, stopB := context.WithCancel(t.Context())
				var wg sync.WaitGroup
				run := func(ctx context.Context, holder string) {
					defer wg.Done()
					if err := Run(ctx, f, Config{Name: "sweeper", Holder: holder}, j.job(holder)); err != nil {
						t.Error(err)
					}
				}
				wg.Add(1)
				go run(ctxA, "a")
				synctest.Wait()
				if !j.runs("a") {
					t.Fatal("replica a, alone, does not run the job")
				}
				wg.Add(1)
				go run(ctxB, "b")
				// Many renewals later, a still holds and b has not run it.
				time.Sleep(10 * DefaultTTL)
				synctest.Wait()
				if !j.runs("a") || j.runs("b") {
					t.Fatalf("after 50 s: a runs %v, b runs %v; want only a", j.runs("a"), j.runs("b"))
				}
				failed := time.Now()
				tt.fail(f, stopA)
				time.Sleep(tt.within)
				synctest.Wait()
				if j.runs("a") || !j.runs("b") {
					t.Fatalf("%s after a failed: a runs %v, b runs %v; want only b", tt.within, j.runs("a"), j.runs("b"))
				}
				t.Logf("takeover after %s (fake clock)", j.started["b"].Sub(failed))
				// A cut-off replica that comes back does not take the job back.
				f.setCut("a", false)
				time.Sleep(3 * DefaultTTL)
				synctest.Wait()
				if j.runs("a") {
					t.Error("replica a took the job back from b")
				}
				stopA()
				stopB()
				wg.Wait()
			})
		})
	}
}

// TestHolderStopsBeforeExpiry: a holder whose renewals fail stops its job
// at least Margin before its claim expires (so, with clocks within Margin,
// before anyone else may take it).
func TestHolderStopsBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		j := &jobs{t: t, running: map[string]bool{}, started: map[string]time.Time{}, stopped: map[string]time.Time{}}
		ctx, stop := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); Run(ctx, f, Config{Name: "webhooks", Holder: "a"}, j.job("a")) }()
		synctest.Wait()
		f.setCut("a", true)
		f.mu.Lock()
		expires := f.leases["webhooks"].Expires
		f.mu.Unlock()
		for j.runs("a") {
			time.Sleep(10 * time.Millisecond)
		}
		if left := expires.Sub(j.stopped["a"]); left < DefaultMargin {
			t.Errorf("the job stopped %s before the claim expired; want at least %s", left, DefaultMargin)
		}
		stop()
		<-done
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Holder: "a"}, "lease: name required"},
		{Config{Name: "sweeper"}, "lease sweeper: holder required"},
		{Config{Name: "sweeper", Holder: "a", TTL: 3 * time.Second, Renew: time.Second, Margin: 2 * time.Second},
			"lease sweeper: renew (1s) must be shorter than ttl (3s) minus margin (2s)"},
		{Config{Name: "sweeper", Holder: "a"}, ""},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("Validate(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}
