package e2e

import (
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestCrashFaults runs short grant lifecycles while killing the server and
// the agent with SIGKILL at random points (during the request, the apply,
// around the deadline, the reconcile after a restart, between a delta
// reaching the kernel and its report, during a revocation's delta, after
// which a confirmed removal must mean a closed port) and checks with real
// packets that no access outlives its deadline by more than a second, that
// nothing reported active is closed, and that no request is lost. It prints
// its seed: JITGATE_CRASH_SEED=N replays a run, JITGATE_CRASH_TRIALS=N makes
// it longer (bench/crash_test.go runs 500).
func TestCrashFaults(t *testing.T) {
	trials := 30
	if n, err := strconv.Atoi(os.Getenv("JITGATE_CRASH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	l := newLab(t)
	rep := runCrashLab(t, l.Lab, trials)
	if len(rep.Violations) > 0 {
		t.Fatalf("%d violations in %d trials (seed %d; replay with %s=%d)", len(rep.Violations), trials, rep.Seed, testlab.CrashSeedEnv, rep.Seed)
	}
}

// TestCrashFaultsReplicas is the crash harness in replica mode: three
// real servers on one real PostgreSQL database, the agent given every
// replica (it polls a), the harness's calls sent to b first; the kills hit
// a replica chosen at random (the agent's, the client's, the holder of the
// singleton leases), the agent, or both, and the invariants are the same:
// nothing reported active that is not open, nothing open past its deadline
// + 1 s, no request lost or left pending. 12 trials here (~1 minute);
// bench/crash_test.go runs 200.
func TestCrashFaultsReplicas(t *testing.T) {
	trials := 12
	if n, err := strconv.Atoi(os.Getenv("JITGATE_CRASH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	l := newLab(t)
	database := testenv.Postgres(t)
	rep := runCrashLabWith(t, l.Lab, trials, func() { l.StartReplicas(database, 3) })
	if len(rep.Violations) > 0 {
		t.Fatalf("%d violations in %d trials (seed %d; replay with %s=%d)", len(rep.Violations), trials, rep.Seed, testlab.CrashSeedEnv, rep.Seed)
	}
}

// runCrashLab sets up the server, the target, its policy on port 22 (the
// lab's sshd) and sources, and runs the crash harness.
func runCrashLab(t *testing.T, l *testlab.Lab, trials int) testlab.CrashReport {
	t.Helper()
	return runCrashLabWith(t, l, trials, func() { l.StartServer() })
}

// runCrashLabWith is runCrashLab with the server (or replicas) started by
// startServers.
func runCrashLabWith(t *testing.T, l *testlab.Lab, trials int, startServers func()) testlab.CrashReport {
	t.Helper()
	startServers()
	created := testlab.CLIJSON[wire.TargetCreated](l, "target", "add", "crash-01")
	l.StartAgent(created.EnrollToken)
	testlab.CLIJSON[wire.PolicyResult](l, "policy", "set", "crash-01", "--port", "22/tcp", "--max", "1h")
	l.WaitApplied("crash-01")
	sources := []netip.Addr{client1, client2}
	for i := 20; i < 28; i++ {
		sources = append(sources, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	l.AddClientAddrs(sources[2:]...)
	for _, src := range sources {
		if l.CanConnect(src, serverIP, 22) {
			t.Fatalf("port 22 open from %s before any grant", src)
		}
	}
	start := time.Now()
	rep := l.RunCrashes(testlab.CrashConfig{Trials: trials, Target: "crash-01", Port: 22, Sources: sources, Logf: t.Logf})
	t.Logf("crash run: %d trials in %s; points %v; kills %v; %d requests (%d answers cut off); ended %v; %d open checks, %d closed checks; %d violations",
		rep.Trials, time.Since(start).Round(time.Second), rep.Points, rep.Kills, rep.Requests, rep.LostAnswers, rep.Ended, rep.OpenChecks, rep.ClosedChecks, len(rep.Violations))
	return rep
}
