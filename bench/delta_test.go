//go:build bench

package bench

import (
	"context"
	"net/netip"
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
	l.StartServer()
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
	writeResult(t, "delta_activation", res)
}
