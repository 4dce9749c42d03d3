package api_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// BenchmarkAgentChangeExchanges measures one change as an agent takes it,
// through HTTP on loopback: a request is created, and the agent reports the
// revision it applied last and fetches the change, either as two exchanges
// (a report answered 204, then its poll: "separate") or as one (the report
// carrying its poll: "carried"). No poll waits (the change is there when it
// asks), so the difference is the exchange itself. It reports the process's
// CPU per change (cpu-µs/op: server and clients together, both in this
// process).
func BenchmarkAgentChangeExchanges(b *testing.B) {
	for _, carried := range []bool{false, true} {
		name := "separate"
		if carried {
			name = "carried"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			e := newLoadEnv(b)
			agent, err := client.New(e.srv.URL, e.creds["web-01"])
			if err != nil {
				b.Fatal(err)
			}
			ds, err := agent.DesiredSince(ctx, 0, 0, 0)
			if err != nil {
				b.Fatal(err)
			}
			applied := ds.Revision
			cpu := func() time.Duration {
				var ru syscall.Rusage
				if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
					b.Fatal(err)
				}
				return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			}
			start := cpu()
			for i := int64(0); b.Loop(); i++ {
				if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: benchSource(i),
					Duration: wire.Duration(time.Hour), Reason: "bench"}); err != nil {
					b.Fatal(err)
				}
				rep := wire.AgentReport{Revision: applied, Version: "bench"}
				if carried {
					ds, _, err = agent.ReportPoll(ctx, rep, applied, applied, 10*time.Second)
				} else if err = agent.Report(ctx, rep); err == nil {
					ds, err = agent.DesiredSince(ctx, applied, applied, 10*time.Second)
				}
				if err != nil || ds.Revision <= applied || len(ds.Grants) != 1 {
					b.Fatalf("the change after %d: revision %d, %d grants, %v", applied, ds.Revision, len(ds.Grants), err)
				}
				applied = ds.Revision
			}
			b.StopTimer()
			b.ReportMetric(float64((cpu()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
