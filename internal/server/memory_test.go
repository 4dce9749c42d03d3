package server

import (
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

// TestMemoryLimitFor checks the server's soft memory limit: never below
// minMemoryLimit, and never below what the runtime's default (GOGC=100)
// would let a server with that much live memory use (twice it), so that a
// large state collects no more often than with the default.
func TestMemoryLimitFor(t *testing.T) {
	for _, live := range []uint64{0, 1 << 20, 300 << 20, 383 << 20, 384 << 20, 2 << 30, 1 << 62, 1<<64 - 1} {
		got := memoryLimitFor(live)
		if got < minMemoryLimit {
			t.Errorf("live %d: limit %d below the floor %d", live, got, minMemoryLimit)
		}
		if live < 1<<62 && uint64(got) < 2*live {
			t.Errorf("live %d: limit %d below twice the live memory (GOGC=100's goal)", live, got)
		}
	}
}

// TestTuneGC checks that tuneGC sets GOGC 200 with a soft limit, and puts
// the process's settings back when its context ends.
func TestTuneGC(t *testing.T) {
	prevPercent := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(-1)
	defer func() {
		debug.SetGCPercent(prevPercent)
		debug.SetMemoryLimit(prevLimit)
	}()
	stop := tuneGC(slog.New(slog.NewTextHandler(io.Discard, nil)))
	p := debug.SetGCPercent(gcPercent)
	l := debug.SetMemoryLimit(-1) // -1 reads it
	stop()
	if p != gcPercent {
		t.Errorf("GOGC %d, want %d", p, gcPercent)
	}
	if l < minMemoryLimit {
		t.Errorf("memory limit %d, want at least %d", l, minMemoryLimit)
	}
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("GOGC %d after stop, want 100 back", p)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %d after stop, want none (%d)", l, int64(math.MaxInt64))
	}
}
