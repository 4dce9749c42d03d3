package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// BenchmarkWriterOpenLoop is BenchmarkWritePath's request (create, the
// agent's read of its target, the agent's report, the client's read) under
// an open loop instead of a closed one: requests start on a fixed schedule
// of BENCH_WRITER_RATES per second (default 250, 500 and 1,000), each on a
// goroutine of its own, for BENCH_WRITER_SECONDS (default 5), spread over
// 1,000 of the 10,000 seeded targets. Below saturation the group-commit
// batches are what arrives together, not what queued behind a busy
// writer, which is where gathering (groupcommit.go) changes them. It
// reports the process's CPU per request (cpu-ms/req: the store's work, no
// HTTP), the operations per commit, and the request's p50/p99 from its
// scheduled time. b.N is ignored beyond 1 (run with -benchtime 1x).
func BenchmarkWriterOpenLoop(b *testing.B) {
	ctx := context.Background()
	seedOnce.Do(func() { seeded, seedErr = seedWritePath(ctx) })
	if seedErr != nil {
		b.Fatal(seedErr)
	}
	rates := []int{250, 500, 1000}
	if v := os.Getenv("BENCH_WRITER_RATES"); v != "" {
		rates = nil
		for _, f := range splitComma(v) {
			var r int
			if _, err := fmt.Sscan(f, &r); err != nil || r <= 0 {
				b.Fatalf("BENCH_WRITER_RATES: %q is not a rate", f)
			}
			rates = append(rates, r)
		}
	}
	seconds := 5
	if v := os.Getenv("BENCH_WRITER_SECONDS"); v != "" {
		if _, err := fmt.Sscan(v, &seconds); err != nil || seconds <= 0 {
			b.Fatalf("BENCH_WRITER_SECONDS: %q", v)
		}
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, rate := range rates {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "jitgate.db")
			if err := os.WriteFile(path, seeded, 0o600); err != nil {
				b.Fatal(err)
			}
			st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			var (
				next  atomic.Int64
				errs  atomic.Int64
				mu    sync.Mutex
				took  []time.Duration
				group sync.WaitGroup
			)
			request := func(due time.Time) {
				i := next.Add(1)
				target := fmt.Sprintf("seed-%06d", 1+i%1000)
				src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
				r, err := st.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i%200)}, target,
					policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "bench"},
					policy.DefaultLimits(), time.Now())
				if err != nil {
					errs.Add(1)
					return
				}
				t, err := st.GetTarget(ctx, target)
				if err != nil {
					errs.Add(1)
					return
				}
				if _, err := st.ReportApplied(ctx, target, t.Revision, "", nil, "", time.Now()); err != nil {
					errs.Add(1)
					return
				}
				if _, err := st.GetRequest(ctx, r.ID); err != nil {
					errs.Add(1)
					return
				}
				d := time.Since(due)
				mu.Lock()
				took = append(took, d)
				mu.Unlock()
			}
			commits0, ops0 := st.WriteStats()
			c0 := cpu()
			b.ResetTimer()
			for b.Loop() {
				interval := time.Second / time.Duration(rate)
				start := time.Now()
				for i := range rate * seconds {
					due := start.Add(time.Duration(i) * interval)
					time.Sleep(time.Until(due))
					group.Go(func() { request(due) })
				}
				group.Wait()
			}
			b.StopTimer()
			n := float64(len(took)) + float64(errs.Load())
			commits, ops := st.WriteStats()
			slices.Sort(took)
			q := func(p float64) float64 {
				if len(took) == 0 {
					return 0
				}
				return float64(took[min(len(took)-1, int(p*float64(len(took))))]) / float64(time.Millisecond)
			}
			b.ReportMetric(float64(cpu()-c0)/float64(time.Millisecond)/n, "cpu-ms/req")
			b.ReportMetric(float64(ops-ops0)/float64(max(commits-commits0, 1)), "ops/commit")
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(errs.Load()), "errors")
		})
	}
}

func splitComma(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
