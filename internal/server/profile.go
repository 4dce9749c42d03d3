package server

import (
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
)

// CPUProfileEnv names the environment variable that lets a benchmark take a
// CPU profile of a running server (bench/load_test.go): with it set to a
// file path, SIGUSR1 starts a CPU profile and the next SIGUSR1 writes it to
// that file (pprof format). Without it the signal keeps its default.
//
// The allocations of the same span go beside it: the heap profile's
// cumulative allocations when the CPU profile starts (path + ".allocs0")
// and when it stops (path + ".allocs"), so that
// `go tool pprof -sample_index=alloc_space -diff_base path.allocs0 path.allocs`
// shows what was allocated while it ran.
const CPUProfileEnv = "JITGATE_CPU_PROFILE"

// writeAllocs writes the heap profile (cumulative allocations included) to
// path, logging a failure: the CPU profile does not depend on it.
func writeAllocs(log *slog.Logger, path string) {
	runtime.GC() // the profile is as of the last collection: make it now
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Error("writing the allocation profile", "path", path, "err", err)
	}
}

// profileOnSignal installs the SIGUSR1 toggle when CPUProfileEnv is set; the
// returned func stops it (writing a profile still running).
func profileOnSignal(log *slog.Logger) func() {
	path := os.Getenv(CPUProfileEnv)
	if path == "" || len(profileSignals) == 0 {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, profileSignals...)
	var (
		mu sync.Mutex
		f  *os.File
	)
	stop := func() {
		if f == nil {
			return
		}
		pprof.StopCPUProfile()
		writeAllocs(log, path+".allocs")
		if err := f.Close(); err != nil {
			log.Error("writing the CPU profile", "path", path, "err", err)
		} else {
			log.Info("CPU profile written", "path", path)
		}
		f = nil
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-sig:
			}
			mu.Lock()
			if f != nil {
				stop()
				mu.Unlock()
				continue
			}
			writeAllocs(log, path+".allocs0")
			var err error
			if f, err = os.Create(path); err == nil {
				if err = pprof.StartCPUProfile(f); err != nil {
					f.Close()
					f = nil
				}
			}
			if err != nil {
				log.Error("starting a CPU profile", "path", path, "err", err)
			} else {
				log.Info("CPU profile started", "path", path)
			}
			mu.Unlock()
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		mu.Lock()
		stop()
		mu.Unlock()
	}
}
