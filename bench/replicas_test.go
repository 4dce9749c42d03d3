//go:build bench

package bench

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, to read the lease table

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// Defaults of the replica benchmarks' knobs (environment variables).
const (
	defaultWakeTrials      = 100 // BENCH_WAKE_TRIALS
	defaultRateWorkers     = 8   // BENCH_RATE_WORKERS: closed-loop requesters
	defaultRateSeconds     = 20  // BENCH_RATE_SECONDS per configuration
	defaultFailoverTrials  = 5   // BENCH_FAILOVER_TRIALS
	replicaActivationLimit = 30 * time.Second
)

// nsClient is an admin API client for url (one replica, or a
// comma-separated list) that dials from the client namespace.
func nsClient(t *testing.T, l *testlab.Lab, url string) *client.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.ClientNS.DialContext(ctx, &net.Dialer{}, network, addr)
		},
		MaxIdleConnsPerHost: 64,
	}
	t.Cleanup(tr.CloseIdleConnections)
	c, err := client.New(url, l.Token, client.WithHTTPClient(&http.Client{Transport: tr, Timeout: 60 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// replicaSetup starts n replicas on the PostgreSQL database (or, with
// database empty, one server on SQLite), enrolls the agent with every
// replica's address (it polls the first), and protects benchPort. It
// returns one client per replica.
func replicaSetup(t *testing.T, l *testlab.Lab, database string, n int, flags ...string) []*client.Client {
	t.Helper()
	if database == "" {
		l.StartServer(flags...)
	} else {
		l.StartReplicas(database, n, flags...)
	}
	api := l.APIClient()
	ctx := context.Background()
	created, err := api.CreateTarget(ctx, wire.TargetCreate{Name: target})
	if err != nil {
		t.Fatal(err)
	}
	l.StartAgent(created.EnrollToken)
	waitAgent(t, l, api)
	if _, err := api.SetPolicy(ctx, target, wire.Policy{Rules: []wire.PortRule{
		{Port: benchPort, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, l, api)
	if database == "" {
		return []*client.Client{nsClient(t, l, testlab.ServerURL)}
	}
	var cs []*client.Client
	for _, r := range l.Replicas {
		cs = append(cs, nsClient(t, l, r.URL()))
	}
	return cs
}

// ReplicaWake is what TestReplicaWake writes to results/replica_wake.json.
type ReplicaWake struct {
	Replicas int `json:"replicas"`
	Trials   int `json:"trials"`
	// From the POST on replica b to the first connection through the grant
	// that the agent, long-polling replica a, applied.
	RequestToOpen Summary `json:"request_on_b_to_open_via_agent_on_a"`
	Call          Summary `json:"post_call_on_b"`
}

// TestReplicaWake measures the cross-replica wake end to end: three real
// servers on one real PostgreSQL, the agent long-polling replica a, each
// request made through replica b's API, timed until a connection from the
// request's source completes (the kernel element is there, so the agent
// was woken through the change feed and applied it).
func TestReplicaWake(t *testing.T) {
	trials := envInt("BENCH_WAKE_TRIALS", defaultWakeTrials)
	l := testlab.New(t)
	pool := clientPool()
	if trials+5 > len(pool) {
		t.Fatalf("BENCH_WAKE_TRIALS=%d: at most %d", trials, len(pool)-5)
	}
	l.AddClientAddrs(pool...)
	serve(t, l.ServerNS, benchPort)
	cs := replicaSetup(t, l, testenv.Postgres(t), 3)
	b := cs[1]
	var opens, calls []time.Duration
	for i := range 5 + trials {
		src := pool[i]
		p := newPoller(l.ClientNS, src, replicaActivationLimit)
		t0 := time.Now()
		close(p.start)
		if _, err := b.CreateRequest(context.Background(), wire.RequestCreate{Target: target, Ports: []string{fmt.Sprintf("%d/tcp", benchPort)},
			Source: src.String(), Duration: wire.Duration(time.Hour), Reason: "bench: wake across replicas"}); err != nil {
			t.Fatalf("trial %d: %v", i, err)
		}
		call := time.Since(t0)
		r := <-p.done
		if r.err != nil {
			t.Fatalf("trial %d from %s: %v", i, src, r.err)
		}
		if i >= 5 {
			opens, calls = append(opens, r.at.Sub(t0)), append(calls, call)
		}
	}
	res := ReplicaWake{Replicas: 3, Trials: trials, RequestToOpen: summarize(opens), Call: summarize(calls)}
	t.Logf("request on b → open through the agent on a: %s", res.RequestToOpen)
	t.Logf("POST call on b: %s", res.Call)
	writeResult(t, "replica_wake", res)
}

// RateResult is one configuration of TestReplicaRequestRate.
type RateResult struct {
	Config    string  `json:"config"`
	Replicas  int     `json:"replicas"`
	Workers   int     `json:"workers"`
	Seconds   float64 `json:"seconds"`
	Completed int     `json:"completed"`
	// Requests seen active per second of the run (closed loop: each
	// worker asks again once its request is active).
	Rate     float64 `json:"active_per_s"`
	Errors   int     `json:"errors"`
	Activate Summary `json:"request_to_active"`
}

// TestReplicaRequestRate measures the sustained request rate, request →
// active (the agent applied and reported), closed loop with
// BENCH_RATE_WORKERS requesters for BENCH_RATE_SECONDS, in one run on
// three configurations: SQLite (one server), PostgreSQL with one replica,
// PostgreSQL with three replicas (worker w asks replica w mod 3; the agent
// polls replica a).
func TestReplicaRequestRate(t *testing.T) {
	workers, seconds := envInt("BENCH_RATE_WORKERS", defaultRateWorkers), envInt("BENCH_RATE_SECONDS", defaultRateSeconds)
	var results []RateResult
	for _, cfg := range []struct {
		name     string
		postgres bool
		replicas int
	}{{"sqlite", false, 1}, {"postgres-1", true, 1}, {"postgres-3", true, 3}} {
		t.Run(cfg.name, func(t *testing.T) {
			l := testlab.New(t)
			database := ""
			if cfg.postgres {
				database = testenv.Postgres(t)
			}
			cs := replicaSetup(t, l, database, cfg.replicas, loadServerFlags...)
			var (
				mu     sync.Mutex
				durs   []time.Duration
				errs   int
				next   atomic.Uint32
				wg     sync.WaitGroup
				ctx    = context.Background()
				end    = time.Now().Add(time.Duration(seconds) * time.Second)
				start  = time.Now()
				base   = netip.MustParseAddr("198.18.0.0").As4()
				source = func() string {
					n := next.Add(1)
					a := base
					a[1], a[2], a[3] = byte(n>>16), byte(n>>8), byte(n)
					return netip.AddrFrom4(a).String()
				}
			)
			for w := range workers {
				c := cs[w%len(cs)]
				wg.Go(func() {
					for time.Now().Before(end) {
						t0 := time.Now()
						req, err := c.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{fmt.Sprintf("%d/tcp", benchPort)},
							Source: source(), Duration: wire.Duration(10 * time.Minute), Reason: "bench: rate"})
						for err == nil && req.State == "pending" && time.Since(t0) < replicaActivationLimit {
							req, err = c.WaitRequest(ctx, req.ID, "pending", 10*time.Second)
						}
						mu.Lock()
						if err != nil || req.State != "active" {
							errs++
						} else {
							durs = append(durs, time.Since(t0))
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start).Seconds()
			r := RateResult{Config: cfg.name, Replicas: cfg.replicas, Workers: workers, Seconds: elapsed, Completed: len(durs),
				Rate: float64(len(durs)) / elapsed, Errors: errs, Activate: summarize(durs)}
			t.Logf("%s: %d active in %.1f s = %.1f/s, %d errors; request → active %s", cfg.name, r.Completed, elapsed, r.Rate, errs, r.Activate)
			results = append(results, r)
		})
	}
	writeResult(t, "replica_rate", results)
}

// ReplicaFailover is what TestReplicaFailover writes to
// results/replica_failover.json.
type ReplicaFailover struct {
	Trials int `json:"trials"`
	// kill -9 of the sweeper's lease holder → another replica holds it,
	// and → a grant that ended meanwhile is marked expired (the sweeper ran).
	LeaseTakeover Summary `json:"singleton_lease_takeover"`
	SweeperRan    Summary `json:"singleton_kill_to_expiry_recorded"`
	// kill -9 of the replica the agent polls, then a request through the
	// other → a connection through the grant the agent applied.
	AgentFailover Summary `json:"agent_kill_to_new_grant_open"`
}

// TestReplicaFailover measures, with two real servers on one PostgreSQL:
// the singleton jobs' failover (kill -9 of the sweeper's lease holder →
// another replica holds the lease, and → a 1 s grant that ended meanwhile
// is recorded expired), and the agent's (kill -9 of the replica it polls →
// a request made through the other replica is open in the kernel: the agent
// moved and applied it). Each killed replica is restarted before the next
// trial; the agent alternates between the two.
func TestReplicaFailover(t *testing.T) {
	trials := envInt("BENCH_FAILOVER_TRIALS", defaultFailoverTrials)
	l := testlab.New(t)
	pool := clientPool()
	l.AddClientAddrs(pool...)
	serve(t, l.ServerNS, benchPort)
	database := testenv.Postgres(t)
	cs := replicaSetup(t, l, database, 2)
	db, err := sql.Open("pgx", database)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	holder := func() string {
		var h string
		db.QueryRow(`SELECT holder FROM leases WHERE name = 'sweeper' AND expires_at > $1`, time.Now().UnixMilli()).Scan(&h)
		return h
	}
	index := map[string]int{"a": 0, "b": 1}
	ctx := context.Background()
	var takeovers, sweeps, agents []time.Duration
	src := 0
	for i := range trials {
		// Singleton jobs.
		var old string
		l.Eventually("a sweeper lease holder", 20*time.Second, func() bool { old = holder(); return old != "" })
		victim, other := l.Replicas[index[old]], cs[1-index[old]]
		short, err := other.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{fmt.Sprintf("%d/tcp", benchPort)},
			Source: pool[src].String(), Duration: wire.Duration(time.Second), Reason: "bench: ends during the failover"})
		src++
		if err != nil {
			t.Fatal(err)
		}
		victim.Kill()
		t0 := time.Now()
		l.Eventually("the sweeper lease taken over", 30*time.Second, func() bool { h := holder(); return h != "" && h != old })
		takeovers = append(takeovers, time.Since(t0))
		l.Eventually("the short grant recorded expired", 30*time.Second, func() bool {
			got, err := other.Request(ctx, short.ID)
			return err == nil && got.State == "expired"
		})
		sweeps = append(sweeps, time.Since(t0))
		victim.Start()

		// The agent: it polls a at first, then whichever survived.
		victim, other = l.Replicas[i%2], cs[1-i%2]
		p := newPoller(l.ClientNS, pool[src], replicaActivationLimit)
		victim.Kill()
		t0 = time.Now()
		close(p.start)
		if _, err := other.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{fmt.Sprintf("%d/tcp", benchPort)},
			Source: pool[src].String(), Duration: wire.Duration(time.Hour), Reason: "bench: agent failover"}); err != nil {
			t.Fatal(err)
		}
		src++
		r := <-p.done
		if r.err != nil {
			t.Fatalf("trial %d: %v", i, r.err)
		}
		agents = append(agents, r.at.Sub(t0))
		victim.Start()
		t.Logf("trial %d: lease takeover %s, expiry recorded %s, agent failover %s", i, takeovers[i].Round(time.Millisecond),
			sweeps[i].Round(time.Millisecond), agents[i].Round(time.Millisecond))
	}
	res := ReplicaFailover{Trials: trials, LeaseTakeover: summarize(takeovers), SweeperRan: summarize(sweeps), AgentFailover: summarize(agents)}
	t.Logf("lease takeover: %s", res.LeaseTakeover)
	t.Logf("kill → expiry recorded: %s", res.SweeperRan)
	t.Logf("agent failover: %s", res.AgentFailover)
	writeResult(t, "replica_failover", res)
}
