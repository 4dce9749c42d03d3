package server

import (
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
)

// CPUProfileEnv names the environment variable that lets a benchmark take a
// CPU profile of a running server (bench/load_test.go): with it set to a
// file path, SIGUSR1 starts a CPU profile and the next SIGUSR1 writes it to
// that file (pprof format). Without it the signal keeps its default.
const CPUProfileEnv = "JITGATE_CPU_PROFILE"

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
