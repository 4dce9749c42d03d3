package store_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testlab"
)

// BenchmarkWritePath measures the store's side of one request at the load
// benchmark's shape (bench/load_test.go: 10,000 targets, 100,000 live
// grants, requests spread over 1,000 targets): the request's creation, the
// agent's read of its target, the agent's report that activates it, and
// the client's read of its request, from 16 goroutines at once so that the
// group commit batches them as under load. It reports the process CPU per
// request (cpu-ms/op) and the SQL statements per request (stmts/op): the
// figures for a change to the write path's SQL, which the machine's other
// work moves less than the load benchmark's.
func BenchmarkWritePath(b *testing.B) {
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
	var next atomic.Int64
	op := func() error {
		i := next.Add(1)
		target := fmt.Sprintf("seed-%06d", 1+i%1000)
		src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		at := time.Now()
		r, err := st.CreateRequest(ctx, store.Actor{Name: fmt.Sprintf("u%d", i%200)}, target,
			policy.Request{Ports: []policy.Port{{Number: 22, Protocol: policy.TCP}}, Source: src, Duration: 10 * time.Minute, Reason: "bench"},
			policy.DefaultLimits(), at)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		t, err := st.GetTarget(ctx, target)
		if err != nil {
			return err
		}
		if _, err := st.ReportApplied(ctx, target, t.Revision, "", nil, "", time.Now()); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		_, err = st.GetRequest(ctx, r.ID)
		return err
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// Read system calls (/proc/self/io's syscr): SQLite's page reads
	// from the file (pread) that its page cache did not spare.
	reads := func() int64 {
		io, err := os.ReadFile("/proc/self/io")
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(string(io), "\n") {
			if v, ok := strings.CutPrefix(l, "syscr: "); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					b.Fatal(err)
				}
				return n
			}
		}
		b.Fatal("no syscr in /proc/self/io")
		return 0
	}
	b.SetParallelism(8)
	q0, c0, r0 := st.Queries(), cpu(), reads()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpu()-c0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(st.Queries()-q0)/float64(b.N), "stmts/op")
	b.ReportMetric(float64(reads()-r0)/float64(b.N), "reads/op")
	commits, ops := st.WriteStats()
	b.ReportMetric(float64(ops)/float64(max(commits, 1)), "ops/commit")
}

var (
	seedOnce sync.Once
	seeded   []byte
	seedErr  error
)

// seedWritePath builds BenchmarkWritePath's database once: 10,000 targets
// with 10 live grants each, as the load benchmark seeds them.
func seedWritePath(ctx context.Context) ([]byte, error) {
	dir, err := os.MkdirTemp("", "writepath")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "jitgate.db")
	st, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
	if err != nil {
		return nil, err
	}
	admin := store.Actor{Name: "admin"}
	now := time.Now()
	if _, _, err := st.CreateTarget(ctx, admin, "web-0", nil, now, time.Hour); err != nil {
		return nil, err
	}
	pol, err := policy.DefaultLimits().Normalize(policy.Policy{Rules: []policy.Rule{{Port: policy.Port{Number: 22, Protocol: policy.TCP}, MaxDuration: time.Hour}}})
	if err != nil {
		return nil, err
	}
	if _, err := st.SetPolicy(ctx, admin, "web-0", pol, now); err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	if err := testlab.SeedDB(ctx, path, testlab.Seed{Targets: 9_999, PerTarget: 10, PolicyFrom: "web-0",
		From: netip.MustParseAddr("198.18.0.1"), Port: 22, Duration: time.Hour}); err != nil {
		return nil, err
	}
	// One file: the WAL checkpointed into it.
	if st, err = store.OpenSQLite(ctx, path, store.DefaultConfig()); err != nil {
		return nil, err
	}
	if err := st.Close(); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}
