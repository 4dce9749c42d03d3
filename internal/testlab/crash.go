package testlab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// CrashSeedEnv names the environment variable that replays a crash run.
const CrashSeedEnv = "JITGATE_CRASH_SEED"

// The points of a grant's life at which a crash run kills processes.
// "delta" and "revoke" aim at the agent's incremental path: a kill between a
// delta reaching the kernel and its report, and between a revocation's
// delta and its report (whose confirmation must then mean the port closed).
var crashPoints = []string{"request", "apply", "expiry", "reconcile", "delta", "revoke"}

// CrashConfig configures Lab.RunCrashes. The lab's server must be running
// with the default activation timeout, its agent enrolled and running, and
// Target's policy must protect Port/tcp (closed to everyone not granted),
// with a listener on it (the lab's sshd listens on 22).
type CrashConfig struct {
	Trials int
	// Seed drives every random choice; 0 takes CrashSeedEnv, else a random
	// seed. The seed in use is logged and reported for replay.
	Seed   uint64
	Target string
	Port   uint16
	// Sources are client addresses used in turn, one grant at a time each.
	Sources []netip.Addr
	// Logf receives progress and the seed (testing.T.Logf).
	Logf func(format string, args ...any)
}

// CrashReport is what a crash run did and found.
type CrashReport struct {
	Seed   uint64         `json:"seed"`
	Trials int            `json:"trials"`
	Points map[string]int `json:"trials_per_point"`
	Kills  map[string]int `json:"kills"` // server, agent; "replica NAME" in replica mode
	// Requests the harness asked for; of them, calls whose answer a kill
	// cut off (the server may or may not have recorded them: the listing
	// checks cover them); and the state every recorded request ended in.
	Requests    int            `json:"requests"`
	LostAnswers int            `json:"lost_answers"`
	Ended       map[string]int `json:"ended"`
	// Packet checks made: open when the API said active, closed one second
	// past every deadline.
	OpenChecks   int           `json:"open_checks"`
	ClosedChecks int           `json:"closed_checks"`
	Violations   []string      `json:"violations"`
	Duration     time.Duration `json:"duration_ns"`
}

// crashSlack is how long past the activation timeout a request may stay
// pending (the sweeper's wake-up, a server restart).
const crashSlack = 3 * time.Second

// RunCrashes runs cfg.Trials short grant lifecycles, killing the server
// and/or the agent with SIGKILL at a random point of each (during the
// request, during the agent's apply, around the deadline, during an
// agent's reconcile after a restart) and restarting them. It checks with
// real packets that no port is open for anyone past its deadline + 1 s and
// that no request reported active is closed, and through the API that every
// request ends active, expired, revoked or failed with a message, never
// pending past the activation timeout. Violations are reported, not fatal.
func (l *Lab) RunCrashes(cfg CrashConfig) CrashReport {
	l.tb.Helper()
	seed := cfg.Seed
	if seed == 0 {
		if v, err := strconv.ParseUint(os.Getenv(CrashSeedEnv), 10, 64); err == nil && v != 0 {
			seed = v
		} else {
			seed = rand.Uint64()
		}
	}
	cfg.Logf("crash run: %d trials, seed %d (replay with %s=%d)", cfg.Trials, seed, CrashSeedEnv, seed)
	r := &crashRun{l: l, cfg: cfg, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), api: l.APIClient(),
		deadline: map[netip.Addr]time.Time{},
		rep:      CrashReport{Seed: seed, Trials: cfg.Trials, Points: map[string]int{}, Kills: map[string]int{}, Ended: map[string]int{}}}
	start := time.Now()
	for i := range cfg.Trials {
		r.trial(i)
	}
	// Every grant's deadline + 1 s, then the final checks.
	for src := range r.deadline {
		r.checkClosed(src, true)
	}
	r.checkNoneStuck(true)
	r.rep.Duration = time.Since(start)
	return r.rep
}

type crashRun struct {
	l   *Lab
	cfg CrashConfig
	rng *rand.Rand
	api *client.Client
	rep CrashReport
	// deadline is, per source, the latest deadline any request from it may
	// hold (a request whose answer was lost counts with its ask).
	deadline map[netip.Addr]time.Time
}

func (r *crashRun) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.rep.Violations = append(r.rep.Violations, msg)
	r.cfg.Logf("VIOLATION (seed %d): %s", r.rep.Seed, msg)
}

// kill kills the victims ("server", "agent" or "both") and returns a
// function that restarts them (server first). With replicas (replica
// mode, Lab.StartReplicas) "server" is one replica chosen at random: the
// one the agent polls, the one the client's next call reaches, or another
// (the holder of the singleton leases, perhaps).
func (r *crashRun) kill(victim string) func() {
	server, agent := victim != "agent", victim != "server"
	if agent {
		r.l.Agent.Kill()
		r.rep.Kills["agent"]++
	}
	var rep *Replica
	if server && len(r.l.Replicas) > 0 {
		rep = r.l.Replicas[r.rng.IntN(len(r.l.Replicas))]
		rep.Kill()
		r.rep.Kills["replica "+rep.Name]++
	} else if server {
		r.l.Server.Kill()
		r.rep.Kills["server"]++
	}
	return func() {
		if rep != nil {
			rep.Start()
			r.api = r.l.APIClient()
		} else if server {
			r.l.StartServer()
			r.api = r.l.APIClient()
		}
		if agent {
			r.l.StartAgent("")
		}
	}
}

func (r *crashRun) jitter(d time.Duration) { time.Sleep(r.dur(d)) }

// dur is a random duration in [0, d].
func (r *crashRun) dur(d time.Duration) time.Duration {
	return time.Duration(r.rng.Int64N(int64(d) + 1))
}

// request asks for d of access from src. A call cut short by a kill
// returns ok=false; its ask still bounds the source's deadline.
func (r *crashRun) request(src netip.Addr, d time.Duration) (wire.Request, bool) {
	r.rep.Requests++
	if dl := time.Now().Add(d + 100*time.Millisecond); dl.After(r.deadline[src]) {
		r.deadline[src] = dl
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := r.api.CreateRequest(ctx, wire.RequestCreate{Target: r.cfg.Target, Ports: []string{fmt.Sprintf("%d/tcp", r.cfg.Port)},
		Source: src.String(), Duration: wire.Duration(d), Reason: "crash harness"})
	if err != nil {
		r.rep.LostAnswers++
		return wire.Request{}, false
	}
	return req, true
}

func (r *crashRun) trial(i int) {
	cfg := r.cfg
	src := cfg.Sources[i%len(cfg.Sources)]
	r.checkClosed(src, true) // its previous grant is over (waits if needed)
	point := crashPoints[r.rng.IntN(len(crashPoints))]
	victim := []string{"server", "agent", "both"}[r.rng.IntN(3)]
	d := time.Second + r.dur(500*time.Millisecond)
	r.rep.Points[point]++
	var (
		req     wire.Request
		ok      bool
		restart func()
		revoked bool
	)
	switch point {
	case "request":
		// Kill while the request is in flight or just committed.
		var wg sync.WaitGroup
		wg.Go(func() { req, ok = r.request(src, d) })
		r.jitter(4 * time.Millisecond)
		restart = r.kill(victim)
		wg.Wait()
	case "apply":
		// Kill while the agent applies (or the server records its report).
		req, ok = r.request(src, d)
		r.jitter(3 * time.Millisecond)
		restart = r.kill(victim)
	case "expiry":
		req, ok = r.request(src, d)
		if ok {
			req = r.follow(req, src)
			time.Sleep(time.Until(req.ExpiresAt.Add(-150 * time.Millisecond)))
			r.jitter(300 * time.Millisecond)
		}
		restart = r.kill(victim)
	case "delta":
		// Kill as soon as the kernel holds the grant (a delta applied),
		// before or while the agent reports it.
		req, ok = r.request(src, d)
		if ok {
			r.waitOpen(src, 2*time.Second)
		}
		restart = r.kill(victim)
	case "revoke":
		// Revoke an active grant and kill while its removal delta is
		// applied and reported.
		req, ok = r.request(src, d)
		if ok {
			req = r.follow(req, src)
		}
		if !ok || req.State != "active" {
			restart = r.kill(victim)
			break
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r.api.Revoke(ctx, req.ID, "crash harness") // the answer may be cut off by the kill
		})
		r.jitter(4 * time.Millisecond)
		restart = r.kill(victim)
		wg.Wait()
		revoked = true
	case "reconcile":
		// A request made while the agent is dead; kill again during the
		// restarted agent's first reconcile.
		r.l.Agent.Kill()
		r.rep.Kills["agent"]++
		req, ok = r.request(src, d)
		r.l.StartAgent("")
		r.jitter(15 * time.Millisecond)
		restart = r.kill(victim)
	}
	r.jitter(300 * time.Millisecond)
	restart()
	switch {
	case revoked:
		// req is its state before the revocation: re-read, not followed.
		r.checkRemoval(req, src)
	case ok:
		r.follow(req, src)
	}
	r.checkNoneStuck(false)
	r.checkDue()
	if (i+1)%50 == 0 {
		r.cfg.Logf("crash run: %d/%d trials, %d violations", i+1, cfg.Trials, len(r.rep.Violations))
	}
}

// follow waits until req leaves pending (at most the activation timeout
// plus slack), checks that an active request is open at that instant, and
// returns its latest state.
func (r *crashRun) follow(req wire.Request, src netip.Addr) wire.Request {
	limit := time.Now().Add(DefaultActivationTimeout + crashSlack)
	for req.State == "pending" || req.State == "" {
		if time.Now().After(limit) {
			r.violation("request %s from %s still pending %s after the agent and server were back", req.ID, src, DefaultActivationTimeout+crashSlack)
			return req
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		next, err := r.api.WaitRequest(ctx, req.ID, "pending", 2*time.Second)
		cancel()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			r.api = r.l.APIClient()
			continue
		}
		req = next
	}
	switch req.State {
	case "active":
		if time.Until(req.ExpiresAt) > 100*time.Millisecond {
			r.rep.OpenChecks++
			if !r.l.CanConnect(src, ServerIP, r.cfg.Port) {
				r.violation("request %s reported active, but %s cannot connect to port %d", req.ID, src, r.cfg.Port)
			}
		}
	case "failed":
		if req.Message == "" {
			r.violation("request %s failed without a reason", req.ID)
		}
	}
	return req
}

// waitOpen waits (at most limit) until src can connect to the port.
func (r *crashRun) waitOpen(src netip.Addr, limit time.Duration) {
	for end := time.Now().Add(limit); time.Now().Before(end); {
		if r.l.CanConnect(src, ServerIP, r.cfg.Port) {
			return
		}
	}
}

// checkRemoval follows a request whose revocation may have been cut off by
// a kill: once the server says the removal is confirmed (the agent
// reported a revision without the grant), src must not connect any more.
// A revocation the kill lost leaves the request active, which expires.
func (r *crashRun) checkRemoval(req wire.Request, src netip.Addr) {
	limit := time.Now().Add(DefaultActivationTimeout + crashSlack)
	for time.Now().Before(limit) && time.Now().Before(req.ExpiresAt) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		got, err := r.api.Request(ctx, req.ID)
		cancel()
		switch {
		case err != nil:
			r.api = r.l.APIClient()
		case got.State == "active":
			return // the revocation was lost with the server: nothing to confirm
		case got.Removal != nil && got.Removal.State == "confirmed":
			r.rep.ClosedChecks++
			if r.l.CanConnect(src, ServerIP, r.cfg.Port) {
				r.violation("request %s: removal confirmed, but %s still connects to port %d", req.ID, src, r.cfg.Port)
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkDue checks every source whose deadline + 1 s has passed.
func (r *crashRun) checkDue() {
	for src, dl := range r.deadline {
		if time.Now().After(dl.Add(time.Second)) {
			r.checkClosed(src, false)
		}
	}
}

// checkClosed checks that src cannot connect once its deadline + 1 s has
// passed, waiting for that instant when wait is set.
func (r *crashRun) checkClosed(src netip.Addr, wait bool) {
	dl, ok := r.deadline[src]
	if !ok {
		return
	}
	due := dl.Add(time.Second)
	if time.Now().Before(due) {
		if !wait {
			return
		}
		time.Sleep(time.Until(due))
	}
	r.rep.ClosedChecks++
	if r.l.CanConnect(src, ServerIP, r.cfg.Port) {
		r.violation("%s can connect to port %d %s after its last deadline", src, r.cfg.Port, time.Since(dl).Round(time.Millisecond))
	}
	delete(r.deadline, src)
}

// checkNoneStuck lists the target's requests: none may be pending longer
// than the activation timeout plus slack, and every failed one must say
// why. With final set it also counts how each request ended.
func (r *crashRun) checkNoneStuck(final bool) {
	var (
		reqs []wire.Request
		err  error
	)
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reqs, err = r.api.Requests(ctx, client.RequestFilter{Target: r.cfg.Target, Active: !final})
		cancel()
		if err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
		r.api = r.l.APIClient()
	}
	if err != nil {
		r.violation("listing requests: %v", err)
		return
	}
	if final {
		// Wait until nothing is pending any more.
		limit := time.Now().Add(DefaultActivationTimeout + crashSlack)
		for pending(reqs) > 0 && time.Now().Before(limit) {
			time.Sleep(100 * time.Millisecond)
			if next, err := r.api.Requests(context.Background(), client.RequestFilter{Target: r.cfg.Target}); err == nil {
				reqs = next
			}
		}
	}
	for _, q := range reqs {
		if q.State == "pending" && time.Since(q.CreatedAt) > DefaultActivationTimeout+crashSlack {
			r.violation("request %s (from %s) pending since %s", q.ID, q.Source, q.CreatedAt.Format(time.RFC3339Nano))
		}
		if q.State == "failed" && q.Message == "" {
			r.violation("request %s failed without a reason", q.ID)
		}
		if final {
			r.rep.Ended[q.State]++
		}
	}
}

func pending(reqs []wire.Request) int {
	n := 0
	for _, q := range reqs {
		if q.State == "pending" {
			n++
		}
	}
	return n
}
