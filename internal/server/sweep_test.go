package server

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jitgate/jitgate/internal/access"
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
