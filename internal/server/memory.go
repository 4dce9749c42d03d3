package server

import (
	"context"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
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
//
// The limit never exceeds nine tenths of the memory the server's control
// group allows (a container's or a systemd unit's memory limit), which
// the Go runtime does not know: above it, the kernel kills the process
// where the collector would have worked harder. Without that cap a server
// of 200 MiB live in a 512 MiB container let its heap grow to 600 MiB
// (GOGC=200 under 768 MiB) and was killed by a load that only raised the
// garbage rate, where the runtime's default (400 MiB) kept it alive
// (TestGCLimitUnderTheCgroupLimit).
const (
	gcPercent         = 200
	minMemoryLimit    = 768 << 20
	memoryMargin      = 64 << 20
	memoryResizeEvery = 2 * time.Second
)

// memoryLimitFor is the soft limit for live bytes of heap and stacks under
// a control group that allows ceiling bytes (0: no limit).
func memoryLimitFor(live, ceiling uint64) int64 {
	l := int64(math.MaxInt64)
	if live <= math.MaxInt64/4 {
		l = max(minMemoryLimit, 2*int64(live)+memoryMargin)
	}
	if ceiling > 0 && ceiling <= math.MaxInt64 {
		l = min(l, int64(ceiling-ceiling/10))
	}
	return l
}

// noCgroupLimit: a control group's limit at or above it is no limit (cgroup
// v1 writes "unlimited" as the largest page-aligned int64).
const noCgroupLimit = 1 << 62

// cgroupMemoryLimit is the memory the control groups of the process allow,
// the lowest limit of its group and their parents (0: none): procCgroup is
// /proc/self/cgroup's text, root where the hierarchies are mounted
// (/sys/fs/cgroup). Version 2 is read from memory.max, version 1 from the
// memory hierarchy's memory.limit_in_bytes. In a container whose cgroup
// namespace hides the path, the mount's own directory is the group.
func cgroupMemoryLimit(procCgroup, root string) uint64 {
	var lowest uint64
	read := func(file string) {
		b, err := os.ReadFile(file)
		if err != nil {
			return
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n == 0 || n >= noCgroupLimit { // "max", unlimited
			return
		}
		if lowest == 0 || n < lowest {
			lowest = n
		}
	}
	walk := func(base, path, name string) {
		dir := filepath.Join(base, filepath.Clean("/"+path))
		for {
			read(filepath.Join(dir, name))
			if len(dir) <= len(base) {
				return
			}
			dir = filepath.Dir(dir)
		}
	}
	for _, line := range strings.Split(procCgroup, "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		controllers, path, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			walk(root, path, "memory.max")
		case containsWord(controllers, "memory"):
			walk(filepath.Join(root, "memory"), path, "memory.limit_in_bytes")
		}
	}
	return lowest
}

func containsWord(list, w string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == w {
			return true
		}
	}
	return false
}

// processMemoryCeiling is what this process's control groups allow (0:
// no limit).
func processMemoryCeiling() uint64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	return cgroupMemoryLimit(string(b), "/sys/fs/cgroup")
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
	ceiling := processMemoryCeiling()
	oldPercent := debug.SetGCPercent(gcPercent)
	oldLimit := debug.SetMemoryLimit(memoryLimitFor(liveMemory(), ceiling))
	log.Debug("garbage collector tuned", "gogc", gcPercent, "min_limit_mib", minMemoryLimit>>20, "cgroup_limit_mib", ceiling>>20)
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
				debug.SetMemoryLimit(memoryLimitFor(liveMemory(), ceiling))
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
