// Package agent is jitgate's agent: it enrolls with the server once, then
// long-polls the desired state of its target, applies it to the local
// firewall backend, and reports what it applied, an inventory of the host
// and what the gate blocked. It runs in host mode (protecting its own host)
// or gateway mode (protecting the destinations behind a router); it refuses
// a desired state of the other mode.
//
// Failure semantics, which matter more than the happy path here:
//   - The agent never changes the kernel because the server is unreachable or
//     answers errors. Kernel element timeouts keep closing grants on time with
//     the agent disconnected or dead, so "leave the gate as it is" is safe.
//   - Every apply is atomic, whether it carries the complete state
//     (firewall.Backend.Apply) or a delta of it (firewall.DeltaApplier, see
//     delta.go): a failed apply leaves the previous state and is retried
//     with backoff as a full apply; a delta the agent cannot apply exactly
//     is not applied at all, and a snapshot is asked for; a periodic full
//     resync repairs a table someone edited.
//   - A grant closes at the earlier of the server's and the agent's clock
//     readings of its deadline (see toRuleset).
//   - The periodic resync keeps running while the server is unreachable: it
//     re-applies the last state the server sent (expired grants drop out,
//     nothing new opens), which repairs a flushed or edited table.
//   - 401 stops the agent without touching the table; 410 (target removed)
//     removes the table, deletes the credential and stops cleanly.
//   - Revisions never go back. The agent remembers in its state directory
//     the highest revision it applied (highWater). A desired state with a
//     lower revision means the server's database went back (restored from
//     an older copy) and may hold grants that ended since: the agent refuses
//     it, removes every grant from the kernel (protected ports stay closed,
//     and ports it protected before stay protected), and reports its
//     high-water mark until the server moves past it (see rollback).
//   - An agent that cannot enforce (no nftables, no privilege: the backend's
//     Probe fails) does not stop: it keeps polling, applies nothing, and
//     reports CanEnforce=false with the reason, and the apply error for
//     each revision, until it can.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/wire"
)

// Defaults for Config.
const (
	DefaultPollWait    = 25 * time.Second
	DefaultResyncEvery = 60 * time.Second
)

const (
	// maxPollWait keeps the long-poll below the client's 60 s HTTP timeout.
	maxPollWait = 55 * time.Second
	// callGrace is how long a call may take beyond its long-poll wait before
	// the agent gives up on it, so a black-holed connection cannot stall the
	// loop (and the resync) for the full HTTP timeout.
	callGrace = 10 * time.Second
	// skewWarn is the clock skew worth telling an operator about.
	skewWarn = 2 * time.Second
	// skewMargin is the hysteresis of the deadline shift; see nextShift.
	skewMargin = 100 * time.Millisecond
)

// transferGrace is how much longer than callGrace a poll may take to
// receive its answer when the agent holds elements grants: a snapshot of a
// million grants is ~90 MB of JSON, streamed as the server reads it, which
// took tens of seconds on a loaded two-core machine. It bounds how long a
// black-holed connection can stall the loop.
func transferGrace(elements int) time.Duration {
	return time.Minute + time.Duration(elements/100_000)*10*time.Second
}

// ErrCredentialRejected is returned by Run when the server answers 401 to the
// agent's credential: retrying cannot help, an operator must re-enroll.
var ErrCredentialRejected = errors.New("agent credential rejected by the server")

// Config configures an agent.
type Config struct {
	// ServerURL is the server's base URL, or several URLs of one deployment
	// (replicas sharing one database) separated by commas: the agent uses
	// one at a time and moves on to the next when it stops answering
	// (internal/client, failover.go). It may be empty once enrolled: the
	// credential file remembers it. One URL behind a load balancer works
	// as well.
	ServerURL string
	// EnrollToken is the one-time enrollment token; needed only when
	// StateDir holds no credential yet.
	EnrollToken string
	// StateDir holds the credential file (created 0700).
	StateDir string
	// CAFile, when set, is the PEM CA bundle to trust for the server's TLS.
	CAFile string
	// InsecureHTTP lets the agent talk plain HTTP to a server that is not
	// on loopback (see CheckServerURL).
	InsecureHTTP bool
	// PollWait is how long the server may hold a long-poll (default 25s,
	// at most 55s because the HTTP client gives up at 60s).
	PollWait time.Duration
	// ResyncEvery is the period of the full re-apply of the last desired
	// state, which repairs a kernel table someone edited (default 60s).
	ResyncEvery time.Duration
	// SnapshotEvery is how often the agent asks the server for a full
	// snapshot instead of a delta (default 10 minutes; see delta.go).
	SnapshotEvery time.Duration
	// Version is reported to the server.
	Version string
	// Logger receives the agent's logs (default slog.Default()). The
	// credential and the enrollment token are never logged.
	Logger *slog.Logger
	// Mode is what the agent protects: its own host (the default) or, on a
	// router, the destinations behind it. A desired state of the other
	// mode is refused.
	Mode firewall.Mode
	// Sampler, when set, supplies the sampled sources of blocked attempts
	// reported with each report.
	Sampler Sampler
	// Table, when set, records which target's agent programs the host's
	// table (the host lock does): the agent claims it before every apply,
	// and deletes the table after its target was removed only when it is
	// its own.
	Table TableRecord
	// SSHTrustedCA, when set, is a file the agent keeps holding the server's
	// SSH certificate authority key, for sshd's TrustedUserCAKeys (opt-in:
	// only then do jitgate's certificates log in on this host).
	SSHTrustedCA string
	// SSHHostKeys is a glob of the host's SSH host public key files reported
	// in the inventory, so that jitgate ssh checks the host key without
	// trust on first use (default DefaultSSHHostKeys; "none": report none).
	SSHHostKeys string
	// Metrics, when set, receives the agent's own measurements (served on
	// --metrics-address; metrics.go).
	Metrics *Metrics
	// SizeMemory makes the agent set the Go runtime's soft memory limit
	// from the number of grants it holds (memory.go). It is process-wide:
	// the agent command sets it, tests running many agents do not.
	SizeMemory bool
}

// TableRecord records which target's agent last programmed the host's
// table; *HostLock implements it.
type TableRecord interface {
	Claim(target string) error
	Owner() string
}

// Sampler drains the blocked attempts sampled since its last call.
type Sampler interface {
	Samples() []firewall.Sample
}

// server is the part of the server's agent API the loop consumes;
// *client.Client implements it, tests drive the loop with fakes.
type server interface {
	Desired(ctx context.Context, after int64, wait time.Duration) (wire.DesiredState, error)
	Report(ctx context.Context, r wire.AgentReport) error
}

// remover is implemented by backends that can delete their whole table;
// the agent uses it when the server says the target was removed.
type remover interface {
	Remove(ctx context.Context) error
}

// Status is a snapshot of the agent's health.
type Status struct {
	// Target is the target name the agent enrolled as ("" before enrolling).
	Target string
	// AppliedRevision is the revision last applied successfully (0: none yet).
	AppliedRevision int64
	// LastApply is when that revision or a resync was last applied.
	LastApply time.Time
	// LastContact is when the server last answered.
	LastContact time.Time
	// LastError is the last error contacting the server or applying; a
	// successful apply, or a server answer while no apply is failing, clears it.
	LastError string
	// Skew is the latest estimate of the server's clock minus the agent's.
	Skew time.Duration
	// Server is the server URL in use (one of Config.ServerURL's).
	Server string
}

// Agent keeps one host's firewall in line with its target's desired state.
type Agent struct {
	cfg      Config
	backend  firewall.Backend
	log      *slog.Logger
	credPath string
	hwPath   string

	// srv is set by Run after enrollment; tests set it to skip enrollment.
	srv                    server
	minBackoff, maxBackoff time.Duration

	// reportFresh is how old the host's addresses and the gate's counters
	// carried by the report of a delta may be (see reportFresh); a full
	// apply reads them afresh.
	reportFresh time.Duration
	fresh       freshness

	// Loop state, touched only by the goroutine running Run.
	cur        *received         // last desired state received; nil before the first
	failed     bool              // applying cur failed; retry with backoff
	applied    int64             // revision last applied successfully
	highWater  int64             // highest revision ever applied (persisted; see rollback)
	hwLoaded   bool              // highWater was read from the state directory
	hwFile     *os.File          // the high-water mark, open once written
	hwSized    bool              // hwFile was cut to the line's length
	lastRS     *firewall.Ruleset // ruleset last applied successfully
	refused    int64             // revision last refused as a rollback (log once per revision)
	shift      time.Duration     // deadline shift in use (see nextShift)
	elements   int               // grant-set elements after the last successful apply
	nextResync time.Time         // when to re-apply cur even if nothing changed
	// bgApplied is the number of offline break-glass openings the last
	// full apply injected (skipResync).
	bgApplied  int
	pending    *wire.AgentReport // report not yet delivered
	skewWarned bool
	// Offline break-glass (breakglass.go): the key persisted last, the
	// revocations known, and the log's size when every use in it was
	// reported (bgPending: some report failed).
	bgKey          string
	bgRevoked      map[string]bool
	bgReportedSize int64
	bgPending      bool
	proc           procFS
	inventory      *wire.Inventory // latest inventory
	sentInv        *wire.Inventory // inventory last delivered
	sources        map[sourceKey]*wire.BlockedSource

	// Incremental desired state (delta.go): the entries of the state held,
	// by grant id, and the Index of their elements as last applied with
	// indexShift; nil when the next apply must be a full one.
	held         *held
	index        *firewall.Index
	indexShift   time.Duration
	wantSnapshot bool      // ask for a snapshot at once (a delta was refused)
	nextSnapshot time.Time // ask for a snapshot instead of a delta from then on
	fullNext     bool      // the snapshot asked for is applied whatever its revision
	memGrants    int       // the state size the memory limit was last set for (memory.go)

	mu     sync.Mutex
	status Status

	// relay serves the bastion streams the server opens on the agent's
	// relay connection, checked against relayState (tunnel.go).
	relay      *relay.Agent
	relayState atomic.Pointer[wire.DesiredState]
}

// received is a desired state and the agent-clock instant it arrived, which
// together give the clock-skew estimate.
type received struct {
	ds     wire.DesiredState
	recvAt time.Time // carries a monotonic reading; see skewNow
}

// Run enrolls if needed and runs the agent until ctx ends (returning nil), the
// credential is rejected (ErrCredentialRejected) or the target is removed on
// the server (nil, after removing the table). The caller owns backend and
// closes it after Run returns.
func Run(ctx context.Context, cfg Config, backend firewall.Backend) error {
	a, err := New(cfg, backend)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New validates cfg and returns an agent that has not contacted anything yet.
func New(cfg Config, backend firewall.Backend) (*Agent, error) {
	if backend == nil {
		return nil, errors.New("agent: no firewall backend")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("agent: StateDir must be set (it holds the credential)")
	}
	if cfg.PollWait == 0 {
		cfg.PollWait = DefaultPollWait
	}
	if cfg.PollWait < 0 || cfg.PollWait > maxPollWait {
		return nil, fmt.Errorf("agent: PollWait %s must be between 0 and %s (the HTTP client times out at 60s)", cfg.PollWait, maxPollWait)
	}
	if cfg.ResyncEvery == 0 {
		cfg.ResyncEvery = DefaultResyncEvery
	}
	if cfg.SnapshotEvery <= 0 {
		cfg.SnapshotEvery = DefaultSnapshotEvery
	}
	if cfg.ResyncEvery < 0 {
		return nil, fmt.Errorf("agent: ResyncEvery %s must be positive", cfg.ResyncEvery)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Agent{
		cfg:         cfg,
		backend:     backend,
		log:         log,
		credPath:    filepath.Join(cfg.StateDir, credentialName),
		hwPath:      filepath.Join(cfg.StateDir, highWaterName),
		minBackoff:  200 * time.Millisecond,
		maxBackoff:  10 * time.Second,
		reportFresh: reportFresh,
		proc:        hostProc,
		sources:     map[sourceKey]*wire.BlockedSource{},
	}, nil
}

// Status returns a snapshot of the agent's health; safe for concurrent use.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Run runs the agent (see the package-level Run). It must not be called
// twice at the same time.
func (a *Agent) Run(ctx context.Context) error {
	if a.srv == nil {
		srv, err := a.connect(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		a.srv = srv
	}
	if err := a.loadHighWater(); err != nil {
		return err
	}
	defer a.closeHighWater()
	if t, ok := a.srv.(tunneler); ok {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { a.runRelay(rctx, t); close(done) }()
		defer func() { cancel(); <-done }()
	}
	if f, ok := a.srv.(caFetcher); ok && a.cfg.SSHTrustedCA != "" {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { a.runTrustedCA(cctx, f); close(done) }()
		defer func() { cancel(); <-done }()
	}
	return a.loop(ctx)
}

// connect loads the credential or enrolls, and returns a client holding it.
func (a *Agent) connect(ctx context.Context) (server, error) {
	// Moving to another server changes nothing in the kernel: the agent
	// goes on polling there, and only a desired state it receives (with a
	// revision not below its high-water mark) changes the gate.
	opts := []client.Option{client.WithSwitchHook(func(from, to string, why error) {
		a.log.Warn("server not answering; moving on to the next", "from", from, "to", to, "err", why)
		a.mu.Lock()
		a.status.Server = to
		a.mu.Unlock()
	})}
	if a.cfg.CAFile != "" {
		opts = append(opts, client.WithCAFile(a.cfg.CAFile))
	}
	cred, err := loadCredential(a.credPath)
	switch {
	case err == nil:
		if err := a.checkServerURL(cred.ServerURL); err != nil {
			return nil, err
		}
		if a.cfg.ServerURL != "" && !sameURL(a.cfg.ServerURL, cred.ServerURL) {
			// Sending the credential to another server would hand it over.
			return nil, fmt.Errorf("agent: credential in %s is for server %s, not %s: delete it and enroll again to switch servers (to add or drop a replica's URL of the same deployment, edit server_url in it: a comma-separated list)",
				a.credPath, cred.ServerURL, a.cfg.ServerURL)
		}
		if a.cfg.EnrollToken != "" {
			a.log.Info("already enrolled; ignoring the enrollment token", "target", cred.Target, "credential_file", a.credPath)
		}
		warnIfReadable(a.log, a.credPath)
		c, err := client.New(cred.ServerURL, cred.Credential, opts...)
		if err != nil {
			return nil, fmt.Errorf("agent: credential file %s: %w", a.credPath, err)
		}
		a.setTarget(cred.Target)
		a.useServer(c)
		return c, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("agent: %w", err)
	}

	if a.cfg.EnrollToken == "" {
		return nil, fmt.Errorf("agent: not enrolled (no %s) and no enrollment token given", a.credPath)
	}
	if err := a.checkServerURL(a.cfg.ServerURL); err != nil {
		return nil, err
	}
	c, err := client.New(a.cfg.ServerURL, "", opts...)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	// The token is single-use: find out now, not after spending it, whether
	// the credential can be stored.
	if err := checkWritable(a.cfg.StateDir); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	resp, err := a.enroll(ctx, c)
	if err != nil {
		return nil, err
	}
	if err := saveCredential(a.credPath, credential{ServerURL: a.cfg.ServerURL, Target: resp.Target, Credential: resp.Credential}); err != nil {
		return nil, fmt.Errorf("agent: enrolled as %s but could not store the credential (a new enrollment token is needed): %w", resp.Target, err)
	}
	a.log.Info("enrolled", "target", resp.Target, "credential_file", a.credPath)
	a.setTarget(resp.Target)
	a.useServer(c)
	return c.WithToken(resp.Credential), nil
}

// useServer logs the server URLs c knows and the one in use.
func (a *Agent) useServer(c *client.Client) {
	a.mu.Lock()
	a.status.Server = c.Server()
	a.mu.Unlock()
	a.log.Info("server", "using", c.Server(), "known", strings.Join(c.Servers(), ","))
}

// enroll calls Enroll, retrying with backoff while the server is unreachable
// or failing (5xx, 429); any other refusal is final.
func (a *Agent) enroll(ctx context.Context, c *client.Client) (wire.EnrollResponse, error) {
	hostname, _ := os.Hostname()
	req := wire.EnrollRequest{Hostname: hostname, Addresses: hostAddresses(), Version: a.cfg.Version, Mode: a.cfg.Mode.String()}
	bo := newBackoff(a.minBackoff, a.maxBackoff)
	for {
		callCtx, cancel := context.WithTimeout(ctx, callGrace)
		resp, err := c.Enroll(callCtx, a.cfg.EnrollToken, req)
		cancel()
		if err == nil {
			return resp, nil
		}
		if ctx.Err() != nil {
			return resp, ctx.Err()
		}
		switch st := client.StatusOf(err); {
		case st == http.StatusUnauthorized:
			return resp, fmt.Errorf("agent: enrollment token rejected (expired or already used): ask for a new one: %w", err)
		case st >= 400 && st < 500 && st != http.StatusTooManyRequests && st != http.StatusRequestTimeout:
			return resp, fmt.Errorf("agent: %w", err)
		}
		a.setError(err)
		d := bo.NextBackOff()
		a.log.Warn("enrollment failed; retrying", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return resp, ctx.Err()
		}
	}
}

// loop is the steady state: poll, apply on change, resync, report.
func (a *Agent) loop(ctx context.Context) error {
	pollBo := newBackoff(a.minBackoff, a.maxBackoff)
	applyBo := newBackoff(a.minBackoff, a.maxBackoff)
	for ctx.Err() == nil {
		if a.cur != nil && !time.Now().Before(a.nextResync) && !a.skipResync(ctx) {
			a.apply(ctx, "resync")
		}
		if a.pending != nil && !a.carriesReports() {
			if err := a.flushReport(ctx); err != nil {
				if done, ret := a.final(ctx, err); done {
					return ret
				}
				// Transient: the poll below finds out whether the server is
				// back, and backs off if not; the report stays pending.
			}
		}

		wait := a.cfg.PollWait
		if a.cur == nil || a.failed || a.wantSnapshot {
			wait = 0 // first contact, retrying an apply or a refused delta: answer now
		} else if untilResync := time.Until(a.nextResync); untilResync < wait {
			wait = max(untilResync, 0)
		}
		polledAt := time.Now()
		callCtx, cancel := context.WithTimeout(ctx, wait+callGrace+transferGrace(a.elements))
		// after is the highest revision ever applied (also across restarts):
		// a server that knows less than that has lost its database's recent
		// past, and can tell even when later changes caught up with it.
		ds, err := a.poll(callCtx, max(a.applied, a.highWater), wait)
		cancel()
		if err == nil {
			err = a.checkTarget(ds)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if done, ret := a.final(ctx, err); done {
				return ret
			}
			a.setError(err)
			d := pollBo.NextBackOff()
			// The kernel keeps what it holds, and its timeouts keep expiring grants.
			a.log.Warn("cannot fetch desired state; leaving the firewall as it is", "err", err, "retry_in", d.Round(time.Millisecond))
			a.sleepUntilResync(ctx, d)
			continue
		}
		recvAt := time.Now()
		pollBo.Reset()
		a.contact(recvAt)
		// Revocations first: the apply below leaves out what they revoke.
		a.learnBreakGlass(ds)
		applied := a.receive(ctx, ds, recvAt)
		a.reportBreakGlass(ctx)
		switch {
		case a.failed:
			a.sleepUntilResync(ctx, applyBo.NextBackOff())
		case !applied && wait > 0 && recvAt.Sub(polledAt) < a.minBackoff:
			// A server that ignores the long-poll wait must not turn the
			// loop into a busy one against it.
			applyBo.Reset()
			a.sleepUntilResync(ctx, a.minBackoff)
		default:
			applyBo.Reset()
		}
	}
	return nil
}

// final handles the answers that end the loop: 401 and 410.
func (a *Agent) final(ctx context.Context, err error) (done bool, ret error) {
	switch client.StatusOf(err) {
	case http.StatusUnauthorized:
		a.setError(err)
		a.log.Error("the server rejected the agent credential; stopping and leaving the firewall as it is", "err", err)
		return true, fmt.Errorf("%w: %w", ErrCredentialRejected, err)
	case http.StatusGone:
		return true, a.removed(ctx)
	}
	return false, nil
}

// claimTable records that this agent's target programs the host's table,
// before it touches it (Config.Table). A record that cannot be written (a
// full /run) does not stop the apply: that would let whoever fills /run keep
// grants from opening and revocations from being applied; it is logged.
func (a *Agent) claimTable() error {
	if a.cfg.Table == nil {
		return nil
	}
	if err := a.cfg.Table.Claim(a.Status().Target); err != nil {
		a.log.Warn("cannot record this target as the table's owner; applying anyway", "err", err)
	}
	return nil
}

// tableOwner is the target whose agent last programmed the host's table (""
// when unknown).
func (a *Agent) tableOwner() string {
	if a.cfg.Table == nil {
		return ""
	}
	return a.cfg.Table.Owner()
}

// removed tears the gate down after the server said the target is gone.
// The credential is deleted only after the table is, so that a failed
// removal is retried on restart instead of leaving an orphaned table behind.
func (a *Agent) removed(ctx context.Context) error {
	own := a.Status().Target
	if owner := a.tableOwner(); owner != "" && owner != own {
		// A leftover agent of a removed target, started while the host's
		// current agent was down: the table is the other target's.
		a.log.Warn("the server says this target was removed; the firewall table was last programmed by the agent of another target: leaving it",
			"target", own, "table_of", owner)
	} else if r, ok := a.backend.(remover); ok {
		a.log.Warn("the server says this target was removed; removing the firewall table")
		if err := r.Remove(ctx); err != nil {
			a.setError(err)
			return fmt.Errorf("agent: target removed on the server, but removing the firewall table failed (credential kept, a restart retries): %w", err)
		}
	} else {
		a.log.Warn("the firewall backend cannot remove its table; leaving it as it is (ports stay closed)")
	}
	a.closeHighWater()
	if err := removeHighWater(a.hwPath); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := removeCredential(a.credPath); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.log.Info("target removed: credential deleted; agent stopping")
	return nil
}

// receive takes one answer of the server. A new revision (or a retry after a
// failed apply) is applied. An answer with the same revision only refreshes
// the clock-skew sample, and is applied again when the skew moved enough to
// change the deadlines (see nextShift). It reports whether it applied.
func (a *Agent) receive(ctx context.Context, ds wire.DesiredState, recvAt time.Time) bool {
	if ds.Since > 0 {
		return a.receiveDelta(ctx, ds, recvAt)
	}
	isNew := a.cur == nil || a.failed || ds.Revision != a.cur.ds.Revision || a.fullNext
	a.fullNext = false
	// The previous state goes before the new one is converted (at a
	// million grants each is tens of megabytes); the snapshot's decoded
	// entries are not kept (split converts them), and are garbage once
	// receive returns. The Index goes with a new revision (apply builds
	// it again); the same revision again leaves it the base of deltas
	// and of a skipped resync.
	a.held = nil
	if isNew {
		a.index = nil
	}
	// Sized before the new state is built beside what the backend still
	// holds of the old one.
	a.sizeMemory(max(len(ds.Grants), a.elements))
	base, h := split(ds, a.cfg.Mode == firewall.GatewayMode)
	ds.Grants = nil
	a.cur, a.held = &received{ds: base, recvAt: recvAt}, h
	rv := h.relayView(base)
	if h.err != nil {
		rv.Bastion = nil // a malformed state opens nothing
	}
	a.setRelayState(rv, recvAt)
	if isNew {
		a.apply(ctx, "revision")
		return true
	}
	a.observeSkew(a.cur, recvAt)
	if nextShift(skewShift(ds.ServerTime, skewNow(recvAt, recvAt)), a.shift) != a.shift {
		a.apply(ctx, "clock skew changed")
		return true
	}
	return false
}

// checkTarget refuses a desired state addressed to another target than the
// one the agent enrolled as: applying another host's gate would open ports
// nobody granted here.
func (a *Agent) checkTarget(ds wire.DesiredState) error {
	want := a.Status().Target
	if want != "" && ds.Target != "" && ds.Target != want {
		return fmt.Errorf("server sent the desired state of target %q, but this agent is %q", ds.Target, want)
	}
	return nil
}

// apply applies a.cur to the backend and queues the report.
func (a *Agent) apply(ctx context.Context, reason string) {
	// Its report carries the host's addresses and the gate's counters read
	// afresh (the protected ports may have changed).
	a.fresh = freshness{}
	cur := a.cur
	now := time.Now()
	a.observeSkew(cur, now)
	if cur.ds.Revision < a.highWater {
		a.rollback(ctx, cur, now)
		return
	}
	shift := nextShift(skewShift(cur.ds.ServerTime, skewNow(cur.recvAt, now)), a.shift)
	probeErr := a.probe(ctx)
	if a.inventory == nil || reason == "resync" || (probeErr == nil) != a.inventory.CanEnforce {
		// Reading sockets and routes costs milliseconds: done at start, on
		// each resync, and when enforcement becomes (im)possible, not on
		// every revision.
		a.inventory = a.proc.inventory(a.cfg.Mode, probeErr)
		a.inventory.SSHHostKeys = readHostKeys(a.cfg.SSHHostKeys)
	}
	start := time.Now()
	// The valid offline break-glass openings are part of what is applied,
	// under the log's lock (breakglass.go): the same rule for every full
	// apply and resync. A log that cannot be opened drops them (closed).
	bgl, err := openBGLog(a.cfg.StateDir)
	if err != nil {
		a.log.Error("cannot open the break-glass log; applying without its openings", "err", err)
	} else {
		defer bgl.Close()
	}
	bg := a.injectBreakGlass(bgl, now)
	a.bgApplied = len(bg)
	full := cur.ds
	if a.held != nil {
		// Expired by the server's clock an hour ago: gone by either clock.
		a.held.dropExpired(now.Add(-shift).Add(-time.Hour))
		full = a.held.relayView(cur.ds)
	}
	full.Grants = bg // also in held (converted): checked here as entries
	a.index = nil
	rs, err := toRuleset(full, shift, a.cfg.Mode)
	// The rollback needs the protected ports, not every grant; so does the
	// Index, which takes its grants from held. rs is not used after the
	// backend's Apply, which drops its grants as soon as it has normalised
	// them (at a million grants, 88 MB it need not hold beside the sets).
	kept := rs
	kept.Grants = nil
	indexed := slices.Values(rs.Grants)
	if err == nil && a.held != nil {
		if a.held.err != nil {
			err = a.held.err
		} else {
			// Held has bg's entries too: take every grant from there.
			rs.Grants = a.held.appendGrants(rs.Grants[:0], shift)
			indexed = a.held.all(shift)
		}
	}
	var res firewall.ApplyResult
	switch {
	case errors.Is(err, errModeMismatch):
		err = fmt.Errorf("refusing revision %d: %w", cur.ds.Revision, err)
	case err != nil:
		err = fmt.Errorf("revision %d is malformed: %w", cur.ds.Revision, err)
	case probeErr != nil:
		err = fmt.Errorf("cannot enforce revision %d: %w", cur.ds.Revision, probeErr)
	default:
		if err = a.claimTable(); err != nil {
			break
		}
		res, err = a.backend.Apply(ctx, rs, now)
		if err != nil {
			err = fmt.Errorf("applying revision %d: %w", cur.ds.Revision, err)
		}
	}
	if err == nil {
		a.shift = shift
		a.lastRS = &kept
	}
	a.nextResync = now.Add(a.cfg.ResyncEvery)
	a.finish(ctx, cur.ds.Revision, reason, start, now, res, err, false)
	if _, ok := a.backend.(firewall.DeltaApplier); ok && err == nil {
		// The base of the deltas that follow: built from the grants just
		// applied, with the same shift, once the report is on its way (at
		// a million grants it takes seconds, which the gate need not wait
		// for: the kernel already holds the state).
		a.index, a.indexShift = firewall.NewIndexOf(kept, indexed, now), shift
	}
}

// finish records the outcome of applying revision rev (a full apply or a
// delta begun at start), remembers a new high-water mark before anything is
// reported, and queues and sends the report. With carry, and a server that
// takes a report with the next poll (carriesReports), the report is left
// pending for the loop's next poll, which follows at once and carries it:
// one exchange instead of two. A full apply sends it at once (carry false):
// the delta Index it builds after finish takes seconds at a million grants,
// which activation need not wait for.
func (a *Agent) finish(ctx context.Context, rev int64, reason string, start, now time.Time, res firewall.ApplyResult, err error, carry bool) {
	took := time.Since(start)
	rep := &wire.AgentReport{
		Revision:    rev,
		ApplyMillis: float64(took.Microseconds()) / 1000,
		Addresses:   a.addresses(),
		Version:     a.cfg.Version,
		Mode:        a.cfg.Mode.String(),
	}
	if err != nil {
		a.failed = true
		rep.Error = err.Error()
		rep.Elements = a.elements // the kernel still holds the previous state
		a.setError(err)
		a.log.Error("apply failed; the firewall keeps its previous state", "reason", reason, "revision", rev, "err", err)
	} else {
		a.failed = false
		a.applied = rev
		if rev > a.highWater {
			// Remembered before the report: once the server has heard of a
			// revision, this agent never takes an older one again.
			a.highWater = rev
			if err := a.saveHighWater(); err != nil {
				a.log.Error("cannot remember the applied revision in the state directory; a restart would not notice a server that went back", "err", err)
			}
		}
		a.elements = res.Elements
		rep.Elements = a.elements
		// Sized to what the agent holds: the held grants (those ended
		// within the hour make no element but are kept) or the elements.
		held := 0
		if a.held != nil {
			held = len(a.held.grants)
		}
		a.sizeMemory(max(a.elements, held))
		a.applyOK(rev, now)
		switch {
		case reason == "resync" && res.Changed:
			a.log.Warn("the firewall table differed from the desired state; repaired", "revision", rev,
				"added", res.Added, "removed", res.Removed, "protected_added", res.ProtectedAdded, "protected_removed", res.ProtectedRemoved)
		case res.Changed:
			a.log.Info("applied", "reason", reason, "revision", rev, "elements", a.elements,
				"added", res.Added, "removed", res.Removed, "took", took.Round(time.Microsecond))
		}
	}
	a.cfg.Metrics.applied(rev, took, a.elements, now, err)
	a.pending = rep
	if carry && a.carriesReports() {
		return
	}
	if err := a.flushReport(ctx); err != nil {
		a.cfg.Metrics.reportFailed()
		a.log.Warn("report not delivered; will retry", "revision", rep.Revision, "err", err)
	}
}

// flushReport sends the pending report on its own (see reportToSend). It
// stays pending on failure.
func (a *Agent) flushReport(ctx context.Context) error {
	callCtx, cancel := context.WithTimeout(ctx, callGrace)
	defer cancel()
	rep := a.reportToSend(callCtx)
	if err := a.srv.Report(callCtx, rep); err != nil {
		return err
	}
	a.delivered(rep)
	return nil
}

// reportToSend is the pending report completed with the kernel's blocked
// counters as of now, the sources sampled since the last delivered report,
// and the inventory when it changed since the last delivered one.
func (a *Agent) reportToSend(ctx context.Context) wire.AgentReport {
	rep := *a.pending
	rep.Mode = a.cfg.Mode.String()
	rep.Blocked = a.blocked(ctx)
	// Drained sources not delivered are merged back by the next drain:
	// they stay in a.sources until delivered clears them.
	rep.BlockedSources = a.drainSources()
	if a.inventory != nil && !sameInventory(a.inventory, a.sentInv) {
		rep.Inventory = a.inventory
	}
	return rep
}

// delivered records that the server took rep, the pending report.
func (a *Agent) delivered(rep wire.AgentReport) {
	a.pending = nil
	a.sentInv = rep.Inventory
	if rep.Inventory == nil {
		a.sentInv = a.inventory
	}
	clear(a.sources)
}

// observeSkew records the server's clock minus the agent's, estimated from
// cur's sample in the agent clock's frame at now, and warns when it is large.
func (a *Agent) observeSkew(cur *received, now time.Time) {
	if cur.ds.ServerTime.IsZero() {
		return
	}
	skew := cur.ds.ServerTime.Sub(skewNow(cur.recvAt, now))
	a.mu.Lock()
	a.status.Skew = skew
	a.mu.Unlock()
	switch abs := max(skew, -skew); {
	case abs > skewWarn && !a.skewWarned:
		a.skewWarned = true
		a.log.Warn("clock skew with the server; grants close at the earlier clock's deadline, fix NTP", "server_minus_local", skew.Round(time.Millisecond))
	case abs <= skewWarn && a.skewWarned:
		a.skewWarned = false
		a.log.Info("clock skew with the server is back within bounds", "server_minus_local", skew.Round(time.Millisecond))
	}
}

// skewNow returns the agent's wall-clock reading, in the frame of now, of the
// instant recvAt was taken. The elapsed time comes from the monotonic clock,
// so if the wall clock was stepped since the answer arrived (a resync while
// the server is unreachable), the skew estimate follows the step and a clock
// set back cannot lengthen kernel timeouts.
func skewNow(recvAt, now time.Time) time.Time {
	return now.Round(0).Add(-now.Sub(recvAt))
}

// nextShift returns the deadline shift to use given a fresh estimate and the
// shift in use. The estimate jitters by the network delay; recomputing every
// deadline on every sample would make each resync rewrite every element. So
// the shift moves only when the estimate leaves [inUse-2*margin, inUse], and
// then to estimate+margin: it never falls below the estimate (grants close at
// most 2*margin early, never late, by the estimate).
func nextShift(estimate, inUse time.Duration) time.Duration {
	if estimate <= inUse && estimate >= inUse-2*skewMargin {
		return inUse
	}
	if estimate == 0 {
		return 0
	}
	return estimate + skewMargin
}

// newBackoff is capped exponential backoff with jitter (cenkalti/backoff):
// each delay is randomized by ±50 % so that agents cut off together do not
// come back in lockstep; it starts near lo and the randomized delay stays
// at most hi.
func newBackoff(lo, hi time.Duration) *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     lo,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         hi * 2 / 3, // +50 % of jitter reaches hi
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sleepUntilResync sleeps d, cut short when a resync falls due first.
func (a *Agent) sleepUntilResync(ctx context.Context, d time.Duration) {
	if a.cur != nil {
		d = min(d, max(time.Until(a.nextResync), 0))
	}
	sleep(ctx, d)
}

func (a *Agent) setTarget(name string) {
	a.mu.Lock()
	a.status.Target = name
	a.mu.Unlock()
}

func (a *Agent) setError(err error) {
	a.mu.Lock()
	a.status.LastError = err.Error()
	a.mu.Unlock()
}

func (a *Agent) contact(at time.Time) {
	a.mu.Lock()
	a.status.LastContact = at
	if !a.failed {
		a.status.LastError = ""
	}
	a.mu.Unlock()
}

func (a *Agent) applyOK(rev int64, at time.Time) {
	a.mu.Lock()
	a.status.AppliedRevision = rev
	a.status.LastApply = at
	a.status.LastError = ""
	a.mu.Unlock()
}

// sameURL compares server URLs ignoring a trailing slash.
// sameURL reports whether a and b name the same server URLs (each one URL,
// or several of one deployment separated by commas), in whatever order.
func sameURL(a, b string) bool {
	set := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimRight(strings.TrimSpace(u), "/"); u != "" {
				m[u] = true
			}
		}
		return m
	}
	return maps.Equal(set(a), set(b))
}

// checkWritable makes dir (0700) and proves a file can be created in it.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("state directory %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// warnIfReadable warns when the credential file is readable by others.
func warnIfReadable(log *slog.Logger, path string) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("credential file is readable by group or others; it should be 0600", "credential_file", path, "mode", fi.Mode().Perm().String())
	}
}

// checkServerURL applies CheckServerURL and warns when plain HTTP was
// allowed to a remote server.
func (a *Agent) checkServerURL(raw string) error {
	if err := CheckServerURL(raw, a.cfg.InsecureHTTP); err != nil {
		return err
	}
	for _, u := range strings.Split(raw, ",") {
		if u = strings.TrimSpace(u); NeedsInsecureHTTP(u) {
			a.log.Warn("talking plain HTTP to a server that is not on loopback (--insecure-http): the credential and the grants cross the network in cleartext", "server", u)
		}
	}
	return nil
}

// CheckServerURL refuses a plain-http server URL whose host is not loopback
// unless insecure is set: over it, anyone on the path reads the agent's
// credential (and can then poll as the agent) and can forge the desired
// state the agent programs into the kernel. Loopback (127.0.0.0/8, ::1,
// localhost) stays allowed: a server on the same host, or a local
// TLS-terminating tunnel.
// raw may name several URLs separated by commas: each is checked.
func CheckServerURL(raw string, insecure bool) error {
	for _, u := range strings.Split(raw, ",") {
		if u = strings.TrimSpace(u); NeedsInsecureHTTP(u) && !insecure {
			return fmt.Errorf("agent: server %s is plain HTTP to a host that is not loopback, so the credential would cross the network in cleartext: use https (--ca-file for a private CA) or pass --insecure-http", u)
		}
	}
	return nil
}

// NeedsInsecureHTTP reports whether raw is a plain-http URL to a host that
// is not loopback (a host name other than localhost counts as remote: what
// it resolves to can change).
func NeedsInsecureHTTP(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return false // https, or not a URL at all (client.New says why)
	}
	host := u.Hostname()
	if strings.EqualFold(host, "localhost") {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.Unmap().IsLoopback()
}
