package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

func memProbeState(n, extra int, rev int64, now time.Time) wire.DesiredState {
	ds := wire.DesiredState{Target: "web-01", Revision: rev, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
	ds.Grants = make([]wire.GrantEntry, 0, n)
	for i := extra; i < n+extra; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		ds.Grants = append(ds.Grants, wire.GrantEntry{ID: int64(i + 1), Source: a.String(), Protocol: string([]byte("tcp")), Port: 22,
			ExpiresAt: now.Add(time.Hour + time.Duration(i%2)*time.Second).UTC()})
	}
	return ds
}

func heapNow() (objects, live, rss uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64() - s[3].Value.Uint64()
}

// BenchmarkAgentMemory measures what the agent has live and holds while it
// applies a snapshot of BENCH_RESTART_GRANTS (default 100,000) IPv4 host
// grants, real nftables in a namespace with a state file: a first load,
// then two restarts (a new Agent and Backend, the kernel and the state file
// as the last one left them, one grant changed). runtime/metrics is sampled
// every millisecond: peak-live is the most the collector found live, held
// the most heap the runtime kept; kept is what stays live afterwards.
// BENCH_MEMORY_LIMIT=1 sizes the soft memory limit as the agent command
// does; BENCH_MEMORY_PROFILE=file writes a heap profile after the first
// restart, and file.ROUND at each new live peak. Run it once:
//
//	CI=true go test ./internal/agent -run '^$' -bench BenchmarkAgentMemory -benchtime 1x -v
func BenchmarkAgentMemory(b *testing.B) {
	t := b
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("BENCH_RESTART_GRANTS")); err == nil && v > 0 {
		n = v
	}
	testenv.RequireKernel(t)
	ns := testenv.NewNetns(t)
	stateFile := filepath.Join(t.TempDir(), "nft-state")
	newAgent := func() (*Agent, *nft.Backend) {
		be, err := nft.New(nft.WithNetNSFd(ns.FD()), nft.WithStateFile(stateFile))
		if err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{StateDir: filepath.Join(t.TempDir(), "state"), Logger: benchLogger(), SizeMemory: os.Getenv("BENCH_MEMORY_LIMIT") != ""}, be)
		if err != nil {
			t.Fatal(err)
		}
		a.srv, a.hwLoaded = nullServer{}, true
		a.setTarget("web-01")
		return a, be
	}
	var peakObj, peakRSS, peakLive atomic.Uint64
	var peakRound atomic.Int64
	sample := func(stop chan struct{}) chan struct{} {
		done := make(chan struct{})
		peakObj.Store(0)
		peakRSS.Store(0)
		peakLive.Store(0)
		go func() {
			defer close(done)
			for {
				o, l, r := heapNow()
				if o > peakObj.Load() {
					peakObj.Store(o)
				}
				if r > peakRSS.Load() {
					peakRSS.Store(r)
				}
				if l > peakLive.Load() {
					peakLive.Store(l)
					if f := os.Getenv("BENCH_MEMORY_PROFILE"); f != "" {
						w, _ := os.Create(fmt.Sprintf("%s.%d", f, peakRound.Load()))
						pprof.WriteHeapProfile(w)
						w.Close()
					}
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		return done
	}
	mib := func(v uint64) string {
		return fmt.Sprintf("%.0f MiB (%.0f B/grant)", float64(v)/(1<<20), float64(v)/float64(n))
	}
	now := time.Now()
	for round := 0; round < 3; round++ {
		runtime.GC()
		_, base, _ := heapNow()
		a, be := newAgent()
		ds := memProbeState(n, round, int64(round+1), now)
		peakRound.Store(int64(round))
		runtime.GC()
		_, withDS, _ := heapNow()
		stop := make(chan struct{})
		done := sample(stop)
		var ms0 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cpu0 := cpuTime()
		start := time.Now()
		if a.receive(context.Background(), ds, time.Now()); a.failed {
			t.Fatal(a.Status().LastError)
		}
		took := time.Since(start)
		cpu := cpuTime() - cpu0
		var ms1 runtime.MemStats
		runtime.ReadMemStats(&ms1)
		gcs, allocated := ms1.NumGC-ms0.NumGC, (ms1.TotalAlloc-ms0.TotalAlloc)>>20
		close(stop)
		<-done
		runtime.GC()
		_, after, _ := heapNow()
		if f := os.Getenv("BENCH_MEMORY_PROFILE"); f != "" && round == 1 {
			w, _ := os.Create(f)
			pprof.WriteHeapProfile(w)
			w.Close()
		}
		t.Logf("round %d (%s): base %s, decoded snapshot %s; peak objects %s, peak live %s, peak heap held %s; kept %s; %d collections, %d MiB allocated; took %v, CPU %v",
			round, map[bool]string{true: "first load", false: "restart"}[round == 0], mib(base), mib(withDS-base), mib(peakObj.Load()-base),
			mib(peakLive.Load()-base), mib(peakRSS.Load()), mib(after-base), gcs, allocated, took.Round(time.Millisecond), cpu.Round(time.Millisecond))
		if round == 2 {
			b.ReportMetric(float64(after-base)/float64(n), "kept-B/grant")
			b.ReportMetric(float64(peakLive.Load()-base)/(1<<20), "peak-live-MiB")
			b.ReportMetric(float64(peakRSS.Load())/(1<<20), "held-MiB")
		}
		be.Close()
		runtime.KeepAlive(a)
		a = nil
	}
}

// cpuTime is the process's CPU time so far (user and system: the kernel's
// work on the batches is done in the sending process).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
