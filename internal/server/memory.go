package server

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// The garbage collector's setting for the server (Config.TuneGC).
//
// Under load the server allocates for every call (HTTP, JSON, SQL rows)
// and keeps little of it, while thousands of goroutines wait in long-polls
// (agents, clients): each collection scans every one of their stacks, so a
// collection costs about the same however little garbage it frees. At
// 1,000 requests/s over 1,000 targets the collector took ~7 % of the
// server's CPU, most of it scanning stacks. With the runtime's default
// (GOGC=100) it collects each time the heap grew by what was live after
// the last collection; the server lets it grow by twice that
// (gcPercent), so it collects half as often.
//
// The memory that costs is bounded by a soft limit (debug.SetMemoryLimit)
// sized to what the server holds: never below minMemoryLimit, and
// otherwise twice what was live at the last collection (heap and goroutine
// stacks) plus a margin, which is at least what GOGC=100 would let it use.
// So a small server runs at GOGC=200, and a large one (10,000 agents
// connected, a heap of hundreds of MB) collects at least as often as it did
// with the default, never more: the limit is re-sized every
// memoryResizeEvery as the state grows or shrinks. An operator's GOGC or
// GOMEMLIMIT wins (the command leaves TuneGC off then).
const (
	gcPercent         = 200
	minMemoryLimit    = 768 << 20
	memoryMargin      = 64 << 20
	memoryResizeEvery = 2 * time.Second
)

// memoryLimitFor is the soft limit for live bytes of heap and stacks.
func memoryLimitFor(live uint64) int64 {
	if live > math.MaxInt64/4 {
		return math.MaxInt64
	}
	return max(minMemoryLimit, 2*int64(live)+memoryMargin)
}

// liveMemory reads the heap live at the last collection and the goroutine
// stacks in use.
func liveMemory() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	var n uint64
	for _, v := range s {
		if v.Value.Kind() == metrics.KindUint64 {
			n += v.Value.Uint64()
		}
	}
	return n
}

// tuneGC sets the collector for the server (see gcPercent) and re-sizes
// its memory limit until stop is called, which puts both back.
func tuneGC(log *slog.Logger) (stop func()) {
	oldPercent := debug.SetGCPercent(gcPercent)
	oldLimit := debug.SetMemoryLimit(memoryLimitFor(liveMemory()))
	log.Debug("garbage collector tuned", "gogc", gcPercent, "min_limit_mib", minMemoryLimit>>20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(memoryResizeEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				debug.SetMemoryLimit(memoryLimitFor(liveMemory()))
			}
		}
	}()
	return func() {
		cancel()
		<-done
		debug.SetGCPercent(oldPercent)
		debug.SetMemoryLimit(oldLimit)
	}
}
