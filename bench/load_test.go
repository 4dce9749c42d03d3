//go:build bench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/firewall/nft"
	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// The control-plane load: 10,000 targets and 100,000 live grants in SQLite,
// one real agent whose target holds loadTargetGrants of them in its kernel set.
const (
	loadTargets      = 10_000
	loadGrants       = 100_000
	loadPerTarget    = 9
	loadTargetGrants = loadGrants - (loadTargets-1)*loadPerTarget // the real agent's share: 10,009
	loadBigGrants    = 100_000                                    // on the agent's target, for the restart
	loadRestarts     = 3
)

// Defaults of BENCH_LOAD_RATE (requests/s) and BENCH_LOAD_SECONDS.
const (
	defaultLoadRate    = 20
	defaultLoadSeconds = 60
)

// Load is what TestControlPlaneLoad writes to results/load.json.
type Load struct {
	Targets      int     `json:"targets"`
	LiveGrants   int     `json:"live_grants_seeded"`
	TargetGrants int     `json:"agent_target_grants"`
	SeedSeconds  float64 `json:"seed_s"`
	// The open-loop generator: a request due every 1/Rate s for Seconds,
	// spread over Spread targets in turn (the real agent's first, the
	// others served by simulated agents).
	Spread int `json:"spread_targets"`
	// WaitMode is how the generator waits for a request to be active:
	// "create" (POST ?wait=: the create answers once the agent opened it,
	// one exchange; the default) or "poll" (BENCH_LOAD_WAIT=poll: the
	// create, then GET ?wait=&state=pending long-polls, as before).
	WaitMode string `json:"wait_mode"`
	// ClientsNice is the niceness the load generator and the simulated
	// agents ran at (0: the server's; see clientsNice).
	ClientsNice int     `json:"clients_nice"`
	Rate        float64 `json:"rate_per_s"`
	Seconds     float64 `json:"seconds"`
	Sent        int     `json:"sent"`
	// GeneratorLateMS is the most a request went out after its due time
	// (the generator's own lag; latencies count from the due time anyway).
	GeneratorLateMS float64 `json:"generator_late_ms"`
	// Activated requests per second of the run, and the errors: a failed
	// call, a request not active within 30 s, or a request that failed.
	Activated     int      `json:"activated"`
	ActivatedRate float64  `json:"activated_per_s"`
	Errors        int      `json:"errors"`
	ErrorSamples  []string `json:"error_samples,omitempty"`
	// Latency of the POST call (in poll mode it answers pending; in create
	// mode it waits for the agent, and is the activation when that came
	// within the wait), and to the client seeing the request active (the
	// agent confirmed), both from the time the request was due on the
	// generator's schedule.
	Create   Summary `json:"create_call"`
	Activate Summary `json:"create_to_active"`
	// Call is the API call's own latency, wait mode or not: the create's
	// answer (from the due time, as Create) minus the time the server says
	// it spent waiting for the agent (its Server-Timing "wait"): when the
	// create was durable and could have been answered. In poll mode it is
	// Create. ServerCommit and ServerWait are the server's Server-Timing
	// figures themselves: its handler's start to the durable commit, and
	// the wait after it.
	Call         Summary `json:"api_call"`
	ServerCommit Summary `json:"server_commit"`
	ServerWait   Summary `json:"server_wait"`
	// The agent's own time per apply during the load (its logs: fetch
	// excluded, from the desired state received to the kernel batch sent).
	AgentApply Summary `json:"agent_apply_during_load"`
	// Kernel elements in the agent's set after the run.
	KernelElements int `json:"kernel_elements_after_load"`
	// CPU used during the open loop (from /proc/PID/stat, utime+stime), in
	// seconds, by the server, the real agent, the load generator (this
	// test's process: requests and client long-polls) and the simulated
	// agents (their own process), and by the whole machine (/proc/stat:
	// other work on it is Machine minus the rest); per request, the server's
	// share in ms. Who saturated can be read here: each process's CPU over
	// Seconds is the cores it used.
	CPU LoadCPU `json:"cpu_during_load"`
	// RSS in MiB at 10,000 targets and 100,000 grants, after the load.
	ServerRSSMiB float64 `json:"server_rss_mib"`
	AgentRSSMiB  float64 `json:"agent_rss_mib"`

	// Server restart (kill -9, start) with the big database: from starting
	// the process to the first successful POST /api/v1/requests.
	ServerRestartMS float64 `json:"server_restart_to_first_request_ms"`
	// With BigGrants live grants on the agent's own target: the agent's
	// RSS, and per restart (kill -9, start) the time from starting the
	// agent to a request made while it was dead being active (reconciled).
	BigGrants         int       `json:"agent_target_grants_big"`
	BigKernelElements int       `json:"kernel_elements_big"`
	BigFirstApplyMS   float64   `json:"big_first_apply_ms"`
	AgentBigRSSMiB    float64   `json:"agent_rss_big_mib"`
	ServerBigRSSMiB   float64   `json:"server_rss_big_mib"`
	AgentRestartMS    []float64 `json:"agent_restart_to_reconciled_ms"`
}

// LoadCPU is CPU time in seconds during the open loop (see Load.CPU).
type LoadCPU struct {
	Server      float64 `json:"server_s"`
	Agent       float64 `json:"agent_s"`
	Generator   float64 `json:"generator_s"`
	SimAgents   float64 `json:"sim_agents_s"`
	Machine     float64 `json:"machine_busy_s"`
	Others      float64 `json:"others_s"`
	ServerPerMS float64 `json:"server_ms_per_request"`
	GenPerMS    float64 `json:"generator_ms_per_request"`
	SimsPerMS   float64 `json:"sim_agents_ms_per_request"`
	// AgentExchanges is the HTTP exchanges of the agents (real and
	// simulated: desired-state polls and reports, as the server counted
	// them, jitgate_http_requests_total) per request sent during the load.
	AgentExchanges float64 `json:"agent_exchanges_per_request"`
	// The server's database commits (each one fsync) per request sent,
	// and the writes each carried on average (group commit), from its
	// jitgate_store_write_batch_size.
	CommitsPerRequest float64 `json:"commits_per_request,omitempty"`
	WritesPerCommit   float64 `json:"writes_per_commit,omitempty"`
	// The server's fsyncs of its log (SQLite's syncer) per request, and
	// their mean duration (jitgate_store_sync_duration_seconds).
	SyncsPerRequest float64 `json:"syncs_per_request,omitempty"`
	SyncMeanMS      float64 `json:"sync_mean_ms,omitempty"`
}

// serverCounts are counters of the server's /metrics: the agents'
// desired-state polls and reports it answered (jitgate_http_requests_total),
// and its database commits and the writes they carried
// (jitgate_store_write_batch_size _count and _sum), and its log's syncs and
// their total duration (jitgate_store_sync_duration_seconds); 0 on a server
// without the metric.
type serverCounts struct{ exchanges, commits, writes, syncs, syncSeconds float64 }

// scrapeCounts reads the server's serverCounts from its /metrics.
func scrapeCounts(t *testing.T, l *testlab.Lab) serverCounts {
	t.Helper()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.ClientNS.DialContext(ctx, &net.Dialer{}, network, addr)
		}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, testlab.ServerURL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+l.Token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reading the server's metrics: %s, %v", resp.Status, err)
	}
	var n serverCounts
	for _, line := range strings.Split(b.String(), "\n") {
		var into *float64
		switch {
		case strings.HasPrefix(line, "jitgate_http_requests_total{") &&
			(strings.Contains(line, `/api/v1/agent/desired"`) || strings.Contains(line, `/api/v1/agent/report"`)):
			into = &n.exchanges
		case strings.HasPrefix(line, "jitgate_store_write_batch_size_count "):
			into = &n.commits
		case strings.HasPrefix(line, "jitgate_store_write_batch_size_sum "):
			into = &n.writes
		case strings.HasPrefix(line, "jitgate_store_sync_duration_seconds_count "):
			into = &n.syncs
		case strings.HasPrefix(line, "jitgate_store_sync_duration_seconds_sum "):
			into = &n.syncSeconds
		default:
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		*into += v
	}
	return n
}

// cpuSample is the CPU time of the processes the load test watches, and of
// the machine, at one instant.
type cpuSample struct{ server, agent, generator, sims, machine float64 }

// clockTick is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTick = 100

// procCPU is a process's user+system CPU time in seconds (0 when pid is 0).
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("reading the CPU time of %d: %v", pid, err)
	}
	// The fields after the command (which may hold spaces) start after its
	// closing parenthesis; utime and stime are fields 14 and 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTick
}

// machineCPU is the CPU time all cores spent busy (not idle or waiting for
// I/O) since boot, in seconds.
func machineCPU(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	var busy float64
	for i, v := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy / clockTick
}

func sampleCPU(t *testing.T, server, agent, sims int) cpuSample {
	return cpuSample{server: procCPU(t, server), agent: procCPU(t, agent), generator: procCPU(t, os.Getpid()),
		sims: procCPU(t, sims), machine: machineCPU(t)}
}

// loadCPU is the CPU used between two samples, for n requests.
func loadCPU(a, b cpuSample, n int) LoadCPU {
	c := LoadCPU{Server: b.server - a.server, Agent: b.agent - a.agent, Generator: b.generator - a.generator,
		SimAgents: b.sims - a.sims, Machine: b.machine - a.machine}
	c.Others = max(c.Machine-c.Server-c.Agent-c.Generator-c.SimAgents, 0)
	if n > 0 {
		c.ServerPerMS = 1000 * c.Server / float64(n)
		c.GenPerMS = 1000 * c.Generator / float64(n)
		c.SimsPerMS = 1000 * c.SimAgents / float64(n)
	}
	return c
}

// raiseFileLimit lifts this process's RLIMIT_NOFILE to the most the kernel
// allows (fs.nr_open; root may raise the hard limit): the generator holds
// a connection per request in flight, and a saturated server keeps
// thousands in flight. The processes the test starts inherit it (a program
// that sets the limit itself opts out of Go restoring the original soft
// limit in children).
func raiseFileLimit(t *testing.T) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > lim.Max {
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err == nil {
				lim = syscall.Rlimit{Cur: n, Max: n}
			}
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raising the open-file limit to %d: %v", lim.Max, err)
	}
	t.Logf("open-file limit: %d", lim.Cur)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// loadClient is an API client from the client namespace that keeps enough
// idle connections for the generator's concurrency.
func loadClient(t *testing.T, l *testlab.Lab) *client.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.ClientNS.DialContext(ctx, &net.Dialer{}, network, addr)
		},
		// Every connection back to the pool: the generator's concurrency
		// (requests and long-polls in flight) is not bounded by it, and a
		// connection closed for want of an idle slot is one more dial.
		MaxIdleConnsPerHost: 1 << 20,
		// A bound on connections, so on dials: each dial into the
		// namespace takes an OS thread of its own (testenv.Netns.Do), and a
		// slow server made the generator dial thousands at once (Go's
		// limit of 10,000 threads: "thread exhaustion"). Requests beyond
		// it wait for a connection; their latency still counts from their
		// due time.
		MaxConnsPerHost: 4096,
	}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := client.New(testlab.ServerURL, l.Token, client.WithHTTPClient(&http.Client{Transport: tr, Timeout: 60 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loadServerFlags are the server flags of the load test: a longer
// activation timeout, and the resource caps lifted, since the test is one
// requester on one target from one address, thousands of requests and
// hundreds of long-polls at once: it measures the server, not its limits.
var loadServerFlags = []string{"--activation-timeout", "60s", "--max-live-requests-per-requester", "1000000",
	"--max-live-requests-per-target", "1000000", "--max-conns-per-address", "-1"}

// TestControlPlaneLoad measures what the server sustains on SQLite with
// 10,000 targets and 100,000 live grants, with a real agent confirming every
// request; the memory of server and agent at that size; a restarted
// server's time to serve again; and a restarted agent's time to reconcile
// 100,000 grants on its own target.
func TestControlPlaneLoad(t *testing.T) {
	rate, seconds := envInt("BENCH_LOAD_RATE", defaultLoadRate), envInt("BENCH_LOAD_SECONDS", defaultLoadSeconds)
	spread, targetGrants := envInt("BENCH_LOAD_SPREAD", 1), envInt("BENCH_LOAD_TARGET_GRANTS", loadTargetGrants)
	if os.Getenv("BENCH_PROFILE") != "" {
		path, err := filepath.Abs("results/load_server_cpu.pprof")
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(server.CPUProfileEnv, path)
	}
	raiseFileLimit(t)
	l := testlab.New(t)
	setupJitgate(t, l, loadServerFlags...)
	ctx := context.Background()
	res := Load{Targets: loadTargets, LiveGrants: loadGrants - loadTargetGrants + targetGrants, TargetGrants: targetGrants,
		Rate: float64(rate), Seconds: float64(seconds), Spread: spread, WaitMode: "create"}
	if os.Getenv("BENCH_LOAD_WAIT") == "poll" {
		res.WaitMode = "poll"
	}
	// createWait is the create's own wait in create mode (0 in poll mode).
	createWait := 10 * time.Second
	if res.WaitMode == "poll" {
		createWait = 0
	}

	// Seed with the server stopped; the agent keeps polling and comes back.
	l.Server.Kill()
	start := time.Now()
	err := testlab.SeedDB(ctx, l.DBPath(), testlab.Seed{
		Targets: loadTargets - 1, PerTarget: loadPerTarget, PolicyFrom: target, From: netip.MustParseAddr("198.18.0.1"),
		Target: target, TargetGrants: targetGrants, TargetFrom: netip.MustParseAddr("198.18.0.1"),
		Port: benchPort, Duration: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	res.SeedSeconds = time.Since(start).Seconds()
	t.Logf("seeded %d targets and %d live grants (%d on %s) in %.1f s", loadTargets, res.LiveGrants, targetGrants, target, res.SeedSeconds)
	l.StartServer(loadServerFlags...)
	api := loadClient(t, l)
	l.Eventually("agent applied the seeded grants", 120*time.Second, func() bool {
		tg, err := api.Target(ctx, target)
		return err == nil && tg.Agent.State == "connected" && tg.Agent.AppliedRevision == tg.Agent.Revision
	})

	// Spread mode: the requests go to spread targets in turn, the real
	// agent's and spread-1 seeded ones, each served by a light simulated
	// agent (simAgent: it long-polls and reports every revision applied at
	// once; no kernel), so that the figures are the server's.
	targets := []string{target}
	var creds strings.Builder
	for i := 1; i < min(spread, loadTargets); i++ {
		name := fmt.Sprintf("seed-%06d", i)
		tc, err := api.ReissueEnrollToken(ctx, name)
		if err != nil {
			t.Fatalf("enroll token of %s: %v", name, err)
		}
		er, err := api.WithToken("").Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: name, Version: "bench"})
		if err != nil {
			t.Fatalf("enrolling a simulated agent for %s: %v", name, err)
		}
		fmt.Fprintln(&creds, er.Credential)
		targets = append(targets, name)
	}
	// The simulated agents run in a process of their own, so that their
	// CPU is told apart from the generator's.
	simPid := 0
	if spread > 1 {
		path := filepath.Join(t.TempDir(), "sim-agents")
		if err := os.WriteFile(path, []byte(creds.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("BENCH_LOAD_SIM_CHILD", path)
		sims := l.Start(l.ClientNS, "simulated agents", os.Args[0], "-test.run=^TestLoadSimAgentsChild$", "-test.v")
		l.Eventually("every simulated agent reported once", 2*time.Minute, func() bool {
			return strings.Contains(sims.Output(), "sim agents: all reported")
		})
		simPid = sims.Pid()
		t.Logf("spread over %d targets (%d simulated agents)", len(targets), len(targets)-1)
	}
	// The clients (the generator, this process, and the simulated
	// agents) stand behind the server for the CPU, as on machines of
	// their own: they run niced (clientsNice) during the load, and their
	// CPU is still counted below.
	res.ClientsNice = clientsNice()
	setNice(t, res.ClientsNice, os.Getpid(), simPid)
	// The generator collects garbage at a quarter of the default rate
	// (GOGC=400): it holds little live (its connections, the latencies),
	// and its CPU is the server's neighbour on the two cores.
	defer debug.SetGCPercent(debug.SetGCPercent(loadClientGOGC))
	profile := startServerProfile(t, l)
	stopGenProfile := startGeneratorProfile(t)
	cpuStart := sampleCPU(t, l.Server.Pid(), l.Agent.Pid(), simPid)
	countsStart := scrapeCounts(t, l)

	// The open-loop generator: request i is due at start + i/rate, each
	// from a fresh source, whatever the answers of the earlier ones; both
	// latencies are measured from the due time, not from when the request
	// went out, so that a generator held up by a slow server still counts
	// the wait (no coordinated omission).
	var (
		mu                 sync.Mutex
		creates, activates []time.Duration
		calls, commits     []time.Duration // from each create's Server-Timing (Load.Call)
		waits              []time.Duration
		errs               atomic.Int64
		samples            []string
		late               time.Duration // the most a request went out after its due time
	)
	// Each request runs on an idle worker goroutine, or on a new one when
	// every worker is busy (the loop stays open: a request never waits for
	// a worker). A worker's stack has grown to what a call needs: a fresh
	// goroutine per request grew and copied its stack every time (a tenth
	// of the generator's CPU).
	var pending sync.WaitGroup
	jobs := make(chan func())
	worker := func(job func()) {
		for ok := true; ok; job, ok = <-jobs {
			job()
			pending.Done()
		}
	}
	dispatch := func(job func()) {
		pending.Add(1)
		select {
		case jobs <- job:
		default:
			go worker(job)
		}
	}
	fail := func(format string, args ...any) {
		errs.Add(1)
		mu.Lock()
		if len(samples) < 10 {
			samples = append(samples, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	src := netip.MustParseAddr("198.19.200.0")
	logStart := len(l.Agent.Output())
	interval := time.Second / time.Duration(rate)
	start = time.Now()
	for i := range rate * seconds {
		due := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(due))
		late = max(late, time.Since(due))
		res.Sent++
		src = src.Next()
		src, tg := src, targets[i%len(targets)]
		dispatch(func() {
			req, timing, err := api.CreateRequestTimed(ctx, wire.RequestCreate{Target: tg, Ports: []string{"2222/tcp"},
				Source: src.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: load"}, createWait)
			if err != nil {
				fail("create from %s: %v", src, err)
				return
			}
			created := time.Since(due)
			call := created - timing["wait"]
			for req.State == "pending" && time.Since(due) < 30*time.Second {
				if req, err = api.WaitRequest(ctx, req.ID, "pending", 10*time.Second); err != nil {
					fail("waiting for %s: %v", req.ID, err)
					return
				}
			}
			if req.State != "active" {
				fail("request %s from %s: %s (%s)", req.ID, src, req.State, req.Message)
				return
			}
			activated := time.Since(due)
			mu.Lock()
			creates, activates = append(creates, created), append(activates, activated)
			calls, commits, waits = append(calls, call), append(commits, timing["commit"]), append(waits, timing["wait"])
			mu.Unlock()
		})
	}
	pending.Wait()
	close(jobs)
	setNice(t, 0, os.Getpid(), simPid) // the restarts below start the server from this process
	profile()
	stopGenProfile()
	res.CPU = loadCPU(cpuStart, sampleCPU(t, l.Server.Pid(), l.Agent.Pid(), simPid), res.Sent)
	counts := scrapeCounts(t, l)
	res.CPU.AgentExchanges = (counts.exchanges - countsStart.exchanges) / float64(res.Sent)
	t.Logf("agents' HTTP exchanges (desired-state polls and reports): %.2f per request", res.CPU.AgentExchanges)
	if commits := counts.commits - countsStart.commits; commits > 0 {
		res.CPU.CommitsPerRequest = commits / float64(res.Sent)
		res.CPU.WritesPerCommit = (counts.writes - countsStart.writes) / commits
		t.Logf("database: %.2f commits per request, %.2f writes per commit", res.CPU.CommitsPerRequest, res.CPU.WritesPerCommit)
	}
	if syncs := counts.syncs - countsStart.syncs; syncs > 0 {
		res.CPU.SyncsPerRequest = syncs / float64(res.Sent)
		res.CPU.SyncMeanMS = 1000 * (counts.syncSeconds - countsStart.syncSeconds) / syncs
		t.Logf("database: %.2f syncs per request, %.2f ms each on average", res.CPU.SyncsPerRequest, res.CPU.SyncMeanMS)
	}
	t.Logf("CPU during the load (s): server %.2f (%.3f ms/request), agent %.2f, generator %.2f (%.3f ms/request), simulated agents %.2f (%.3f ms/request); machine busy %.2f, other work %.2f",
		res.CPU.Server, res.CPU.ServerPerMS, res.CPU.Agent, res.CPU.Generator, res.CPU.GenPerMS, res.CPU.SimAgents, res.CPU.SimsPerMS, res.CPU.Machine, res.CPU.Others)
	t.Logf("generator: at most %s behind its schedule", late.Round(time.Microsecond))
	res.GeneratorLateMS = ms(late)
	res.Activated, res.Errors, res.ErrorSamples = len(activates), int(errs.Load()), samples
	res.ActivatedRate = float64(res.Activated) / float64(seconds)
	res.Create, res.Activate = summarize(creates), summarize(activates)
	res.Call, res.ServerCommit, res.ServerWait = summarize(calls), summarize(commits), summarize(waits)
	t.Logf("load: wait mode %s", res.WaitMode)
	t.Logf("load: %d/s for %d s: %d sent, %d active (%.1f/s), %d errors %v", rate, seconds, res.Sent, res.Activated, res.ActivatedRate, res.Errors, samples)
	t.Logf("create call:      %s", res.Create)
	t.Logf("create to active: %s", res.Activate)
	t.Logf("API call:         %s (the create's answer minus the server's wait, Server-Timing)", res.Call)
	t.Logf("server commit:    %s; server wait: %s", res.ServerCommit, res.ServerWait)
	t.Logf("load: API call p50 %.1f / p99 %.1f ms; activation p50 %.1f / p99 %.1f ms",
		res.Call.P50, res.Call.P99, res.Activate.P50, res.Activate.P99)
	res.AgentApply = summarize(applyTimes(l.Agent.Output()[logStart:]))
	t.Logf("agent apply:      %s", res.AgentApply)
	res.KernelElements = kernelElements(t, l)
	res.ServerRSSMiB, res.AgentRSSMiB = rssMiB(t, l.Server), rssMiB(t, l.Agent)
	t.Logf("kernel holds %d elements; RSS: server %.1f MiB, agent %.1f MiB", res.KernelElements, res.ServerRSSMiB, res.AgentRSSMiB)

	if os.Getenv("BENCH_LOAD_NO_RESTARTS") != "" {
		writeResult(t, "load", res) // the load alone: no restarts measured
		return
	}

	// 100,000 grants on the agent's own target.
	l.Server.Kill()
	have := targetGrants + res.Activated
	res.BigGrants = max(have, loadBigGrants)
	if have < loadBigGrants {
		err := testlab.SeedDB(ctx, l.DBPath(), testlab.Seed{Target: target, TargetGrants: loadBigGrants - have,
			TargetFrom: netip.MustParseAddr("198.18.100.0"), Port: benchPort, Duration: time.Hour, Prefix: "big"})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The server restart: from starting the process to the first request
	// that succeeds.
	start = time.Now()
	l.StartServer(loadServerFlags...)
	api = loadClient(t, l)
	probe := netip.MustParseAddr("203.0.113.1")
	for {
		_, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: probe.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: restart"})
		if err == nil {
			break
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no successful request 60 s after the server started: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.ServerRestartMS = ms(time.Since(start))
	t.Logf("server restart (%d targets, %d grants on %s): first successful request after %.0f ms", loadTargets, res.BigGrants, target, res.ServerRestartMS)
	applyStart := time.Now()
	l.Eventually("agent applied 100,000 grants", 300*time.Second, func() bool {
		tg, err := api.Target(ctx, target)
		return err == nil && tg.Agent.AppliedRevision == tg.Agent.Revision
	})
	res.BigFirstApplyMS = ms(time.Since(applyStart))
	res.BigKernelElements = kernelElements(t, l)
	res.AgentBigRSSMiB, res.ServerBigRSSMiB = rssMiB(t, l.Agent), rssMiB(t, l.Server)
	t.Logf("agent applied %d grants in %.0f ms (kernel: %d elements); RSS: agent %.1f MiB, server %.1f MiB",
		res.BigGrants+1, res.BigFirstApplyMS, res.BigKernelElements, res.AgentBigRSSMiB, res.ServerBigRSSMiB)
	for i := range loadRestarts {
		l.Agent.Kill()
		probe = probe.Next()
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: probe.String(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: agent restart"})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		l.StartAgent("")
		for req.State == "pending" && time.Since(start) < 120*time.Second {
			if req, err = api.WaitRequest(ctx, req.ID, "pending", 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if req.State != "active" {
			t.Fatalf("request %s after the agent restart: %s (%s)", req.ID, req.State, req.Message)
		}
		res.AgentRestartMS = append(res.AgentRestartMS, ms(time.Since(start)))
		t.Logf("agent restart %d with %d grants: reconciled (a request made while it was dead is active) after %.0f ms", i+1, res.BigGrants, res.AgentRestartMS[i])
	}
	writeResult(t, "load", res)
}

// applyTimes reads the took= of the agent's "applied" log lines.
func applyTimes(log string) []time.Duration {
	var ds []time.Duration
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "msg=applied") {
			continue
		}
		_, after, ok := strings.Cut(line, " took=")
		if !ok {
			continue
		}
		if d, err := time.ParseDuration(strings.Fields(after)[0]); err == nil {
			ds = append(ds, d)
		}
	}
	return ds
}

// kernelElements counts the grant-set elements in the server namespace.
func kernelElements(t *testing.T, l *testlab.Lab) int {
	t.Helper()
	be, err := nft.New(nft.WithNetNSFd(l.ServerNS.FD()))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	st, err := be.State(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return len(st.Elements)
}

func rssMiB(t *testing.T, p *testlab.Proc) float64 {
	t.Helper()
	b, err := p.RSS()
	if err != nil {
		t.Fatal(err)
	}
	return float64(b) / (1 << 20)
}

// TestLoadSimAgentsChild is the simulated agents of TestControlPlaneLoad:
// run as a separate process with BENCH_LOAD_SIM_CHILD naming a file of
// agent credentials (one a line), it runs a light simulated agent for each
// (simAgent) until it is killed, and says "sim agents: all reported" once
// every one has reported its first revision. Without the variable it does
// nothing: it is not a test of its own.
func TestLoadSimAgentsChild(t *testing.T) {
	path := os.Getenv("BENCH_LOAD_SIM_CHILD")
	if path == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	creds := strings.Fields(string(b))
	debug.SetGCPercent(loadClientGOGC) // as the generator: see TestControlPlaneLoad
	// One kept-alive connection per agent: no dial per poll.
	tr := &http.Transport{MaxIdleConnsPerHost: 2*len(creds) + 16, IdleConnTimeout: 5 * time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	var left atomic.Int64
	left.Store(int64(len(creds)))
	var wg sync.WaitGroup
	for _, cred := range creds {
		c, err := client.New(testlab.ServerURL, cred, client.WithHTTPClient(hc))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			simAgent(context.Background(), c, func() {
				if left.Add(-1) == 0 {
					fmt.Println("sim agents: all reported")
				}
			})
		})
	}
	wg.Wait()
}

// simAgent is a light simulated agent: it long-polls its target's desired
// state as the real agent does (after and since the revision it applied)
// and reports each revision applied at once, with no kernel behind it; as
// the real agent, its report carries its next poll (one exchange per
// change), and against a server that answers such a report 204 it polls on
// its own. first is called after its first report.
func simAgent(ctx context.Context, c *client.Client, first func()) {
	const wait = 25 * time.Second
	var applied, pending int64 // pending: applied, not yet reported
	for ctx.Err() == nil {
		var (
			ds  wire.DesiredState
			err error
		)
		if pending > 0 {
			// The first report's poll does not wait: first says the
			// agent is ready as soon as its report is recorded.
			w := wait
			if applied == 0 {
				w = 0
			}
			var answered bool
			ds, answered, err = c.ReportPoll(ctx, wire.AgentReport{Revision: pending, Version: "bench"}, pending, pending, w)
			if err == nil {
				if applied == 0 && first != nil {
					first()
				}
				applied, pending = pending, 0
				if !answered {
					ds, err = c.DesiredSince(ctx, applied, applied, wait)
				}
			}
		} else {
			ds, err = c.DesiredSince(ctx, applied, applied, wait)
		}
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
			continue
		}
		if ds.Revision != applied {
			pending = ds.Revision
		}
	}
}

// startServerProfile takes a CPU profile of the server until the returned
// func is called, into results/load_server_cpu.pprof, when BENCH_PROFILE is
// set (the server was started with server.CPUProfileEnv; SIGUSR1 toggles).
func startServerProfile(t *testing.T, l *testlab.Lab) func() {
	if os.Getenv("BENCH_PROFILE") == "" {
		return func() {}
	}
	if err := syscall.Kill(l.Server.Pid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := syscall.Kill(l.Server.Pid(), syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		t.Logf("server CPU profile: %s (go tool pprof -top bench/results/load_server_cpu.pprof)", os.Getenv(server.CPUProfileEnv))
	}
}

// loadClientGOGC is the garbage collector's setting in the load generator
// and the simulated agents (GOGC; the runtime's default is 100).
const loadClientGOGC = 400

// startGeneratorProfile takes a CPU profile of this process (the load
// generator) until the returned func is called, into
// results/load_generator_cpu.pprof, when BENCH_PROFILE is set.
func startGeneratorProfile(t *testing.T) func() {
	if os.Getenv("BENCH_PROFILE") == "" {
		return func() {}
	}
	f, err := os.Create("results/load_generator_cpu.pprof")
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	}
}

// clientsNice is the niceness of the load's clients (BENCH_LOAD_NICE, 10 by
// default; 0 runs them at the server's). Server, generator and simulated
// agents share one two-core machine, where in a deployment the clients are
// on others: at the same niceness the kernel shares the cores between them
// evenly, and the clients' bursts delay the server they measure.
func clientsNice() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_LOAD_NICE")); err == nil && v >= 0 && v <= 19 {
		return v
	}
	return 10
}

// setNice sets the niceness of every thread of the processes (pid 0 is
// skipped): setpriority on a process sets only its main thread's on Linux,
// and each new thread takes its creator's.
func setNice(t *testing.T, nice int, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if pid == 0 {
			continue
		}
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatalf("threads of %d: %v", pid, err)
		}
		for _, task := range tasks {
			tid, err := strconv.Atoi(task.Name())
			if err != nil {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && err != syscall.ESRCH {
				t.Fatalf("setting niceness %d on thread %d of %d: %v", nice, tid, pid, err)
			}
		}
	}
}
