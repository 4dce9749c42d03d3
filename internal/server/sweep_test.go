package server

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// TestSweepLoopExpiresUnapprovedRequests runs the real sweeper in a synctest
// bubble: a request nobody approves expires when the approval timeout
// passes, not before, with no wake-up but the sweeper's own timer.
func TestSweepLoopExpiresUnapprovedRequests(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cfg := store.DefaultConfig()
		cfg.ApprovalTimeout = 30 * time.Minute
		st, err := store.OpenSQLite(ctx, filepath.Join(dir, "j.db"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		actor := store.Actor{Name: "alice"}
		if _, _, err := st.CreateTarget(ctx, actor, "db-01", nil, time.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
		pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22},
			Approval: policy.Approval{Mode: policy.Manual, Approvals: 1}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.SetPolicy(ctx, actor, "db-01", pol, time.Now()); err != nil {
			t.Fatal(err)
		}
		r, err := st.CreateRequest(ctx, actor, "db-01", policy.Request{Ports: []policy.Port{pol.Rules[0].Port}, Source: netip.MustParsePrefix("198.51.100.7/32"),
			Duration: time.Hour, Reason: "x"}, policy.DefaultLimits(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			sweepLoop(ctx, st, 30*time.Second, policy.DefaultLimits(), make(chan struct{}), slog.New(slog.DiscardHandler))
			close(done)
		}()

		state := func() access.State {
			got, err := st.GetRequest(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			return got.State
		}
		time.Sleep(29*time.Minute + 59*time.Second)
		synctest.Wait()
		if s := state(); s != access.PendingApproval {
			t.Fatalf("after 29m59s the request is %s, want still pending_approval", s)
		}
		time.Sleep(2*time.Second + 5*time.Second)
		synctest.Wait()
		if s := state(); s != access.Expired {
			t.Fatalf("after the approval timeout the request is %s, want expired", s)
		}
		cancel()
		<-done
		st.Close()
	})
}

// countingSweepStore counts the sweeper's reads of the next expiry warning.
type countingSweepStore struct {
	*store.Store
	warningReads atomic.Int64
}

func (c *countingSweepStore) NextExpiryWarning(ctx context.Context) (time.Time, error) {
	c.warningReads.Add(1)
	return c.Store.NextExpiryWarning(ctx)
}

// TestSweepLoopReadsWarningsOnAPeriod: a sweeper woken by a change every
// 10 ms (a busy server) reads the next expiry warning, whose read passes over
// every active request too short to be warned, about once per 5 s, not after
// every change (before: 1,000 reads in these 10 s); and a warning that comes
// due while the wake-ups go on is still given, within 5 s of its time.
func TestSweepLoopReadsWarningsOnAPeriod(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cfg := store.DefaultConfig()
		cfg.ExpiryWarning = 10 * time.Minute
		st, err := store.OpenSQLite(ctx, filepath.Join(dir, "j.db"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		actor := store.Actor{Name: "alice"}
		tg, _, err := st.CreateTarget(ctx, actor, "db-01", nil, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22}}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.SetPolicy(ctx, actor, "db-01", pol, time.Now()); err != nil {
			t.Fatal(err)
		}
		// Active for 10 min 20 s: its warning is due 20 s from now.
		r, err := st.CreateRequest(ctx, actor, "db-01", policy.Request{Ports: []policy.Port{pol.Rules[0].Port}, Source: netip.MustParsePrefix("198.51.100.7/32"),
			Duration: 10*time.Minute + 20*time.Second, Reason: "x"}, policy.DefaultLimits(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		tg, err = st.GetTarget(ctx, tg.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.ReportApplied(ctx, "db-01", tg.Revision, "", nil, "test", time.Now()); err != nil {
			t.Fatal(err)
		}
		cs := &countingSweepStore{Store: st}
		wake := make(chan struct{}, 1)
		done := make(chan struct{})
		go func() {
			sweepLoop(ctx, cs, 30*time.Second, policy.DefaultLimits(), wake, slog.New(slog.DiscardHandler))
			close(done)
		}()
		warned := func() bool {
			evs, err := st.ListAudit(ctx, store.AuditFilter{RequestID: r.ID, Action: string(audit.RequestExpiring)})
			if err != nil {
				t.Fatal(err)
			}
			return len(evs) > 0
		}
		for range 1000 { // 10 s of a change every 10 ms
			time.Sleep(10 * time.Millisecond)
			wake <- struct{}{}
			synctest.Wait()
		}
		if n := cs.warningReads.Load(); n > 4 {
			t.Errorf("%d reads of the next expiry warning in 10 s of a wake-up every 10 ms, want at most 4 (one per 5 s and the first sweep's)", n)
		}
		if warned() {
			t.Fatalf("request %s warned 10 s before its warning is due", r.ID)
		}
		for range 1500 { // 15 s more: the warning is due at 20 s
			time.Sleep(10 * time.Millisecond)
			wake <- struct{}{}
			synctest.Wait()
		}
		if !warned() {
			t.Errorf("request %s not warned 5 s after its warning was due, with the sweeper woken every 10 ms", r.ID)
		}
		cancel()
		<-done
		st.Close()
	})
}
