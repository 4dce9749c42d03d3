package api_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/wire"
)

// BenchmarkRequestLifecycle measures one request as the load benchmark
// makes it, through HTTP on loopback: the requester creates it and
// long-polls it, the target's agent long-polls its desired state (since the
// revision it applied) and reports it applied, and the requester's
// long-poll answers with the active request. It reports the process's CPU
// per request (cpu-µs/op: server and clients together, both in this
// process; the clients' share does not change with the server's code).
func BenchmarkRequestLifecycle(b *testing.B) {
	ctx := context.Background()
	var hub *api.Hub
	e := newEnvWith(b, func(d *api.Deps) {
		hub = d.Hub
		d.Limits = policy.DefaultLimits()
		d.Limits.MaxLivePerRequester, d.Limits.MaxLivePerTarget = 1_000_000, 1_000_000
	})
	agent := e.addTarget(b, "web-01", "198.51.100.10")
	e.setPolicy(b, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	ds, err := agent.DesiredSince(ctx, 0, 0, 0)
	if err != nil {
		b.Fatal(err)
	}
	applied := ds.Revision
	if err := agent.Report(ctx, wire.AgentReport{Revision: applied, Version: "bench"}); err != nil {
		b.Fatal(err)
	}
	type answer struct {
		r   wire.Request
		err error
	}
	got := make(chan answer, 1)
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	b.ResetTimer()
	for i := int64(0); b.Loop(); i++ {
		r, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: benchSource(i),
			Duration: wire.Duration(time.Hour), Reason: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			r, err := e.c.WaitRequest(ctx, r.ID, "pending", 10*time.Second)
			got <- answer{r, err}
		}()
		for hub.RequestWaiters("web-01") == 0 {
			time.Sleep(20 * time.Microsecond)
		}
		ds, err := agent.DesiredSince(ctx, applied, applied, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision, Version: "bench"}); err != nil {
			b.Fatal(err)
		}
		applied = ds.Revision
		if a := <-got; a.err != nil || a.r.State != "active" {
			b.Fatalf("long-poll: %s, %v; want active", a.r.State, a.err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-µs/op")
}
