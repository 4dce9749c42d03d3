package agent

import (
	"context"
	"math"
	"net/netip"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// liveHeap is the heap live after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestStateMemoryPerGrant: what an agent keeps of a state of host grants
// once applied (the held entries for deltas, the delta Index, the nft
// backend's cache of the table), after the first load and after a restart
// reconciled from the state file, stays below 350 bytes a grant (~200 and
// ~290 here), real nftables. Before: 620 and 763 bytes a grant at 100,000
// (~830 at a million): the
// decoded snapshot's entries and a map of slices of them, an Index of two
// maps of slices a grant, and 72-byte elements in the cache.
func TestStateMemoryPerGrant(t *testing.T) {
	testenv.RequireKernel(t)
	const n = 100_000
	ns := testenv.NewNetns(t)
	stateFile := filepath.Join(t.TempDir(), "nft-state")
	now := time.Now()
	snapshot := func(rev int64) wire.DesiredState {
		ds := wire.DesiredState{Target: "web-01", Revision: rev, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
			ds.Grants = append(ds.Grants, wire.GrantEntry{ID: int64(i + 1), Source: a.String(), Protocol: "tcp", Port: 22,
				ExpiresAt: now.Add(time.Hour + time.Duration(i%7)*time.Second).UTC()})
		}
		return ds
	}
	for _, step := range []string{"first load", "restart"} {
		be, err := nft.New(nft.WithNetNSFd(ns.FD()), nft.WithStateFile(stateFile))
		if err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{StateDir: filepath.Join(t.TempDir(), "state"), Logger: benchLogger()}, be)
		if err != nil {
			t.Fatal(err)
		}
		a.srv, a.hwLoaded = nullServer{}, true
		a.setTarget("web-01")
		before := liveHeap()
		ds := snapshot(1)
		if a.receive(context.Background(), ds, time.Now()); a.failed || a.index == nil || a.index.Elements() != n {
			t.Fatalf("%s: not applied: %v", step, a.Status().LastError)
		}
		per := (float64(liveHeap()) - float64(before)) / n
		t.Logf("%s: the agent holds %.0f bytes a grant", step, per)
		if per > 350 {
			t.Errorf("%s: the agent holds %.0f bytes a grant, want at most 350", step, per)
		}
		runtime.KeepAlive(a)
		be.Close()
	}
}

// TestMemoryLimitFollowsState: with SizeMemory the soft memory limit is
// set from the state's size, raised before a larger state is built, kept
// within a tenth, and given back (no limit) once the state is small.
func TestMemoryLimitFollowsState(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	a := &Agent{cfg: Config{SizeMemory: true}, log: benchLogger()}
	for _, tc := range []struct {
		grants int
		want   int64
	}{
		{5_000, prev}, // small: untouched
		{1_000_000, memoryLimitFor(1_000_000, firewall.HostMode)},
		{1_050_000, memoryLimitFor(1_000_000, firewall.HostMode)}, // within a tenth
		{2_000_000, memoryLimitFor(2_000_000, firewall.HostMode)},
		{100, math.MaxInt64}, // small again: no limit
	} {
		a.sizeMemory(tc.grants)
		if got := debug.SetMemoryLimit(-1); got != tc.want {
			t.Errorf("%d grants: limit %d, want %d", tc.grants, got, tc.want)
		}
	}
	if memoryLimitFor(1_000_000, firewall.GatewayMode) <= memoryLimitFor(1_000_000, firewall.HostMode) {
		t.Error("gateway mode gets no more room than host mode")
	}
	off := &Agent{cfg: Config{}, log: benchLogger()}
	debug.SetMemoryLimit(math.MaxInt64)
	off.sizeMemory(1_000_000)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("without SizeMemory the limit moved to %d", got)
	}
}

// TestMemoryLimitCoversHeldGrants: the limit set after an apply covers
// every grant the agent holds, not only the kernel elements they make.
// Grants that ended within the hour stay held (dropExpired) but make no
// element: sized to the 20,000 live elements of 120,000 held grants, the
// limit sat below what the agent keeps, and the collector ran without end
// (the runtime caps it at half the CPU) until the hour passed.
func TestMemoryLimitCoversHeldGrants(t *testing.T) {
	testenv.RequireKernel(t)
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	ns := testenv.NewNetns(t)
	be, err := nft.New(nft.WithNetNSFd(ns.FD()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	a, err := New(Config{StateDir: filepath.Join(t.TempDir(), "state"), Logger: benchLogger(), SizeMemory: true}, be)
	if err != nil {
		t.Fatal(err)
	}
	a.srv, a.hwLoaded = nullServer{}, true
	a.setTarget("web-01")
	const live, ended = 20_000, 100_000
	now := time.Now()
	ds := wire.DesiredState{Target: "web-01", Revision: 1, ServerTime: now.UTC(), Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
	for i := range live + ended {
		exp := now.Add(time.Hour)
		if i >= live {
			exp = now.Add(-time.Minute)
		}
		a4 := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		ds.Grants = append(ds.Grants, wire.GrantEntry{ID: int64(i + 1), Source: a4.String(), Protocol: "tcp", Port: 22, ExpiresAt: exp.UTC()})
	}
	if a.receive(context.Background(), ds, time.Now()); a.failed || a.elements != live {
		t.Fatalf("not applied: %d elements, %v", a.elements, a.Status().LastError)
	}
	if got, want := debug.SetMemoryLimit(-1), memoryLimitFor(live+ended, firewall.HostMode); got < want-want/10 {
		t.Errorf("memory limit %d MiB for %d held grants (%d live), want about %d MiB", got>>20, live+ended, live, want>>20)
	}
}
