//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// Scale is what TestScale writes to results/scale.json.
type Scale struct {
	Grants      int     `json:"grants"`
	SeedSeconds float64 `json:"seed_s"`
	// From the server's start to the agent having applied every grant (a
	// table built from nothing in one transaction).
	FirstApplyMS float64 `json:"first_apply_ms"`
	// Per restart (kill -9, start): from starting the agent to a request
	// made while it was dead being active (the gate reconciled).
	AgentRestartMS []float64 `json:"agent_restart_to_reconciled_ms"`
	// Per restart: the CPU time (user and system) the restarted agent
	// process used until the gate was reconciled, and the server's over
	// the same span (its snapshot and the report). Less at the mercy of a
	// shared machine's load than the wall time above.
	AgentRestartCPUMS  []float64 `json:"agent_restart_cpu_ms"`
	ServerRestartCPUMS []float64 `json:"server_restart_cpu_ms"`
	// Peak resident memory (VmHWM) over the whole run, MiB.
	ServerHWMMiB float64 `json:"server_vmhwm_mib"`
	AgentHWMMiB  float64 `json:"agent_vmhwm_mib"`
	// Peak resident memory of the agent that made the first load (a
	// different process from the restarted one above), MiB.
	FirstAgentHWMMiB float64 `json:"agent_first_load_vmhwm_mib"`
	ServerRSSMiB     float64 `json:"server_rss_mib"`
	AgentRSSMiB      float64 `json:"agent_rss_mib"`
	Load             string  `json:"load"`
}

// TestScale puts BENCH_SCALE_GRANTS (default 1,000,000) live grants on the
// real agent's own target, then measures the first apply, the agent's
// restarts (kill -9 while a request is made, start, until that request is
// active), and the peak memory of server and agent. The grants are seeded
// into the stopped server's database (testlab.SeedDB).
//
//	BENCH_RUN='^TestScale$' BENCH_SCALE_GRANTS=100000 bench/run.sh
func TestScale(t *testing.T) {
	n := envInt("BENCH_SCALE_GRANTS", 1_000_000)
	restarts := envInt("BENCH_SCALE_RESTARTS", 3)
	if os.Getenv("BENCH_PROFILE") != "" {
		path, err := filepath.Abs("results/scale_server_cpu.pprof")
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(server.CPUProfileEnv, path)
	}
	l := testlab.New(t)
	flags := append(loadServerFlags[:len(loadServerFlags):len(loadServerFlags)], "--max-live-requests-per-target", "100000000")
	setupJitgate(t, l, flags...)
	ctx := context.Background()
	res := Scale{Grants: n}
	l.Server.Kill()
	start := time.Now()
	err := testlab.SeedDB(ctx, l.DBPath(), testlab.Seed{Target: target, TargetGrants: n,
		TargetFrom: netip.MustParseAddr("10.0.0.1"), Port: benchPort, Duration: 2 * time.Hour, Prefix: "scale"})
	if err != nil {
		t.Fatal(err)
	}
	res.SeedSeconds = time.Since(start).Seconds()
	t.Logf("seeded %d grants on %s in %.1f s", n, target, res.SeedSeconds)
	start = time.Now()
	l.StartServer(flags...)
	api := loadClient(t, l)
	l.Eventually("agent applied every grant", 20*time.Minute, func() bool {
		tg, err := api.Target(ctx, target)
		return err == nil && tg.Agent.AppliedRevision == tg.Agent.Revision
	})
	res.FirstApplyMS = ms(time.Since(start))
	res.FirstAgentHWMMiB = hwmMiB(t, l.Agent.Pid())
	t.Logf("server start → agent applied %d grants: %.0f ms; that agent's peak RSS %.0f MiB", n, res.FirstApplyMS, res.FirstAgentHWMMiB)
	probe := netip.MustParseAddr("203.0.113.1")
	for i := range restarts {
		l.Agent.Kill()
		probe = probe.Next()
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: probe.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: agent restart"})
		if err != nil {
			t.Fatal(err)
		}
		stopProfile := func() {}
		if i == 0 {
			// BENCH_PROFILE: the server's CPU profile of the first
			// restart, its snapshot and the report
			// (results/scale_server_cpu.pprof).
			stopProfile = startServerProfile(t, l)
		}
		serverCPU := cpuMS(t, l.Server.Pid())
		start := time.Now()
		l.StartAgent("")
		for req.State == "pending" && time.Since(start) < 10*time.Minute {
			if req, err = api.WaitRequest(ctx, req.ID, "pending", 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if req.State != "active" {
			t.Fatalf("request %s after the agent restart: %s (%s)", req.ID, req.State, req.Message)
		}
		res.AgentRestartMS = append(res.AgentRestartMS, ms(time.Since(start)))
		res.AgentRestartCPUMS = append(res.AgentRestartCPUMS, cpuMS(t, l.Agent.Pid()))
		res.ServerRestartCPUMS = append(res.ServerRestartCPUMS, cpuMS(t, l.Server.Pid())-serverCPU)
		stopProfile()
		t.Logf("agent restart %d with %d grants: reconciled after %.0f ms (CPU: agent %.0f ms, server %.0f ms)", i+1, n, res.AgentRestartMS[i],
			res.AgentRestartCPUMS[i], res.ServerRestartCPUMS[i])
	}
	res.ServerHWMMiB, res.AgentHWMMiB = hwmMiB(t, l.Server.Pid()), hwmMiB(t, l.Agent.Pid())
	res.ServerRSSMiB, res.AgentRSSMiB = rssMiB(t, l.Server), rssMiB(t, l.Agent)
	res.Load = loadAvg()
	t.Logf("peak RSS (VmHWM): server %.0f MiB, agent %.0f MiB (the last agent process: a restart); now: server %.0f, agent %.0f; load %s",
		res.ServerHWMMiB, res.AgentHWMMiB, res.ServerRSSMiB, res.AgentRSSMiB, res.Load)
	writeResult(t, "scale", res)
}

// hwmMiB is a process's peak resident memory (VmHWM), in MiB.
func hwmMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				t.Fatal(err)
			}
			return float64(kb) / 1024
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// cpuMS is the CPU time (user and system) process pid used so far, in ms
// (/proc/PID/stat, in clock ticks of 10 ms).
func cpuMS(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command (in parentheses, which may hold spaces):
	// state is the 3rd field, utime the 14th, stime the 15th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, err1 := strconv.ParseFloat(f[11], 64)
	stime, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %s", pid, b)
	}
	return (utime + stime) * 10
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// Fleet is what TestFleet writes to results/fleet.json.
type Fleet struct {
	Agents      int     `json:"simulated_agents"`
	SeedSeconds float64 `json:"seed_s"`
	// From starting the fleet to every simulated agent answered once.
	ConnectSeconds float64 `json:"connect_s"`
	// API call → request active (the real agent applied and reported),
	// sequential requests while the fleet long-polls.
	GrantToAgent Summary `json:"grant_to_real_agent"`
	Errors       int     `json:"errors"`
	ServerHWMMiB float64 `json:"server_vmhwm_mib"`
	ServerRSSMiB float64 `json:"server_rss_mib"`
	FleetRSSMiB  float64 `json:"fleet_process_rss_mib"`
	Load         string  `json:"load"`
}

// TestFleet connects BENCH_FLEET_AGENTS (default 10,000) simulated agents at
// once, each the agent of its own target (seeded with a credential), as
// goroutines of one separate process long-polling the server over real
// HTTP from the client namespace, and measures, with one real agent among
// them, the time from a request's API call to the real agent having
// applied it (BENCH_FLEET_TRIALS, default 200), and the server's memory.
//
//	BENCH_RUN='^TestFleet$' bench/run.sh
func TestFleet(t *testing.T) {
	agents := envInt("BENCH_FLEET_AGENTS", 10_000)
	trials := envInt("BENCH_FLEET_TRIALS", 200)
	l := testlab.New(t)
	setupJitgate(t, l, loadServerFlags...)
	ctx := context.Background()
	res := Fleet{Agents: agents}
	l.Server.Kill()
	start := time.Now()
	err := testlab.SeedDB(ctx, l.DBPath(), testlab.Seed{Targets: agents, PolicyFrom: target, Credentials: true,
		From: netip.MustParseAddr("198.18.0.1"), Port: benchPort, Duration: time.Hour, Prefix: "fleet"})
	if err != nil {
		t.Fatal(err)
	}
	res.SeedSeconds = time.Since(start).Seconds()
	l.StartServer(loadServerFlags...)
	api := loadClient(t, l)
	waitAgent(t, l, api)

	names := filepath.Join(t.TempDir(), "fleet")
	var b strings.Builder
	for i := range agents {
		fmt.Fprintf(&b, "seed-%06d\n", i+1)
	}
	if err := os.WriteFile(names, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BENCH_FLEET_CHILD", names)
	start = time.Now()
	fleet := l.Start(l.ClientNS, "fleet", os.Args[0], "-test.run=^TestFleetChild$", "-test.v")
	l.Eventually("every simulated agent answered once", 5*time.Minute, func() bool {
		return strings.Contains(fleet.Output(), "fleet: all answered")
	})
	res.ConnectSeconds = time.Since(start).Seconds()
	t.Logf("%d simulated agents connected in %.1f s", agents, res.ConnectSeconds)
	time.Sleep(2 * time.Second) // every simulated agent is in its long-poll

	var lat []time.Duration
	src := netip.MustParseAddr("203.0.113.1")
	for range trials {
		src = src.Next()
		t0 := time.Now()
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: src.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: fleet"})
		if err != nil {
			res.Errors++
			continue
		}
		for req.State == "pending" && time.Since(t0) < 30*time.Second {
			if req, err = api.WaitRequest(ctx, req.ID, "pending", 10*time.Second); err != nil {
				break
			}
		}
		if err != nil || req.State != "active" {
			res.Errors++
			continue
		}
		lat = append(lat, time.Since(t0))
		time.Sleep(time.Duration(20+rand.IntN(30)) * time.Millisecond)
	}
	res.GrantToAgent = summarize(lat)
	res.ServerHWMMiB, res.ServerRSSMiB = hwmMiB(t, l.Server.Pid()), rssMiB(t, l.Server)
	res.FleetRSSMiB = rssMiB(t, fleet)
	res.Load = loadAvg()
	out := fleet.Output()
	if i := strings.LastIndex(out, "fleet: "); i >= 0 {
		t.Logf("fleet process: %s", strings.SplitN(out[i:], "\n", 2)[0])
	}
	t.Logf("%d simulated agents: grant → real agent %s; %d errors; server VmHWM %.0f MiB (RSS now %.0f), fleet process %.0f MiB; load %s",
		agents, res.GrantToAgent, res.Errors, res.ServerHWMMiB, res.ServerRSSMiB, res.FleetRSSMiB, res.Load)
	writeResult(t, "fleet", res)
}

// TestFleetChild is the fleet of TestFleet: run as a separate process with
// BENCH_FLEET_CHILD naming the file of target names, it long-polls the
// desired state of each as its agent (first at once, then with a 25 s
// wait, ?after= the revision it got) until it is killed. Without the
// variable it does nothing: it is not a test of its own.
func TestFleetChild(t *testing.T) {
	path := os.Getenv("BENCH_FLEET_CHILD")
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		names = append(names, sc.Text())
	}
	f.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: len(names) + 16, IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var answered, polls, errs atomic.Int64
	poll := func(name string, after int64, wait time.Duration) (int64, error) {
		u := testlab.ServerURL + "/api/v1/agent/desired?after=" + strconv.FormatInt(after, 10)
		if wait > 0 {
			u += "&wait=" + wait.String()
		}
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return after, err
		}
		req.Header.Set("Authorization", "Bearer "+testlab.SeedCredential(name))
		resp, err := hc.Do(req)
		if err != nil {
			return after, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return after, fmt.Errorf("%s: %s", name, resp.Status)
		}
		var ds wire.DesiredState
		if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
			return after, err
		}
		return ds.Revision, nil
	}
	for i, name := range names {
		go func() {
			time.Sleep(time.Duration(i) * 200 * time.Microsecond) // ramp up over 2 s per 10,000
			first := true
			var rev int64
			for {
				wait := 25 * time.Second
				if first {
					wait = 0
				}
				r, err := poll(name, rev, wait)
				if err != nil {
					errs.Add(1)
					time.Sleep(time.Second + rand.N(time.Second))
					continue
				}
				rev = r
				polls.Add(1)
				if first {
					first = false
					answered.Add(1)
				}
			}
		}()
	}
	all := false
	for {
		time.Sleep(time.Second)
		if !all && answered.Load() == int64(len(names)) {
			all = true
			fmt.Printf("fleet: all answered (%d)\n", len(names))
		}
		fmt.Printf("fleet: %d answered once, %d polls, %d errors\n", answered.Load(), polls.Load(), errs.Load())
	}
}
