package api_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/wire"
)

// newLoadEnv is an API on a real SQLite file with the caps on live requests
// lifted: the write-path benchmarks measure the server, not its limits.
func newLoadEnv(tb testing.TB) *env {
	e := newEnvWith(tb, func(d *api.Deps) {
		d.Limits = policy.DefaultLimits()
		d.Limits.MaxLivePerRequester, d.Limits.MaxLivePerTarget = 1_000_000, 1_000_000
	})
	e.addTarget(tb, "web-01")
	e.setPolicy(tb, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	return e
}

func benchSource(i int64) string {
	return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
}

// BenchmarkCreateRequestConcurrent measures POST /api/v1/requests with 32
// callers at once (two cores): the throughput of the write path, where
// requests arriving together can share a transaction and its fsync.
func BenchmarkCreateRequestConcurrent(b *testing.B) {
	e := newLoadEnv(b)
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: benchSource(i),
				Duration: wire.Duration(time.Hour), Reason: "bench"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkChangeWithIdleWaiters measures one change seen by the client
// waiting for it (a request is made, a client long-polls it, it is revoked
// and the long-poll answers), with 0 and 1,000 other clients long-polling
// other requests of the same target (the issue's "1,000 idle client
// long-polls": before, every change woke and re-read all of them).
func BenchmarkChangeWithIdleWaiters(b *testing.B) {
	for _, idle := range []int{0, 1000} {
		b.Run(fmt.Sprintf("idle=%d", idle), func(b *testing.B) {
			e := newLoadEnv(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tr := &http.Transport{MaxIdleConnsPerHost: 2048}
			defer tr.CloseIdleConnections()
			c, err := client.New(e.srv.URL, e.admin, client.WithHTTPClient(&http.Client{Transport: tr}))
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			create := func() wire.Request {
				r, err := c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: benchSource(n.Add(1)),
					Duration: wire.Duration(time.Hour), Reason: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			var wg sync.WaitGroup
			for range idle {
				r := create()
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						c.WaitRequest(ctx, r.ID, r.State, 50*time.Second)
					}
				}()
			}
			b.ResetTimer()
			for b.Loop() {
				r := create()
				done := make(chan error, 1)
				go func() {
					_, err := c.WaitRequest(ctx, r.ID, r.State, 10*time.Second)
					done <- err
				}()
				if _, err := c.Revoke(ctx, r.ID, "bench"); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}

// BenchmarkOpenLoop is the write path under an open-loop load, in one
// process: BENCH_TARGETS targets (default 10), each with a simulated agent
// that long-polls its desired state (deltas), and reports every revision it
// gets as applied at once; requests arrive on a fixed schedule at
// BENCH_RATE per second (default 200) for BENCH_SECONDS (default 5), spread
// over the targets in turn, each followed by a client long-poll until the
// request is active. Latencies are measured from each request's scheduled
// time (not from when it was sent), so a stalled server cannot hide its
// backlog (no coordinated omission). It reports the API call and request →
// active p50/p99 and the errors; run with -cpuprofile to see where the
// server's time goes. b.N is ignored beyond 1 (run with -benchtime 1x).
func BenchmarkOpenLoop(b *testing.B) {
	targets, rate, seconds := envIntOr("BENCH_TARGETS", 10), envIntOr("BENCH_RATE", 200), envIntOr("BENCH_SECONDS", 5)
	e := newLoadEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &http.Transport{MaxIdleConnsPerHost: 4096}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	c, err := client.New(e.srv.URL, e.admin, client.WithHTTPClient(hc))
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, targets)
	var agents sync.WaitGroup
	for i := range names {
		names[i] = fmt.Sprintf("load-%04d", i)
		e.addTarget(b, names[i])
		e.setPolicy(b, names[i], wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
		ac, _ := client.New(e.srv.URL, e.creds[names[i]], client.WithHTTPClient(hc))
		agents.Go(func() { simulatedAgent(ctx, ac) })
	}
	var (
		mu                 sync.Mutex
		creates, activates []time.Duration
		errs               atomic.Int64
		wg                 sync.WaitGroup
	)
	b.ResetTimer()
	for b.Loop() {
		interval := time.Second / time.Duration(rate)
		start := time.Now()
		total := rate * seconds
		for i := range total {
			at := start.Add(time.Duration(i) * interval)
			time.Sleep(time.Until(at))
			target := names[i%targets]
			wg.Go(func() {
				r, err := c.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"22"}, Source: benchSource(int64(i)),
					Duration: wire.Duration(time.Hour), Reason: "bench"})
				if err != nil {
					errs.Add(1)
					return
				}
				created := time.Since(at)
				for r.State == "pending" && time.Since(at) < 30*time.Second {
					if r, err = c.WaitRequest(ctx, r.ID, "pending", 10*time.Second); err != nil {
						errs.Add(1)
						return
					}
				}
				if r.State != "active" {
					errs.Add(1)
					return
				}
				activated := time.Since(at)
				mu.Lock()
				creates, activates = append(creates, created), append(activates, activated)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	cr, ac := quantiles(creates), quantiles(activates)
	b.ReportMetric(float64(errs.Load()), "errors")
	b.ReportMetric(cr[0], "call-p50-ms")
	b.ReportMetric(cr[1], "call-p99-ms")
	b.ReportMetric(ac[0], "active-p50-ms")
	b.ReportMetric(ac[1], "active-p99-ms")
	commits, ops := e.st.WriteStats()
	b.ReportMetric(float64(ops)/max(float64(commits), 1), "ops/commit")
	cancel()
	agents.Wait()
}

// simulatedAgent long-polls its target's desired state as the real agent
// does (after and since its applied revision) and reports each revision
// applied at once: the server's side of an agent without a kernel.
func simulatedAgent(ctx context.Context, c *client.Client) {
	var applied int64
	for ctx.Err() == nil {
		ds, err := c.DesiredSince(ctx, applied, applied, 25*time.Second)
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(10 * time.Millisecond)
			}
			continue
		}
		if ds.Revision == applied {
			continue
		}
		if err := c.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
			continue
		}
		applied = ds.Revision
	}
}

func envIntOr(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// quantiles returns the p50 and p99 of ds in milliseconds.
func quantiles(ds []time.Duration) [2]float64 {
	if len(ds) == 0 {
		return [2]float64{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		return float64(ds[min(len(ds)-1, int(q*float64(len(ds))))]) / float64(time.Millisecond)
	}
	return [2]float64{at(0.50), at(0.99)}
}
