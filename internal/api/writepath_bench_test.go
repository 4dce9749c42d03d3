package api_test

import (
	"context"
	"fmt"
	"net/http"
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
