//go:build bench

package bench

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// deltaTrials sequential requests are measured with no other grant on the
// target and with deltaLiveGrants live ones.
const (
	deltaTrials     = 50
	deltaLiveGrants = 20_000
	// deltaIdleWaiters client long-polls wait on other requests of the
	// target during the third run.
	deltaIdleWaiters = 1_000
)

// DeltaActivation is what TestDeltaActivation writes to
// results/delta_activation.json.
type DeltaActivation struct {
	Trials     int     `json:"trials"`
	LiveGrants int     `json:"live_grants"`
	Idle       Summary `json:"request_to_active_idle"`
	Loaded     Summary `json:"request_to_active_at_live_grants"`
	// RatioP50 is Loaded.P50 over Idle.P50 (target ≤ 2).
	RatioP50 float64 `json:"ratio_p50"`
	// Waiting is Loaded again with IdleWaiters client long-polls waiting
	// on other requests of the target; RatioWaitersP50 is Waiting.P50 over
	// Loaded.P50 (target ≤ 1.2).
	IdleWaiters     int     `json:"idle_waiters"`
	Waiting         Summary `json:"request_to_active_with_idle_waiters"`
	RatioWaitersP50 float64 `json:"ratio_waiters_p50"`
}

// TestDeltaActivation measures request → active (the POST call to the
// request seen active: the agent applied the grant and reported it), 50
// sequential requests, on a target with no other grant and on the same
// target with 20,000 live grants: with deltas the agent's work and the
// payload per change no longer grow with the grants already there.
func TestDeltaActivation(t *testing.T) {
	l := testlab.New(t)
	api := setupJitgate(t, l)
	ctx := context.Background()
	res := DeltaActivation{Trials: deltaTrials, LiveGrants: deltaLiveGrants}
	src := netip.MustParseAddr("198.19.200.0")
	run := func(api *client.Client) []time.Duration {
		var out []time.Duration
		for i := 0; i < deltaTrials; i++ {
			src = src.Next()
			t0 := time.Now()
			req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
				Source: src.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: delta"})
			if err != nil {
				t.Fatal(err)
			}
			for req.State == "pending" && time.Since(t0) < 30*time.Second {
				if req, err = api.WaitRequest(ctx, req.ID, "pending", 10*time.Second); err != nil {
					t.Fatal(err)
				}
			}
			if req.State != "active" {
				t.Fatalf("request %s: %s (%s)", req.ID, req.State, req.Message)
			}
			out = append(out, time.Since(t0))
		}
		return out
	}
	res.Idle = summarize(run(api))
	t.Logf("request → active, no other grant: %s", res.Idle)

	l.Server.Kill()
	if err := testlab.SeedDB(ctx, l.DBPath(), testlab.Seed{Target: target, TargetGrants: deltaLiveGrants,
		TargetFrom: netip.MustParseAddr("198.18.0.1"), Port: benchPort, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	}
	l.StartServer(loadServerFlags...) // the third run holds 1,000 live requests and long-polls from one address
	api = l.APIClient()
	l.Eventually("agent applied the seeded grants", 120*time.Second, func() bool {
		tg, err := api.Target(ctx, target)
		return err == nil && tg.Agent.State == "connected" && tg.Agent.AppliedRevision == tg.Agent.Revision
	})
	res.Loaded = summarize(run(api))
	t.Logf("request → active, %d live grants: %s", deltaLiveGrants, res.Loaded)
	if res.Idle.P50 > 0 {
		res.RatioP50 = res.Loaded.P50 / res.Idle.P50
	}
	t.Logf("ratio of the p50s: %.2f (target ≤ 2)", res.RatioP50)

	// The same with 1,000 client long-polls waiting on other requests of
	// the target, each answered only when its own request changes.
	res.IdleWaiters = deltaIdleWaiters
	idle := loadClient(t, l)
	waitCtx, stopWaiting := context.WithCancel(ctx)
	var waiters sync.WaitGroup
	for range deltaIdleWaiters {
		src = src.Next()
		req, err := idle.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: src.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: idle waiter"})
		if err != nil {
			t.Fatal(err)
		}
		waiters.Go(func() {
			for version := req.Version; waitCtx.Err() == nil; {
				if r, err := idle.WaitRequestVersion(waitCtx, req.ID, version, "50s"); err == nil {
					version = r.Version
				}
			}
		})
	}
	// Let the new requests activate and their waiters settle on the
	// activated version (a benchmark's pause, not a test's wait).
	time.Sleep(3 * time.Second)
	res.Waiting = summarize(run(api))
	stopWaiting()
	waiters.Wait()
	t.Logf("request → active, %d live grants and %d idle client long-polls: %s", deltaLiveGrants, deltaIdleWaiters, res.Waiting)
	if res.Loaded.P50 > 0 {
		res.RatioWaitersP50 = res.Waiting.P50 / res.Loaded.P50
	}
	t.Logf("ratio of the p50s with / without the idle long-polls: %.2f (target ≤ 1.2)", res.RatioWaitersP50)
	writeResult(t, "delta_activation", res)
}
