package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// BenchmarkCreateRequest measures the API call of a request, through HTTP,
// authorization, policy evaluation and the store's transaction (with its
// audit event), against a real SQLite file.
func BenchmarkCreateRequest(b *testing.B) {
	e := newLoadEnv(b) // more than 256 live requests
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		src := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src, Duration: wire.Duration(time.Hour), Reason: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBadTokenWhileLimited measures what one bad bearer token costs the
// server once its address is over the failed-login limit (one token lookup,
// a 429, no audit row), next to a valid token's whoami: a flood is cheap to
// refuse, so no cache of refused tokens is kept.
func BenchmarkBadTokenWhileLimited(b *testing.B) {
	e := newEnvWith(b, func(d *api.Deps) { d.FailedLogins = api.LoginLimit{} })
	for i := range 5 {
		e.raw(b, http.MethodGet, "/api/v1/whoami", fmt.Sprintf("jga_bad%d", i), "", nil)
	}
	for _, bc := range []struct {
		name, token string
		want        int
	}{
		{"bad token (429)", "jga_" + strings.Repeat("A", 43), http.StatusTooManyRequests},
		{"valid token (200)", e.admin, http.StatusOK},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/api/v1/whoami", nil)
			req.RemoteAddr = "127.0.0.1:1234"
			req.Header.Set("Authorization", "Bearer "+bc.token)
			for b.Loop() {
				w := httptest.NewRecorder()
				e.handler.ServeHTTP(w, req)
				if w.Code != bc.want {
					b.Fatalf("status %d, want %d", w.Code, bc.want)
				}
			}
		})
	}
}

// BenchmarkGrantToAgent measures one grant at a time from the API call to
// the target's agent holding the delta that carries it (its long-poll
// answered and decoded), in one process over loopback: the grant path of
// TestGrantLatency without the kernel and the processes' wake-ups, one grant
// every 2 ms or so. call-p50-ns is the API call alone, agent-p50-ns the call
// to the agent's decoded delta (medians: ns/op includes the pauses);
// gathers is the batches the store's writer held back under load (0: it
// never took this for load).
func BenchmarkGrantToAgent(b *testing.B) {
	e := newLoadEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agent, err := client.New(e.srv.URL, e.creds["web-01"])
	if err != nil {
		b.Fatal(err)
	}
	cur, err := agent.DesiredSince(ctx, 0, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan wire.DesiredState)
	go func() {
		since := cur.Revision
		for {
			ds, err := agent.DesiredSince(ctx, since, since, 30*time.Second)
			if err != nil {
				return
			}
			since = ds.Revision
			select {
			case got <- ds:
			case <-ctx.Done():
				return
			}
		}
	}()
	var calls, grants []time.Duration
	gathers := e.st.WriteGathers()
	for i := 0; b.Loop(); i++ {
		// The server idle between grants, as between TestGrantLatency's
		// trials: its threads park, and a hand-off has to wake one.
		time.Sleep(2 * time.Millisecond)
		start := time.Now()
		if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: benchSource(int64(i)),
			Duration: wire.Duration(time.Hour), Reason: "bench"}); err != nil {
			b.Fatal(err)
		}
		calls = append(calls, time.Since(start))
		for ds := range got {
			if len(ds.Grants) > 0 {
				break
			}
		}
		grants = append(grants, time.Since(start))
	}
	// Medians: on a shared machine the mean is the stalls'.
	median := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Nanoseconds())
	}
	b.ReportMetric(median(calls), "call-p50-ns")
	b.ReportMetric(median(grants), "agent-p50-ns")
	// Batches the writer held back to gather more writes: none, idle.
	b.ReportMetric(float64(e.st.WriteGathers()-gathers), "gathers")
}
