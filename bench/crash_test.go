//go:build bench

package bench

import (
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// defaultCrashTrials is the long crash run's length (JITGATE_CRASH_TRIALS
// overrides it); e2e/crash_test.go runs a short one in the normal suite.
const defaultCrashTrials = 500

// TestCrashFaultsLong runs the crash harness (testlab.RunCrashes) for
// defaultCrashTrials trials against the real binaries on port 22 (the lab's
// sshd), and writes results/crash.json. JITGATE_CRASH_SEED replays a run.
func TestCrashFaultsLong(t *testing.T) {
	trials := defaultCrashTrials
	if n, err := strconv.Atoi(os.Getenv("JITGATE_CRASH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	l := testlab.New(t)
	l.StartServer()
	created := testlab.CLIJSON[wire.TargetCreated](l, "target", "add", "crash-01")
	l.StartAgent(created.EnrollToken)
	testlab.CLIJSON[wire.PolicyResult](l, "policy", "set", "crash-01", "--port", "22/tcp", "--max", "1h")
	l.WaitApplied("crash-01")
	sources := []netip.Addr{testlab.Client1, testlab.Client2}
	for i := 20; i < 28; i++ {
		sources = append(sources, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	l.AddClientAddrs(sources[2:]...)
	rep := l.RunCrashes(testlab.CrashConfig{Trials: trials, Target: "crash-01", Port: 22, Sources: sources, Logf: t.Logf})
	t.Logf("crash run: %d trials in %s; points %v; kills %v; %d requests (%d answers cut off); ended %v; %d open checks, %d closed checks; %d violations",
		rep.Trials, rep.Duration.Round(1e9), rep.Points, rep.Kills, rep.Requests, rep.LostAnswers, rep.Ended, rep.OpenChecks, rep.ClosedChecks, len(rep.Violations))
	writeResult(t, "crash", rep)
	if len(rep.Violations) > 0 {
		t.Errorf("%d violations (seed %d; replay with %s=%d)", len(rep.Violations), rep.Seed, testlab.CrashSeedEnv, rep.Seed)
	}
}

// defaultCrashReplicaTrials is the long replica-mode crash run's length.
const defaultCrashReplicaTrials = 200

// TestCrashFaultsReplicasLong runs the crash harness in replica mode (three
// real servers on one PostgreSQL; kills hit a replica at random, the agent
// or both; e2e TestCrashFaultsReplicas runs 12 trials) and writes
// results/crash_replicas.json. JITGATE_CRASH_TRIALS and JITGATE_CRASH_SEED
// apply.
func TestCrashFaultsReplicasLong(t *testing.T) {
	trials := defaultCrashReplicaTrials
	if n, err := strconv.Atoi(os.Getenv("JITGATE_CRASH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	l := testlab.New(t)
	l.StartReplicas(testenv.Postgres(t), 3)
	created := testlab.CLIJSON[wire.TargetCreated](l, "target", "add", "crash-01")
	l.StartAgent(created.EnrollToken)
	testlab.CLIJSON[wire.PolicyResult](l, "policy", "set", "crash-01", "--port", "22/tcp", "--max", "1h")
	l.WaitApplied("crash-01")
	sources := []netip.Addr{testlab.Client1, testlab.Client2}
	for i := 20; i < 28; i++ {
		sources = append(sources, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
	}
	l.AddClientAddrs(sources[2:]...)
	rep := l.RunCrashes(testlab.CrashConfig{Trials: trials, Target: "crash-01", Port: 22, Sources: sources, Logf: t.Logf})
	t.Logf("crash run (3 replicas): %d trials in %s; points %v; kills %v; %d requests (%d answers cut off); ended %v; %d open checks, %d closed checks; %d violations",
		rep.Trials, rep.Duration.Round(1e9), rep.Points, rep.Kills, rep.Requests, rep.LostAnswers, rep.Ended, rep.OpenChecks, rep.ClosedChecks, len(rep.Violations))
	writeResult(t, "crash_replicas", rep)
	if len(rep.Violations) > 0 {
		t.Errorf("%d violations (seed %d; replay with %s=%d)", len(rep.Violations), rep.Seed, testlab.CrashSeedEnv, rep.Seed)
	}
}
