// Package api serves jitgate's REST API under /api/v1. It authenticates
// bearer tokens (or a browser's session cookie), decodes and validates
// input, calls the store, and maps errors to HTTP status codes (the only
// package that does).
//
// Every endpoint needs a token except /healthz, /readyz and the single sign-on
// endpoints, which are the login itself (sso.go): GET /auth/login,
// GET /auth/callback, POST /api/v1/auth/device and POST /api/v1/auth/device/token.
// (Agent enrollment takes its enrollment token as the bearer.)
package api

import (
	"context"
	"crypto/ed25519"
	_ "embed"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/replica"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/webterm"
	"github.com/jitgate/jitgate/internal/wire"
)

//go:embed openapi.json
var openAPI []byte

// Deps is what the API needs.
type Deps struct {
	Store          *store.Store
	Hub            *Hub
	Limits         policy.Limits
	TrustedProxies []netip.Prefix
	AgentPollWait  time.Duration
	EnrollTokenTTL time.Duration
	Presence       *Presence
	Metrics        *Metrics
	Registry       *prometheus.Registry
	Logger         *slog.Logger
	Now            func() time.Time
	// SSO is the OpenID provider people sign in with; nil means single
	// sign-on is not configured.
	SSO *oidc.Provider
	// Refusals counts repeated identical refusals and audits them once per
	// window (refusals.go); nil writes each refusal at once.
	Refusals *RefusalLog
	// FailedLogins limits failed logins per source (default: 5, then one
	// more every 12 s; Burst < 0 turns the limit off).
	FailedLogins LoginLimit
	// WebhookAllowPrivate admits webhook URLs on loopback, link-local and
	// private addresses (the deliverer's notify.Options.AllowPrivate must
	// agree: it checks the dialled address).
	WebhookAllowPrivate bool
	// RevisionsAtStart are the targets' revisions when the server started
	// (after its restore guard). With them, an agent that claims a revision
	// above both that and every revision served since is taken for a sign
	// that the database went back (agent.go, knownRevisions); nil turns
	// that check off.
	RevisionsAtStart map[string]int64
	// MaxSessionsPerPrincipal caps the bastion tunnels one principal holds
	// open at once (0: DefaultMaxSessionsPerPrincipal); more get 429.
	MaxSessionsPerPrincipal int
	// Relay holds the agents' bastion relay connections (nil: a new one).
	// The server closes it when it stops, which ends every session.
	Relay *relay.Server
	// SSHCA signs SSH user certificates for grants (internal/sshca); nil:
	// the certificate endpoints answer 503.
	SSHCA ssh.Signer
	// TerminalObserver makes the Observer of each browser terminal session
	// (the recorder, watchers: internal/webterm); nil: none.
	TerminalObserver webterm.ObserverFunc
	// Replica places this server among replicas sharing one database
	// (replicas.go); nil: the only server, and no stream is forwarded.
	Replica *Replica
	// Recordings keeps the recordings of sessions whose rule records
	// (internal/recording); nil: such sessions are refused.
	Recordings *recording.Dir
	// BreakGlassKey signs offline break-glass tokens; its public half goes
	// to agents with their desired state (breakglass.go). Nil: the token
	// endpoints answer 503 and agents learn no key.
	BreakGlassKey ed25519.PrivateKey
	// BreakGlassMax caps an online break-glass (0: access.DefaultBreakGlassMax).
	BreakGlassMax time.Duration
	// ListScan is how many rows one page of a list filtered by authz reads
	// at most before it answers short, with a next link (paging.go; 0: 20,000
	// for targets and requests, 10,000 for sessions).
	ListScan int
}

type api struct {
	Deps
	logins    *logins           // single sign-on in progress and failed-login limits (sso.go)
	known     *knownRevisions   // highest revision of each target known to this process (agent.go)
	sessions  *liveSessions     // bastion sessions relayed by this process (bastion.go)
	verifier  *replica.Verifier // checks streams forwarded by other replicas (replicas.go)
	terminals *terminals        // browser terminals of this process, for watchers (recording.go)
	cursors   cursorSeal        // seal of list cursors (paging.go)
	// relayRoutes are the routes of the agents' relay connections held
	// here (relayroute.go).
	relayRoutes relayRoutes
}

// New returns the HTTP handler of the whole API.
func New(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Relay == nil {
		d.Relay = relay.NewServer()
	}
	a := &api{Deps: d, logins: newLogins(d.FailedLogins), sessions: &liveSessions{m: map[string]*liveSession{}}, verifier: &replica.Verifier{},
		terminals: &terminals{}}
	// Every terminal is watchable, and recorded where its rule says so,
	// whatever observer the server adds (recording.go).
	a.TerminalObserver = a.observe(d.TerminalObserver)
	if d.Hub != nil && d.Store != nil {
		// Client long-polls wake only when their own request moved:
		// told by the store when it sees every change, else by reading
		// versions after each change of their target.
		d.Hub.readVersionsWith(d.Store.RequestVersions)
		if d.Store.RequestChangesComplete() {
			d.Hub.preciseFrom(d.Store.SubscribeRequests)
		}
		// The agents' long-polls wake at a commit, before its sync, and
		// read while it runs (Hub.Committed; their answers wait:
		// durableAnswers).
		d.Store.SubscribeCommitted(d.Hub.Committed)
	}
	if d.RevisionsAtStart != nil {
		a.known = &knownRevisions{m: maps.Clone(d.RevisionsAtStart)}
	}
	if d.Registry != nil && d.Store != nil {
		d.Registry.MustRegister(newBlockedCollector(d.Store), newRemovalCollector(d.Store, d.Now), newWriteBatchCollector(d.Store), newSyncCollector(d.Store))
		registerSessionMetrics(d.Registry, a.sessions)
		if d.Presence != nil {
			d.Registry.MustRegister(newPresenceCollector(d.Presence))
		}
	}
	mux, _ := a.routes()
	// The request id (httpedge.RequestID) is in place before anything logs
	// or audits; the server's edge usually set it already.
	return httpedge.RequestID(a.recoverer(limitBodies(a.Logger, a.Metrics.instrument(durableAnswers(d.Store, a.Logger, plainAddress(mux))))))
}

// limitBodies bounds the body of every request, whether its endpoint reads
// one or not: a body declared larger than maxBody is refused with 413 before
// any handler runs, and an undeclared (chunked) one is cut at maxBody, which
// decode reports as 413. The time a body may take is bounded by the server
// (internal/server bodyDeadline), which decode reports as 408.
func limitBodies(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > maxBody {
			w.Header().Set("Connection", "close") // the rest of the body is not read
			writeError(w, log, &http.MaxBytesError{Limit: maxBody})
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		}
		next.ServeHTTP(w, r)
	})
}

// routes registers every endpoint and returns the patterns (the OpenAPI test
// checks each one is documented).
func (a *api) routes() (*http.ServeMux, []string) {
	mux := http.NewServeMux()
	var patterns []string
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		patterns = append(patterns, pattern)
	}
	handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	// Readiness asks the database (within 2 s): a load balancer stops
	// sending calls to a replica that cannot reach it, while /healthz (the
	// process answers) stays cheap for liveness probes.
	handle("GET /readyz", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.Store.Ping(ctx); err != nil {
			a.Logger.Warn("readiness: the database does not answer", "err", err)
			writeProblem(w, http.StatusServiceUnavailable, wire.Error{Error: "the database does not answer"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}))
	human := func(h handlerFunc) http.Handler { return a.auth(h, store.KindAdmin) }
	agent := func(h handlerFunc) http.Handler { return a.auth(h, store.KindAgent) }

	handle("GET /api/v1/openapi.json", human(func(w http.ResponseWriter, r *http.Request, p store.Principal) error {
		w.Header().Set("Content-Type", "application/json")
		_, err := w.Write(openAPI)
		return err
	}))
	handle("GET /metrics", human(a.wholeTrailReader(func(w http.ResponseWriter, r *http.Request, p store.Principal) error {
		promhttp.HandlerFor(a.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
		return nil
	})))
	handle("GET /api/v1/whoami", human(a.whoami))
	handle("POST /api/v1/targets", human(a.createTarget))
	handle("GET /api/v1/targets", human(a.listTargets))
	handle("GET /api/v1/targets/{name}", human(a.getTarget))
	handle("DELETE /api/v1/targets/{name}", human(a.removeTarget))
	handle("POST /api/v1/targets/{name}/enroll-token", human(a.reissueEnrollToken))
	handle("PUT /api/v1/targets/{name}/policy", human(a.setPolicy))
	handle("GET /api/v1/targets/{name}/policy", human(a.getPolicy))
	handle("DELETE /api/v1/targets/{name}/policy", human(a.removePolicy))
	handle("POST /api/v1/policies/enable", human(a.enablePolicy))
	handle("POST /api/v1/requests", human(a.createRequest))
	handle("GET /api/v1/requests", human(a.listRequests))
	handle("GET /api/v1/requests/{id}", human(a.getRequest))
	handle("POST /api/v1/requests/{id}/revoke", human(a.revokeRequest))
	handle("POST /api/v1/requests/{id}/approve", human(a.decide(true)))
	handle("POST /api/v1/requests/{id}/deny", human(a.decide(false)))
	handle("GET /api/v1/bindings", human(a.listBindings))
	handle("POST /api/v1/bindings", human(a.createBinding))
	handle("DELETE /api/v1/bindings", human(a.deleteBinding))
	handle("GET /api/v1/tokens", human(a.listTokens))
	handle("POST /api/v1/tokens", human(a.createToken))
	handle("DELETE /api/v1/tokens/{id}", human(a.revokeToken))
	handle("GET /api/v1/webhooks", human(a.listWebhooks))
	handle("POST /api/v1/webhooks", human(a.createWebhook))
	handle("DELETE /api/v1/webhooks/{id}", human(a.deleteWebhook))
	handle("GET /api/v1/schedules", human(a.listSchedules))
	handle("POST /api/v1/schedules", human(a.createSchedule))
	handle("DELETE /api/v1/schedules/{id}", human(a.deleteSchedule))
	handle("GET /api/v1/webhooks/{id}/deliveries", human(a.listDeliveries))
	handle("GET /api/v1/audit", human(a.auditReader(a.listAudit)))
	handle("GET /api/v1/audit/verify", human(a.wholeTrailReader(a.verifyAudit)))
	handle("GET /api/v1/audit/export", human(a.auditReader(a.exportAudit)))
	handle("GET /auth/login", http.HandlerFunc(a.ssoLogin))
	handle("GET /auth/callback", http.HandlerFunc(a.ssoCallback))
	handle("POST /api/v1/auth/device", http.HandlerFunc(a.deviceStart))
	handle("POST /api/v1/auth/device/token", http.HandlerFunc(a.deviceToken))
	handle("POST /api/v1/agent/enroll", http.HandlerFunc(a.enroll))
	handle("GET /api/v1/agent/desired", agent(a.desired))
	handle("POST /api/v1/agent/report", agent(a.report))
	handle("GET /api/v1/agent/tunnel", agent(a.agentTunnel))
	handle("GET /api/v1/tunnel", human(a.tunnel))
	handle("GET /api/v1/replica/tunnel", http.HandlerFunc(a.replicaTunnel))
	handle("GET /api/v1/sessions", human(a.listSessions))
	handle("POST /api/v1/sessions/{id}/kill", human(a.killSession))
	handle("GET /api/v1/sessions/{id}/recording", human(a.getRecording))
	handle("GET /api/v1/sessions/{id}/watch", human(a.watchTerminal))
	handle("POST /api/v1/requests/{id}/ssh-certificate", human(a.sshCertificate))
	handle("GET /api/v1/ssh/ca", human(a.sshCA))
	handle("GET /api/v1/requests/{id}/terminal", human(a.terminal))
	handle("GET /api/v1/agent/ssh-ca", agent(a.sshCA))
	handle("POST /api/v1/breakglass", human(a.openBreakGlass))
	handle("GET /api/v1/breakglass/alerts", human(a.auditReader(a.listAlerts)))
	handle("POST /api/v1/breakglass/alerts/{id}/review", human(a.reviewAlert))
	handle("POST /api/v1/breakglass/tokens", human(a.issueBreakGlassToken))
	handle("GET /api/v1/breakglass/tokens", human(a.listBreakGlassTokens))
	handle("DELETE /api/v1/breakglass/tokens/{id}", human(a.revokeBreakGlassToken))
	handle("POST /api/v1/agent/breakglass", agent(a.breakGlassUse))
	// Anything else: a known path asked with another method is 405 with
	// Allow (the catch-all pattern matches every method, so ServeMux's own
	// 405 never happens, and it would answer plain text), an unknown path
	// 404; both as problems.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeProblem(w, http.StatusMethodNotAllowed, wire.Error{Error: r.Method + " is not allowed on " + r.URL.Path + "; use " + strings.Join(allow, ", ")})
			return
		}
		writeProblem(w, http.StatusNotFound, wire.Error{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux, patterns
}

// allowedMethods lists the methods some pattern other than the catch-all
// serves r's path with (none: the path is unknown).
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			allow = append(allow, m)
		}
	}
	return allow
}

type handlerFunc func(http.ResponseWriter, *http.Request, store.Principal) error

// auth admits a request whose bearer token is valid and of kind; the kind
// KindAdmin stands for every human kind (admin, personal, session, service),
// whose rights the handlers then check against role bindings. A browser's
// session cookie counts as its bearer token, but then a request that is not
// a GET or HEAD must carry the CSRF token too.
//
// The credential is checked first, whatever its source did before: a valid
// token is never refused because others failed from the same address (a
// NAT, a proxy, or an unprivileged process on an agent's own host flooding
// bad tokens to keep the agent away). Only refused tokens are limited per
// source, like failed logins (authFailed).
func (a *api) auth(h handlerFunc, kind string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secret, fromCookie, ok := credential(r)
		if !ok {
			writeError(w, a.Logger, store.ErrUnauthorized)
			return
		}
		p, err := a.Store.Authenticate(r.Context(), secret, a.Now())
		if err != nil {
			a.authFailed(w, r, fromCookie, err)
			return
		}
		// The connection carries a valid credential: it no longer counts
		// against its address's connection cap.
		httpedge.Authenticated(r)
		if fromCookie && !csrfOK(w, r) {
			return
		}
		if kind == store.KindAdmin && !p.Human() || kind != store.KindAdmin && p.Kind != kind {
			writeError(w, a.Logger, errForbidden)
			return
		}
		if err := h(w, r, p); err != nil {
			a.auditDenied(r, p, err)
			writeError(w, a.Logger, err)
		}
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", false
	}
	return strings.TrimSpace(token), true
}

// recoverer turns a panic into a 500 so one bad request cannot stop the server.
func (a *api) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == http.ErrAbortHandler {
				panic(v) // net/http cuts the response short, as the handler asked
			}
			if v != nil {
				a.Logger.Error("panic in handler", "path", r.URL.Path, "panic", v)
				writeProblem(w, http.StatusInternalServerError, wire.Error{Error: "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// clientAddr is the address the request came from, resolved behind the
// trusted proxies by the one rule the console shares (httpedge.ClientAddr).
func (a *api) clientAddr(r *http.Request) netip.Addr {
	return httpedge.ClientAddr(r, a.TrustedProxies)
}

func (a *api) actor(r *http.Request, p store.Principal) store.Actor {
	act := store.Actor{Name: p.Name()}
	if addr := a.clientAddr(r); addr.IsValid() {
		act.ClientAddr = addr.String()
	}
	return act
}

// waitFor blocks until ch is closed, d passes or the client goes away.
func waitFor(ctx context.Context, ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}
