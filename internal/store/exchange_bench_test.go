package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// BenchmarkAgentExchange measures the store's side of one agent exchange
// at the load benchmark's shape (seedWritePath: 10,000 targets, 100,000
// live grants, requests spread over 1,000 targets), the exchange that
// activates a request: the report of the revision carrying it
// (ReportAppliedRevision, with the agent's addresses and version, as
// agents report), then its long-poll's reads when the next change wakes
// it: the target with the credential and the delta (AgentTargetChanges,
// one statement; before it, AgentTarget and DesiredChangesOf) and the
// break-glass revocations. Each op first
// creates the request, which is not counted. It reports the process CPU
// of the exchange (cpu-us/exchange: user and system time, the writer's
// and syncer's goroutines included) and of each part, sequentially, so
// that the parts can be told apart; the creations' CPU is reported apart
// (cpu-us/create).
func BenchmarkAgentExchange(b *testing.B) {
	ctx := context.Background()
	seedOnce.Do(func() { seeded, seedErr = seedWritePath(ctx) })
	if seedErr != nil {
		b.Fatal(seedErr)
	}
	path := filepath.Join(b.TempDir(), "jitgate.db")
	if err := os.WriteFile(path, seeded, 0o600); err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var create, report, read, revoked time.Duration
	i := 0
	op := func() {
		i++
		name := fmt.Sprintf("seed-%06d", 1+(i*7919)%1000)
		src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		c0 := cpu()
		r, err := st.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i%200)}, name,
			policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "bench"},
			policy.DefaultLimits(), time.Now())
		if err != nil {
			b.Fatal(err)
		}
		c1 := cpu()
		acts, _, err := st.ReportAppliedRevision(ctx, name, "", r.Revision, "", []string{"198.51.100.10"}, "1.0.0", time.Now(), nil)
		if err != nil || len(acts) != 1 {
			b.Fatalf("report: %v, %v", acts, err)
		}
		c2 := cpu()
		t, _, d, err := st.AgentTargetChanges(ctx, name, "no-such-token", r.Revision-1, time.Now())
		if err != nil || t.Revision != r.Revision || d.Snapshot || len(d.Grants) != 1 {
			b.Fatalf("target and delta: %+v, %+v, %v", t, d, err)
		}
		c4 := cpu()
		if _, err := st.RevokedBreakGlassTokensOf(ctx, t, time.Now()); err != nil {
			b.Fatal(err)
		}
		c5 := cpu()
		create += c1 - c0
		report += c2 - c1
		read += c4 - c2
		revoked += c5 - c4
	}
	for range 50 { // the caches
		op()
	}
	create, report, read, revoked = 0, 0, 0, 0
	b.ResetTimer()
	for range b.N {
		op()
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(us(report+read+revoked), "cpu-us/exchange")
	b.ReportMetric(us(report), "cpu-us/report")
	b.ReportMetric(us(read), "cpu-us/read")
	b.ReportMetric(us(revoked), "cpu-us/revoked")
	b.ReportMetric(us(create), "cpu-us/create")
}
