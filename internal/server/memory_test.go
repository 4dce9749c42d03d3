package server

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/testenv"
)

// TestMemoryLimitFor checks the server's soft memory limit: never below
// minMemoryLimit, and never below what the runtime's default (GOGC=100)
// would let a server with that much live memory use (twice it), so that a
// large state collects no more often than with the default.
func TestMemoryLimitFor(t *testing.T) {
	for _, live := range []uint64{0, 1 << 20, 300 << 20, 383 << 20, 384 << 20, 2 << 30, 1 << 62, 1<<64 - 1} {
		got := memoryLimitFor(live, 0)
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

// TestMemoryLimitUnderACeiling: under a control group's memory limit the
// soft limit stays at nine tenths of it, however much is live, so that the
// collector works harder where the kernel would kill the process.
func TestMemoryLimitUnderACeiling(t *testing.T) {
	for _, tc := range []struct {
		live, ceiling uint64
		want          int64
	}{
		{live: 200 << 20, ceiling: 512 << 20, want: 512<<20 - 512<<20/10},
		{live: 1 << 30, ceiling: 1 << 30, want: 1<<30 - 1<<30/10},
		{live: 100 << 20, ceiling: 64 << 30, want: minMemoryLimit},
		{live: 10 << 30, ceiling: 64 << 30, want: 2*10<<30 + memoryMargin},
		{live: 1 << 63, ceiling: 4 << 30, want: 4<<30 - 4<<30/10},
	} {
		if got := memoryLimitFor(tc.live, tc.ceiling); got != tc.want {
			t.Errorf("live %d under %d: limit %d, want %d", tc.live, tc.ceiling, got, tc.want)
		}
	}
}

// TestCgroupMemoryLimit reads control group limits from a directory tree
// laid out as /sys/fs/cgroup (v2 memory.max, v1 memory.limit_in_bytes):
// the lowest of the group and its parents, "max" and v1's unlimited as
// none, the mount's own directory when the path is hidden.
func TestCgroupMemoryLimit(t *testing.T) {
	root := t.TempDir()
	write := func(rel, v string) {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("memory.max", "max")
	write("system.slice/memory.max", "1073741824")
	write("system.slice/jitgate.service/memory.max", "max")
	write("memory/memory.limit_in_bytes", "9223372036854771712")
	write("memory/docker/abc/memory.limit_in_bytes", "536870912")
	write("memory/docker/memory.limit_in_bytes", "9223372036854771712")
	for _, tc := range []struct {
		name, proc string
		want       uint64
	}{
		{"v2 parent's limit", "0::/system.slice/jitgate.service\n", 1 << 30},
		{"v2 none", "0::/user.slice\n", 0},
		{"v1", "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n", 512 << 20},
		{"v1 path hidden", "4:memory:/\n", 0},
		{"v1 with other controllers", "4:cpu,memory:/docker/abc\n", 512 << 20},
		{"nothing", "", 0},
	} {
		if got := cgroupMemoryLimit(tc.proc, root); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestGCLimitUnderTheCgroupLimit runs tuneGC in a process inside a real
// memory control group limited to 512 MiB: the soft memory limit it sets
// must stay below that. Before, it was 768 MiB whatever the group allowed:
// a server of a few hundred MiB live in a small container grew into the
// kernel's OOM killer instead of collecting.
func TestGCLimitUnderTheCgroupLimit(t *testing.T) {
	if dir := os.Getenv("JITGATE_TEST_CGROUP"); dir != "" {
		// The child: join the group, tune, say the limit.
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			t.Fatal(err)
		}
		stop := tuneGC(slog.New(slog.DiscardHandler))
		fmt.Printf("limit=%d\n", debug.SetMemoryLimit(-1))
		stop()
		return
	}
	testenv.RequireRoot(t)
	const allowed = 512 << 20
	var dir, file string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dir, file = filepath.Join("/sys/fs/cgroup", "jitgate-test-"+strconv.Itoa(os.Getpid())), "memory.max"
	} else {
		dir, file = filepath.Join("/sys/fs/cgroup/memory", "jitgate-test-"+strconv.Itoa(os.Getpid())), "memory.limit_in_bytes"
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if testenv.InCI() {
			t.Fatalf("creating a memory control group: %v", err)
		}
		t.Skipf("no memory control group here: %v", err)
	}
	defer os.Remove(dir)
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.Itoa(allowed)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGCLimitUnderTheCgroupLimit$", "-test.count=1")
	cmd.Env = append(os.Environ(), "JITGATE_TEST_CGROUP="+dir, "GOGC=", "GOMEMLIMIT=")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("the child: %v\n%s", err, out.String())
	}
	_, v, ok := strings.Cut(out.String(), "limit=")
	if !ok {
		t.Fatalf("the child said no limit:\n%s", out.String())
	}
	limit, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if limit <= 0 || limit > allowed {
		t.Errorf("soft memory limit %d MiB in a group that allows %d MiB: the process grows into the OOM killer", limit>>20, allowed>>20)
	}
}
