package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/lease"
	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/sshca"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/web"
)

// bookkeepingDelay is how long after a commit the sweeper and the webhook
// deliverer look at it.
const bookkeepingDelay = 20 * time.Millisecond

// AdminTokenFile is the name, in the data directory, of the file holding the
// first admin token.
const AdminTokenFile = "admin.token"

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := cfg.Logger
	defer profileOnSignal(log)()
	if cfg.TuneGC {
		defer tuneGC(log)()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	release, err := LockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer release()
	st, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	// Before anything is served: a database put back from an older copy
	// must not show, or send to an agent, a grant that ended since.
	guard, err := guardRestore(ctx, st, cfg.DataDir, log, time.Now())
	if err != nil {
		return err
	}
	defer guard.close()
	if err := bootstrapAdmin(ctx, st, cfg.DataDir, log); err != nil {
		return err
	}
	// Bastion sessions cannot outlive the process that relayed them: those
	// this server's previous run (the replica id is the data directory's)
	// or a dead replica left recorded live ended with it; those of other
	// live replicas sharing the database go on.
	replicaID, err := loadReplicaID(cfg.DataDir)
	if err != nil {
		return err
	}
	if n, err := st.EndLostSessions(ctx, replicaID, time.Now()); err != nil {
		return err
	} else if n > 0 {
		log.Warn("bastion sessions left live by a previous server marked ended (server lost)", "sessions", n)
	}
	bastion := relay.NewServer()
	// The SSH certificate authority's key: created on first start, 0600,
	// beside the database (docs/operations.md says how to rotate it).
	caPath := cfg.SSHCAKeyFile
	if caPath == "" {
		caPath = filepath.Join(cfg.DataDir, sshca.FileName)
	}
	caKey, err := sshca.LoadOrCreate(caPath)
	if err != nil {
		return err
	}
	if err := checkSharedCA(ctx, st, caKey, caPath, cfg.SSHCARotate, replicaID, log, time.Now()); err != nil {
		return err
	}
	log.Info("SSH certificate authority", "key", ssh.FingerprintSHA256(caKey.PublicKey()))
	bgKey, err := loadBreakGlassKey(ctx, st, filepath.Join(filepath.Dir(caPath), breakGlassKeyName), log, time.Now())
	if err != nil {
		return err
	}
	// Recordings of sessions on recorded ports (DATA_DIR/recordings, 0700).
	// Those a previous server left unsaved are saved now, marked incomplete,
	// so the audit trail vouches for what is on disk.
	recordings, err := recording.OpenDir(cfg.DataDir)
	if err != nil {
		return err
	}
	if n, err := recordings.SaveUnfinished(ctx, st, time.Now()); err != nil {
		return fmt.Errorf("saving the recordings a previous server left unfinished: %w", err)
	} else if n > 0 {
		log.Warn("recordings left unfinished by a previous server saved as incomplete", "recordings", n)
	}

	hub := api.NewHub()
	wake := make(chan struct{}, 1)
	deliverer := notify.New(st, notify.Options{Timeout: cfg.WebhookTimeout, AllowPrivate: cfg.WebhookAllowPrivate, Logger: log})
	// After a commit the agents' long-polls wake at once: that is the grant
	// path. The sweeper and the webhook deliverer look a moment later, so
	// their reads do not compete with it (and a burst of commits wakes them
	// once).
	var bookkeeping sync.Mutex
	bookkeepingDue := false
	st.Subscribe(func(targets ...string) {
		// The mark covers a revision before any agent is woken for it.
		if err := guard.note(ctx); err != nil {
			log.Error("keeping the restore mark current", "err", err)
		}
		hub.Notify(targets...)
		bookkeeping.Lock()
		defer bookkeeping.Unlock()
		if bookkeepingDue {
			return
		}
		bookkeepingDue = true
		time.AfterFunc(bookkeepingDelay, func() {
			bookkeeping.Lock()
			bookkeepingDue = false
			bookkeeping.Unlock()
			deliverer.Wake()
			select {
			case wake <- struct{}{}:
			default:
			}
		})
	})
	// Agents re-poll at once after each answer, so 10 s without an open poll
	// means the agent is gone (or cannot reach us).
	presence := api.NewPresence(st, 10*time.Second)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := api.NewMetrics(reg, func() float64 {
		n, _ := st.CountRequests(context.Background(), access.Active)
		return float64(n)
	}, func() float64 { return float64(presence.Connected()) })

	// A write that fails for a storage reason (a full disk) is logged and
	// counted wherever it happens: API call, sweeper, deliverer.
	st.OnWriteError(func(cause string, err error) {
		metrics.StoreWriteErrors.WithLabelValues(cause).Inc()
		log.Error("database write failed", "cause", cause, "err", err)
	})

	sso, err := startSSO(ctx, cfg.OIDC, log)
	if err != nil {
		return err
	}
	refusals := api.NewRefusalLog(st, log)
	// What this process knows of each target's revision, after the guard:
	// an agent claiming more proves the database went back (api.agentAhead).
	revisionsAtStart, err := st.TargetRevisions(ctx)
	if err != nil {
		return err
	}
	// Filled in once the listening address is known (replicaDeps).
	rep := &api.Replica{ID: replicaID}
	handler := api.New(api.Deps{
		Store: st, Hub: hub, Limits: cfg.Limits, TrustedProxies: cfg.TrustedProxies,
		AgentPollWait: cfg.AgentPollWait, EnrollTokenTTL: cfg.EnrollTokenTTL, Presence: presence,
		Metrics: metrics, Registry: reg, Logger: log, SSO: sso, Refusals: refusals,
		WebhookAllowPrivate: cfg.WebhookAllowPrivate,
		RevisionsAtStart:    revisionsAtStart,
		Relay:               bastion,
		SSHCA:               caKey,
		Replica:             rep,
		Recordings:          recordings,
		BreakGlassKey:       bgKey,
		BreakGlassMax:       cfg.BreakGlassMax,

		MaxSessionsPerPrincipal: cfg.MaxTunnelsPerPrincipal,
	})
	// The web console (/ui/) in front of the API, same origin.
	handler, err = web.New(web.Deps{API: handler, Store: st, TrustedProxies: cfg.TrustedProxies, SSO: sso != nil,
		SessionTTL: cfg.OIDC.SessionTTL, Contact: cfg.Contact, Logger: log})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	if cfg.MaxConnsPerAddress > 0 {
		ln = newConnLimiter(ln, cfg.MaxConnsPerAddress, cfg.TrustedProxies, log)
	}
	// No ReadTimeout or WriteTimeout: both would cut long-polls (see
	// bodyDeadline, which bounds bodies instead).
	srv := &http.Server{
		Handler:           bodyDeadline(cfg.BodyTimeout, httpedge.RequestID(logRequests(log, handler))),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		// Reloaded when the files change: a renewed certificate needs no
		// restart (certreload.go).
		certs, err := newCertReloader(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	log.Info("jitgate server listening", "url", scheme+"://"+ln.Addr().String(), "data_dir", cfg.DataDir)
	if scheme == "http" && !loopback(ln.Addr()) {
		log.Warn("serving plain HTTP on a non-loopback address: tokens, agent credentials and grants cross the network in cleartext; "+
			"use --tls-cert and --tls-key, or listen on loopback behind a TLS-terminating proxy", "listen", ln.Addr().String())
	}
	r, err := replicaDeps(cfg, replicaID, ln.Addr(), scheme)
	if err != nil {
		ln.Close()
		return err
	}
	*rep = *r
	if err := st.HeartbeatReplica(ctx, rep.ID, rep.Address, time.Now(), replicaTTL); err != nil {
		ln.Close()
		return err
	}
	log.Info("bastion replica", "id", rep.ID, "forwarding", len(rep.Secret) > 0, "address", rep.Address)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr().String())
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The singleton jobs run on the one replica holding each one's lease
	// (internal/lease); the others take a job over within seconds of its
	// holder's death.
	holder := cfg.ReplicaID
	if holder == "" {
		holder = replicaID
	}
	singletons := newSingletons(reg, st, holder, log)
	singletons.start(ctx, "sweeper", func(ctx context.Context) { sweepLoop(ctx, st, cfg.ActivationTimeout, cfg.Limits, wake, log) })
	go replicaLoop(ctx, st, rep, log)
	singletons.start(ctx, "prune", func(ctx context.Context) { pruneLoop(ctx, st, cfg.PruneInterval, log) })
	// Recordings live in each replica's DATA_DIR/recordings: with replicas,
	// that directory must be shared (docs/operations.md), or a recording
	// can be played back and expired only where it was made.
	singletons.start(ctx, "recordings", func(ctx context.Context) {
		recordingSweepLoop(ctx, st, recordings, cfg.RecordingRetention, log)
	})
	// The deliverer records its attempts in flight before the store closes
	// (deferred calls run last to first: this one before st.Close).
	singletons.start(ctx, "webhooks", deliverer.Run)
	defer func() { cancel(); singletons.wait() }()
	go presenceLoop(ctx, presence, log)
	go refusals.Run(ctx)
	// Refusals still being counted are written before the store closes.
	defer refusals.Close(context.WithoutCancel(ctx))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	}
	// Long-polls would hold a graceful shutdown for their whole wait; every
	// state change is already committed, so closing at once loses nothing.
	srv.Close()
	// Hijacked connections outlive srv.Close: closing the relay ends every
	// agent connection and so every bastion session.
	bastion.Close()
	stopReplica(context.WithoutCancel(ctx), st, rep, log)
	log.Info("jitgate server stopped")
	return nil
}

// singletons runs this replica's candidacy for each singleton job.
type singletons struct {
	st     *store.Store
	holder string
	log    *slog.Logger
	held   *prometheus.GaugeVec
	wg     sync.WaitGroup
}

func newSingletons(reg prometheus.Registerer, st *store.Store, holder string, log *slog.Logger) *singletons {
	held := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "jitgate_singleton_lease_held",
		Help: "1 while this replica holds the lease of the singleton job (sweeper, webhooks, prune) and runs it, else 0.",
	}, []string{"job"})
	reg.MustRegister(held)
	log.Info("replica", "id", holder)
	return &singletons{st: st, holder: holder, log: log, held: held}
}

// start runs job under its lease until ctx ends.
func (s *singletons) start(ctx context.Context, name string, job func(context.Context)) {
	g := s.held.WithLabelValues(name)
	g.Set(0)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		err := lease.Run(ctx, s.st, lease.Config{Name: name, Holder: s.holder, Logger: s.log, Held: func(h bool) {
			if h {
				g.Set(1)
			} else {
				g.Set(0)
			}
		}}, job)
		if err != nil {
			s.log.Error("singleton job", "job", name, "err", err)
		}
	}()
}

// wait returns once every job has stopped and its lease is released.
func (s *singletons) wait() { s.wg.Wait() }

// recordingSweepLoop deletes expired recordings at start and then every
// hour (or every tenth of the retention, when shorter).
func recordingSweepLoop(ctx context.Context, st *store.Store, d *recording.Dir, retention time.Duration, log *slog.Logger) {
	every := min(time.Hour, max(retention/10, time.Second))
	for {
		if n, err := d.SweepExpired(ctx, st, retention, time.Now()); err != nil {
			if ctx.Err() == nil {
				log.Error("deleting expired recordings", "err", err)
			}
		} else if n > 0 {
			log.Info("expired recordings deleted", "recordings", n, "retention", retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// startSSO returns the OpenID provider of cfg, or nil when single sign-on
// is off. A provider that cannot be reached now is logged, not fatal:
// discovery is retried at the first login.
func startSSO(ctx context.Context, cfg oidc.Config, log *slog.Logger) (*oidc.Provider, error) {
	if cfg.Issuer == "" {
		return nil, nil
	}
	p, err := oidc.New(cfg)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.Discover(dctx); err != nil {
		log.Warn("single sign-on: the OpenID provider cannot be reached yet; will retry at the first login", "err", err)
	} else {
		log.Info("single sign-on enabled", "issuer", cfg.Issuer, "client_id", cfg.ClientID)
	}
	return p, nil
}

// bootstrapAdmin creates the first admin token when none exists and writes
// it to a 0600 file, logging only the file's path. The store checks and
// creates in one transaction: of several replicas starting together on an
// empty database, one creates the token and writes it to its data
// directory, the others find it made.
func bootstrapAdmin(ctx context.Context, st *store.Store, dir string, log *slog.Logger) error {
	secret, err := st.BootstrapAdminToken(ctx, store.Actor{Name: "system"}, "admin", time.Now())
	if err != nil {
		return fmt.Errorf("creating the first admin token: %w", err)
	}
	if secret == "" {
		return nil
	}
	path := filepath.Join(dir, AdminTokenFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writing admin token file: %w", err)
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("writing admin token file: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("syncing admin token file: %w", err)
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing admin token file: %w", err)
	}
	log.Info("created the first admin token", "file", path)
	return nil
}

// sweepLoop ends what time ends. It is level-triggered: it sleeps until the
// next deadline the store reports (at most 5 s), sweeps everything due, and
// after a change (wake) only re-reads the next deadline, so the write
// transaction of a sweep never competes with the grant path. A missed
// wake-up only delays bookkeeping: the firewall does not depend on it, kernel
// timeouts close grants.
//
// It also produces the requests of recurring schedules
// (store.ProduceOccurrences) and starts scheduled requests
// (store.StartScheduled) whose start has come: NextDeadline counts their starts, so the loop wakes at the next one
// (within milliseconds), not on a poll. A missed start only delays the
// access: nothing opens before the sweeper decides it may.
func sweepLoop(ctx context.Context, st sweepStore, activation time.Duration, limits policy.Limits, wake <-chan struct{}, log *slog.Logger) {
	const maxSleep = 5 * time.Second
	// The next expiry warning is read at most every maxSleep (and with every
	// sweep), not after every change: its read passes over the active
	// requests too short to be warned (store.NextDeadlineExceptWarnings),
	// which at 1,000 requests/s was a tenth of the server's CPU and grew with
	// every grant made. A warning that a change brought earlier is found at
	// the next periodic read, at most maxSleep late.
	var warnAt, warnRead time.Time
	readWarning := func() {
		w, err := st.NextExpiryWarning(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Error("finding the next expiry warning", "err", err)
			}
			return
		}
		warnAt, warnRead = w, time.Now()
	}
	sweep := func() time.Time {
		now := time.Now()
		if _, err := st.ProduceOccurrences(ctx, limits, now); err != nil && ctx.Err() == nil {
			log.Error("producing the occurrences of recurring schedules failed", "err", err)
		}
		if _, err := st.StartScheduled(ctx, limits, now); err != nil && ctx.Err() == nil {
			log.Error("starting scheduled requests failed", "err", err)
		}
		next, err := st.Sweep(ctx, now, activation)
		if err != nil && ctx.Err() == nil {
			log.Error("sweep failed", "err", err)
		}
		// Sweep's answer counts the warning too: it was read just now.
		readWarning()
		return next
	}
	next := sweep()
	for {
		sleep := maxSleep
		if !next.IsZero() {
			sleep = min(max(time.Until(next), time.Millisecond), maxSleep)
		}
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
			t.Stop()
			n, err := st.NextDeadlineExceptWarnings(ctx, activation)
			if err != nil {
				if ctx.Err() == nil {
					log.Error("finding the next deadline", "err", err)
				}
				continue
			}
			if time.Since(warnRead) >= maxSleep {
				readWarning()
			}
			next = earliest(n, warnAt)
			if !next.IsZero() && !next.After(time.Now()) {
				next = sweep()
			}
		case <-t.C:
			next = sweep()
		}
	}
}

// sweepStore is what sweepLoop needs of the store.
type sweepStore interface {
	ProduceOccurrences(ctx context.Context, limits policy.Limits, now time.Time) (int, error)
	StartScheduled(ctx context.Context, limits policy.Limits, now time.Time) (int, error)
	Sweep(ctx context.Context, now time.Time, activationTimeout time.Duration) (time.Time, error)
	NextDeadlineExceptWarnings(ctx context.Context, activationTimeout time.Duration) (time.Time, error)
	NextExpiryWarning(ctx context.Context) (time.Time, error)
}

// earliest is the earlier of two instants, zero standing for none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// presenceLoop keeps agent presence in the store (api.Presence.Check): the
// agents this replica serves are refreshed, those no replica has seen
// within the grace period are recorded disconnected.
func presenceLoop(ctx context.Context, p *api.Presence, log *slog.Logger) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.Check(ctx, time.Now()); err != nil && ctx.Err() == nil {
			log.Error("recording agent presence", "err", err)
		}
	}
}

// quietRoutes are answered often by machines (agents' long-polls and
// reports, probes, scrapers): their successes are logged at debug, not
// info, so a fleet's heartbeat does not bury people's calls.
var quietRoutes = map[string]bool{
	"GET /api/v1/agent/desired": true, "POST /api/v1/agent/report": true,
	"GET /healthz": true, "GET /readyz": true, "GET /metrics": true,
}

// logRequests logs each call with its request id (httpedge.RequestID, also
// in the X-Request-Id response header and in the audit events the call
// wrote) and route pattern: successes at info (machine traffic at debug),
// refusals and errors at info, except 429s.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		next.ServeHTTP(rec, r)
		route := httpedge.Route(r.Context())
		// 429s answer floods, and a line each would make the flood the
		// log's (the failed-login limit and the request caps count them
		// and audit one event per period).
		level := slog.LevelInfo
		if rec.status == http.StatusTooManyRequests || rec.status < 400 && quietRoutes[route] {
			level = slog.LevelDebug
		}
		// Agents' calls are at debug, off unless asked for: nothing of
		// their line is built (two calls of the four each request makes).
		if !log.Enabled(r.Context(), level) {
			return
		}
		// A whole answer (its Content-Length set: the API's JSON) leaves
		// before its line is written: otherwise net/http sends it only after
		// this function returns, and every person's call waits for a write
		// to stderr (a pipe to journald) and the wake-up of its reader.
		if w.Header().Get("Content-Length") != "" {
			rec.Flush()
		}
		log.LogAttrs(r.Context(), level, "http", slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("route", route), slog.Int("status", rec.status),
			slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000), slog.String("remote", r.RemoteAddr),
			slog.String("request_id", httpedge.ID(r.Context())))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

// Unwrap lets http.ResponseController and WebSocket upgrades (the bastion
// relay) reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush lets long-polls flush through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// loopback reports whether a listener's address is a loopback address
// (127.0.0.0/8, ::1): only then may plain HTTP stay on the host. An
// unspecified address (0.0.0.0, ::) listens on every interface.
func loopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// openStore opens the PostgreSQL database of cfg.Database, or else the
// SQLite file in the data directory.
func openStore(ctx context.Context, cfg Config) (*store.Store, error) {
	if cfg.Database != "" {
		return store.OpenPostgres(ctx, cfg.Database, cfg.storeConfig())
	}
	return store.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "jitgate.db"), cfg.storeConfig())
}
