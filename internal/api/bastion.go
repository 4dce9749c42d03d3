package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// The bastion's endpoints. An agent holds GET /api/v1/agent/tunnel open (a
// WebSocket carrying a yamux session, internal/relay); a client opens GET
// /api/v1/tunnel?target=T&port=P (a WebSocket carrying one TCP connection).
// The server admits a client only for a live bastion grant of that client's
// own principal, records the session, opens a stream to the target's agent
// (which checks the grant again against its own desired state) and splices.
//
// A session ends, once (internal/session), at the grant's deadline, when the
// grant stops being live (revoked, or its rule no longer allows the
// bastion: whatever close_established says), when killed, when the client,
// the service or the agent goes away, and when the server stops (the next
// start marks sessions a dead server left live as server_lost).

// liveSession is a session being relayed by this process.
type liveSession struct {
	x         session.Session
	count     relay.Counter
	mu        sync.Mutex // guards conns and ended
	conns     []net.Conn
	endedFlag bool
	once      sync.Once
	// why is set once by end; done is closed once the end is recorded.
	why struct {
		reason  session.EndReason
		by, msg string
	}
	stop  chan struct{}
	done  chan struct{}
	ended session.Session
	// p is who opened the tunnel, with the token it used; tokenExp is when
	// that token expires (zero: never). The session ends with the token.
	p        store.Principal
	tokenExp time.Time
	// wake asks watchSession to check the credential again (a token was
	// revoked somewhere).
	wake chan struct{}
	// recorded says a recorder sees the session (a terminal whose rule
	// recorded when it started). A session that is not recorded ends as
	// soon as its rule says record (grantCheck).
	recorded bool
}

// end asks the session to end for reason; the first call wins.
func (ls *liveSession) end(reason session.EndReason, by, msg string) {
	ls.once.Do(func() {
		ls.why.reason, ls.why.by, ls.why.msg = reason, by, msg
		close(ls.stop)
		ls.mu.Lock()
		defer ls.mu.Unlock()
		ls.endedFlag = true
		for _, c := range ls.conns {
			c.SetDeadline(time.Unix(1, 0))
			c.Close()
		}
	})
}

// add makes c end with the session; a session already ended closes it at
// once (a kill may come while the client's upgrade is under way).
func (ls *liveSession) add(c net.Conn) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.conns = append(ls.conns, c)
	if ls.endedFlag {
		c.SetDeadline(time.Unix(1, 0))
		c.Close()
	}
}

// liveSessions are the sessions this process relays, with the byte totals
// of those it ended (for the Prometheus counters).
type liveSessions struct {
	mu                sync.Mutex
	m                 map[string]*liveSession
	endedIn, endedOut atomic.Int64
	// opened counts each principal's sessions being opened or relayed.
	opened map[string]int
	// watching is set while watchEndedElsewhere runs.
	watching bool
	// watchers wake the watches of browser terminals (recording.go) to
	// check their watcher's credential, as credentialsChanged wakes
	// sessions.
	watchers map[chan struct{}]struct{}
}

// addWatcher returns a channel credentialsChanged wakes, and its removal.
func (l *liveSessions) addWatcher() (chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watchers == nil {
		l.watchers = map[chan struct{}]struct{}{}
	}
	l.watchers[ch] = struct{}{}
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.watchers, ch)
	}
}

// trackSession lists ls among the sessions relayed here, and makes sure
// watchEndedElsewhere runs.
func (a *api) trackSession(ls *liveSession) {
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	a.sessions.m[ls.x.ID] = ls
	if !a.sessions.watching {
		a.sessions.watching = true
		go a.watchEndedElsewhere()
	}
}

// endedElsewhereEvery is how often a server with live sessions looks for
// those ended in the database by another replica (a kill through its API).
const endedElsewhereEvery = time.Second

// watchEndedElsewhere ends the sessions relayed here that another replica
// ended in the database (killed through its API, or swept as lost): that
// replica cannot reach this one's connections, so the kill travels through
// the database, and is carried out within endedElsewhereEvery. It runs
// while this process relays sessions, one query per round whatever their
// number.
func (a *api) watchEndedElsewhere() {
	recorded := map[*liveSession][2]int64{}
	for round := 1; ; round++ {
		time.Sleep(endedElsewhereEvery)
		if round%bytesRecordRounds == 0 {
			a.recordLiveBytes(recorded)
		}
		a.sessions.mu.Lock()
		if len(a.sessions.m) == 0 {
			a.sessions.watching = false
			a.sessions.mu.Unlock()
			return
		}
		ids := make([]string, 0, len(a.sessions.m))
		for id := range a.sessions.m {
			ids = append(ids, id)
		}
		a.sessions.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ended, err := a.Store.SessionsEnded(ctx, ids)
		cancel()
		if err != nil {
			a.Logger.Warn("bastion: reading the state of live sessions", "err", err)
			continue
		}
		for _, x := range ended {
			if ls := a.sessions.get(x.ID); ls != nil {
				a.Logger.Info("bastion session ended by another replica", "session", x.ID, "reason", x.Reason, "by", x.EndedBy)
				ls.end(x.Reason, x.EndedBy, x.Message)
			}
		}
	}
}

// bytesRecordRounds is how many rounds of watchEndedElsewhere pass between
// two writes of the live sessions' byte counts.
const bytesRecordRounds = 5

// recordLiveBytes writes the byte counts of the sessions relayed here that
// moved since the last write (recorded), when other replicas are live:
// their lists show the sessions this one relays with these counts (its own
// list shows the exact ones).
func (a *api) recordLiveBytes(recorded map[*liveSession][2]int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if others, err := a.Store.OtherReplicasLive(ctx, a.replicaID(), a.Now()); err != nil || !others {
		return
	}
	live := a.sessions.all()
	seen := make(map[*liveSession]bool, len(live))
	for _, ls := range live {
		seen[ls] = true
		now := [2]int64{ls.count.In.Load(), ls.count.Out.Load()}
		if recorded[ls] == now {
			continue
		}
		if err := a.Store.RecordSessionBytes(ctx, ls.x.ID, now[0], now[1]); err != nil {
			a.Logger.Warn("bastion: recording the bytes of a live session", "session", ls.x.ID, "err", err)
			continue
		}
		recorded[ls] = now
	}
	for ls := range recorded {
		if !seen[ls] {
			delete(recorded, ls)
		}
	}
}

// DefaultMaxSessionsPerPrincipal is the cap on the tunnels one principal
// holds open at once through this server (Deps.MaxSessionsPerPrincipal).
const DefaultMaxSessionsPerPrincipal = 256

// reserve takes one of principal's max session places, counted from before
// the tunnel is opened (so that many opened at once cannot all pass the
// check), and returns the function that gives it back.
func (l *liveSessions) reserve(principal string, max int) (release func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opened[principal] >= max {
		return nil, false
	}
	if l.opened == nil {
		l.opened = map[string]int{}
	}
	l.opened[principal]++
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.opened[principal]--; l.opened[principal] <= 0 {
			delete(l.opened, principal)
		}
	}, true
}

func (l *liveSessions) get(id string) *liveSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[id]
}

func (l *liveSessions) all() []*liveSession {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]*liveSession, 0, len(l.m))
	for _, ls := range l.m {
		out = append(out, ls)
	}
	return out
}

// credentialsChanged wakes every live session to check the token that
// opened it (a token was revoked: perhaps that one, or its parent).
func (l *liveSessions) credentialsChanged() {
	for _, ls := range l.all() {
		select {
		case ls.wake <- struct{}{}:
		default:
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (l *liveSessions) bytes() (in, out int64) {
	in, out = l.endedIn.Load(), l.endedOut.Load()
	for _, ls := range l.all() {
		in += ls.count.In.Load()
		out += ls.count.Out.Load()
	}
	return in, out
}

// registerSessionMetrics adds the bastion's gauges and counters.
func registerSessionMetrics(reg *prometheus.Registry, l *liveSessions) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jitgate_bastion_sessions_live", Help: "Bastion sessions relayed now."},
			func() float64 { return float64(len(l.all())) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "jitgate_bastion_bytes_in_total", Help: "Bytes relayed from clients to targets."},
			func() float64 { in, _ := l.bytes(); return float64(in) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "jitgate_bastion_bytes_out_total", Help: "Bytes relayed from targets to clients."},
			func() float64 { _, out := l.bytes(); return float64(out) }),
	)
}

// errStatus is a refusal with its own HTTP status (the agent is not
// connected: 503; it refused the stream: 502).
func errStatus(status int, format string, a ...any) error {
	return &inputError{status: status, msg: fmt.Sprintf(format, a...)}
}

// agentTunnel holds an agent's relay connection until it ends.
func (a *api) agentTunnel(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	secret, _, _ := credential(r)
	// Taken before anything is checked or written: a change of the target
	// from here on (its agent enrolled anew, which deletes this
	// credential; the target removed) wakes watchAgentCredential, however
	// long the route's write below waits.
	changed := a.Hub.Watch(p.Subject)
	// A removed target's credential lingers until a target of the same name
	// is enrolled: its agent gets 410 here, as from its other endpoints.
	if _, err := a.Store.GetTarget(r.Context(), p.Subject); errors.Is(err, store.ErrNotFound) {
		return &inputError{status: http.StatusGone, msg: "target removed"}
	} else if err != nil {
		return err
	}
	if a.forwarding() && relay.IsUpgrade(r) {
		// Other replicas find the agent here (replicas.go). The route is
		// durable before the handshake completes: once the agent holds its
		// connection, a tunnel reaching any replica finds it (written
		// after the handshake, a tunnel opened at another replica
		// meanwhile was refused "not connected" for as long as the write
		// waited). A route that cannot be written refuses the connection
		// (503): the agent connects again, here or elsewhere, rather than
		// hold a connection the other replicas cannot reach
		// (TestRelayRouteBeforeTheHandshake). A request that is no
		// upgrade (AcceptWS refuses it) records nothing; one whose
		// handshake fails leaves the route of the agent's other
		// connections here as it was (holdRelayRoute).
		release, err := a.holdRelayRoute(r.Context(), p.Subject)
		if err != nil {
			a.Logger.Error("recording the agent's relay route", "target", p.Subject, "err", err)
			return errStatus(http.StatusServiceUnavailable, "cannot record where the relay connection is held; connect again")
		}
		defer release()
	}
	// The credential again, after the route's write (which may have waited
	// behind other writes) and before the handshake: a credential deleted
	// since it authenticated, before the watch above was taken, or by
	// another replica whose change has not reached this one's hub yet, is
	// refused here rather than connected (a replaced host would take the
	// relay connection from the new agent and receive its tunnels until
	// the next check). TestAgentRelayRefusedWhenItsCredentialGoesBeforeTheHandshake.
	if err := a.agentCredentialCurrent(r.Context(), p.Subject, secret); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	conn, err := relay.AcceptWS(ctx, w, r)
	if err != nil {
		return nil // AcceptWS answered the client
	}
	go a.watchAgentCredential(ctx, cancel, p.Subject, secret, changed)
	a.Logger.Info("agent relay connected", "target", p.Subject, "client", a.clientAddr(r))
	err = a.Relay.ServeAgent(ctx, p.Subject, conn)
	a.Logger.Info("agent relay disconnected", "target", p.Subject, "err", err)
	return nil
}

// agentCredentialCurrent checks that secret still authenticates as the
// agent of target, and that target still exists: store.ErrUnauthorized
// (401) or 410 when not.
func (a *api) agentCredentialCurrent(ctx context.Context, target, secret string) error {
	p, err := a.Store.Authenticate(ctx, secret, a.Now())
	if errors.Is(err, store.ErrUnauthorized) || err == nil && (p.Kind != store.KindAgent || p.Subject != target) {
		return fmt.Errorf("the agent's credential no longer authenticates: %w", store.ErrUnauthorized)
	}
	if err != nil {
		return err
	}
	if _, err := a.Store.GetTarget(ctx, target); errors.Is(err, store.ErrNotFound) {
		return &inputError{status: http.StatusGone, msg: "target removed"}
	} else if err != nil {
		return err
	}
	return nil
}

// watchAgentCredential ends an agent's relay connection (cancel) once the
// credential that opened it no longer authenticates (the target was
// enrolled anew, which deletes the old credential, or its agent
// re-enrolled) or its target is removed. Otherwise the old host (perhaps the reason the target was
// removed) would keep receiving the tunnels of the target's new agent until
// that one connected. It checks when the target changes and at least every
// credentialRecheck; changed is the hub's watch taken before the handler's
// own last check, so that a change in between is not missed.
func (a *api) watchAgentCredential(ctx context.Context, cancel context.CancelFunc, target, secret string, changed <-chan struct{}) {
	for ch := changed; ; {
		timer := time.NewTimer(credentialRecheck)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
		ch = a.Hub.Watch(target) // before the check, as changed was
		err := a.agentCredentialCurrent(ctx, target, secret)
		var ie *inputError
		switch {
		case errors.Is(err, store.ErrUnauthorized):
			a.Logger.Info("agent relay closed: its credential no longer authenticates", "target", target)
			cancel()
			return
		case errors.As(err, &ie) && ie.status == http.StatusGone:
			a.Logger.Info("agent relay closed: its target was removed", "target", target)
			cancel()
			return
		}
	}
}

// bastionRule returns the rule of port on t when it allows the bastion.
func bastionRule(t store.Target, port policy.Port) (policy.Rule, error) {
	if t.Policy == nil {
		return policy.Rule{}, &policy.DenyError{Reason: "the target has no JIT policy"}
	}
	rule, ok := t.Policy.Rule(port)
	if !ok {
		return policy.Rule{}, &policy.DenyError{Rule: port.String(), Reason: "the target's policy does not configure this port"}
	}
	if !rule.Access.Bastion() {
		return policy.Rule{}, &policy.DenyError{Rule: port.String(), Reason: "this port is not reachable through the bastion (its rule's access is direct)"}
	}
	return rule, nil
}

// tunnel relays one client connection to port of target, and audits a
// refusal as access.denied (through the refusal log, so a flood of the
// same refusal is one row and a count). Opening a tunnel uses a grant, as
// a request changes state, although it is a GET (a WebSocket upgrade):
// without this, probing which targets and ports a principal can reach
// through the relay (no grant, a direct-only or unnamed port, another
// scope) left no trace, since auditDenied skips GETs and refusals by a
// policy (which the store audits with the request; here there is none).
func (a *api) tunnel(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	err := a.openTunnel(w, r, p)
	if status := statusOf(err); err != nil && status >= 400 && status < 500 && status != http.StatusUnauthorized {
		e := a.deniedEvent(r, p, err, status)
		q := r.URL.Query()
		if name := q.Get("target"); policy.ValidateTargetName(name) == nil {
			e.Target = name
		}
		e.Details["port"] = text.Sanitize(q.Get("port"), 16)
		a.recordDenied(r, e)
	}
	return err
}

func (a *api) openTunnel(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	// A browser's session cookie does not open tunnels: a page of another
	// site could otherwise open one with it (cross-site WebSocket
	// hijacking). The clients send their token as a bearer.
	if _, ok := bearer(r); !ok {
		return fmt.Errorf("a tunnel needs a bearer token (jitgate connect), not a browser session: %w", errForbidden)
	}
	q := r.URL.Query()
	name := strings.TrimSpace(q.Get("target"))
	if name == "" {
		return invalidField("target", "required")
	}
	port, err := policy.ParsePort(q.Get("port"))
	if err != nil {
		return invalidField("port", "%v", err)
	}
	if port.Protocol != policy.TCP {
		return invalidField("port", "only TCP ports are relayed")
	}
	// Using a grant needs the role that asks for one, in the target's scope
	// (a principal whose role was taken away cannot use what it holds).
	t, err := a.targetFor(r.Context(), p, authz.CreateRequest, name)
	if err != nil {
		return err
	}
	rule, err := bastionRule(t, port)
	if err != nil {
		return err
	}
	// A recorded port is reached only through the server's own SSH
	// terminal, which sees (and records) the session; a raw tunnel would
	// carry it encrypted past the recorder.
	if rule.Record {
		return &policy.DenyError{Rule: port.String(), Reason: "sessions on this port are recorded, and a raw tunnel cannot be: " +
			"use the console's terminal or jitgate ssh, which go through the server's recorded SSH terminal"}
	}
	now := a.Now()
	g, err := a.Store.BastionGrant(r.Context(), name, p.Name(), port, now)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%s holds no active grant for %s on %s: ask for one first (jitgate request %s --port %d --bastion, or jitgate ssh): %w",
			p.Name(), port, name, name, port.Number, errForbidden)
	}
	if err != nil {
		return err
	}
	// Every tunnel costs the server and the agent a connection, goroutines
	// and rows: one principal (or a script gone wrong, or a stolen token)
	// does not get to hold them without bound.
	maxSessions := a.MaxSessionsPerPrincipal
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessionsPerPrincipal
	}
	release, ok := a.sessions.reserve(p.Name(), maxSessions)
	if !ok {
		return errStatus(http.StatusTooManyRequests, "%s already holds the maximum of %d open bastion tunnels; close some first", p.Name(), maxSessions)
	}
	defer release()
	// The tunnel lives no longer than the token that opens it.
	tok, err := a.Store.GetToken(r.Context(), p.TokenID, now)
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrUnauthorized
	}
	if err != nil {
		return err
	}
	x := session.Session{ID: store.NewSessionID(), Target: name, Principal: p.Name(), RequestID: g.RequestID, Protocol: string(port.Protocol),
		Port: port.Number, StartedAt: now, Deadline: g.ExpiresAt, State: session.Live, Replica: a.replicaID()}
	if addr := a.clientAddr(r); addr.IsValid() {
		x.ClientAddr = addr.String()
	}
	// A target behind a gateway runs no agent: the gateway's agent holds
	// the relay connection and dials the target's address itself.
	via := name
	if t.Gateway != "" {
		via = t.Gateway
	}
	octx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	st, err := a.Relay.Open(octx, via, relay.Header{Session: x.ID, RequestID: g.RequestID, Principal: p.Name(), Protocol: string(port.Protocol),
		Port: port.Number, Deadline: g.ExpiresAt})
	// The agent's relay connection may be held by another replica: the
	// stream goes there (which checks the grant again).
	forwardedTo := ""
	if errors.Is(err, relay.ErrNoAgent) && a.forwarding() {
		st, forwardedTo, err = a.forward(octx, via, name, port, p.Name(), x.ID)
	}
	cancel()
	var refusal *relay.Refusal
	switch {
	case errors.Is(err, relay.ErrNoAgent):
		return errStatus(http.StatusServiceUnavailable, "the agent of %s is not connected to the bastion relay; try again when it is", via)
	case errors.Is(err, errForbidden):
		return err
	case errors.As(err, &refusal):
		return errStatus(http.StatusBadGateway, "%v", refusal)
	case err != nil:
		return errStatus(http.StatusBadGateway, "opening the tunnel to %s: %v", name, err)
	}
	if err := a.Store.StartSession(r.Context(), x); err != nil {
		st.Close()
		return err
	}
	ls := &liveSession{x: x, stop: make(chan struct{}), done: make(chan struct{}), p: p, wake: make(chan struct{}, 1)}
	if tok.ExpiresAt != nil {
		ls.tokenExp = *tok.ExpiresAt
	}
	ls.count.Touch(time.Now()) // idle time counts from the start
	ls.add(st)
	a.trackSession(ls)
	defer func() {
		a.sessions.mu.Lock()
		delete(a.sessions.m, x.ID)
		a.sessions.mu.Unlock()
		a.sessions.endedIn.Add(ls.count.In.Load())
		a.sessions.endedOut.Add(ls.count.Out.Load())
		close(ls.done)
	}()

	sctx, scancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer scancel()
	conn, err := relay.AcceptWS(sctx, w, r)
	if err != nil {
		ls.end(session.Closed, "", "the client's WebSocket upgrade failed")
		a.recordEnd(ls)
		return nil
	}
	ls.add(conn)
	a.Logger.Info("bastion session started", "session", x.ID, "target", name, "principal", x.Principal, "port", port, "until", x.Deadline)
	go a.watchSession(sctx, ls)
	relay.Splice(conn, st, &ls.count)
	// The agent may have ended the stream first (it watches the grant
	// too): say why the grant ended rather than "closed".
	if reason, msg, _, _ := a.grantCheck(context.WithoutCancel(r.Context()), ls.x, ls.recorded); reason != "" {
		ls.end(reason, "", msg)
	}
	if forwardedTo == "" && !a.Relay.Connected(via) || forwardedTo != "" && !a.replicaAlive(forwardedTo) {
		ls.end(session.AgentLost, "", "")
	}
	ls.end(session.Closed, "", "")
	a.recordEnd(ls)
	return nil
}

// recordEnd writes the session's end; a session already ended elsewhere
// (the server's stop) is left as it is.
func (a *api) recordEnd(ls *liveSession) {
	// The end is recorded even when the client's request is gone.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := a.Store.EndSession(ctx, ls.x.ID, ls.why.reason, ls.why.by, ls.why.msg, ls.count.In.Load(), ls.count.Out.Load(), a.Now())
	if err != nil && !errors.Is(err, store.ErrConflict) {
		a.Logger.Error("recording the end of a bastion session", "session", ls.x.ID, "err", err)
	}
	ls.ended = x
	a.Logger.Info("bastion session ended", "session", ls.x.ID, "reason", ls.why.reason, "bytes_in", ls.count.In.Load(), "bytes_out", ls.count.Out.Load())
}

// watchSession ends ls at its grant's deadline, or as soon as its grant is
// no longer live: it re-reads the grant whenever the target changes (the
// hub wakes it on revocation, policy changes, extensions), so a tunnel
// never outlives its grant whatever close_established says.
func (a *api) watchSession(ctx context.Context, ls *liveSession) {
	x := ls.x
	for {
		ch := a.Hub.Watch(x.Target)
		reason, msg, deadline, idle := a.grantCheck(ctx, x, ls.recorded)
		if reason != "" {
			ls.end(reason, "", msg)
			return
		}
		if why := a.credentialCheck(ctx, ls); why != "" {
			ls.end(session.Revoked, "", why)
			return
		}
		known := !deadline.IsZero()
		if !known {
			deadline = x.Deadline
		}
		wait := time.Until(deadline)
		if !known {
			wait = min(wait, time.Second)
		}
		// Idle time runs on the wall clock of the bytes (Counter.Touch).
		if last := ls.count.LastActive(); idle > 0 {
			if session.IdleAt(last, idle, time.Now()) {
				ls.end(session.Idle, "", fmt.Sprintf("no byte moved for %s", policy.FormatDuration(idle)))
				return
			}
			wait = min(wait, time.Until(last.Add(idle)))
		}
		if !ls.tokenExp.IsZero() {
			wait = min(wait, ls.tokenExp.Sub(a.Now()))
		}
		// A token revoked through the API wakes the session at once
		// (credentialsChanged); other ends of a token or of the role
		// (a console logout, a binding removed) are seen within this.
		wait = min(wait, credentialRecheck)
		timer := time.NewTimer(max(wait, 0))
		select {
		case <-ch:
		case <-ls.wake:
		case <-timer.C:
		case <-ls.stop:
			timer.Stop()
			return
		case <-ctx.Done():
			timer.Stop()
			return
		}
		timer.Stop()
	}
}

// credentialRecheck bounds how long a session goes without checking that
// the token that opened it still authenticates and its principal may still
// use grants on the target.
const credentialRecheck = 10 * time.Second

// credentialCheck says why ls must end now because of who opened it ("" when
// it may go on): the token expired or was revoked (or the one it was made
// with), or the principal lost the role that uses grants on the target. A
// read that fails decides nothing (the next wake checks again).
func (a *api) credentialCheck(ctx context.Context, ls *liveSession) string {
	now := a.Now()
	if !ls.tokenExp.IsZero() && !now.Before(ls.tokenExp) {
		return "the token that opened the tunnel expired"
	}
	_, err := a.Store.GetToken(ctx, ls.p.TokenID, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "the token that opened the tunnel was revoked"
	case err != nil:
		return ""
	}
	if err := a.require(ctx, ls.p, authz.CreateRequest, a.targetOf(ctx, ls.x.Target)); errors.Is(err, errForbidden) {
		return "its principal may no longer use grants on " + ls.x.Target
	}
	return ""
}

// grantCheck says why session x must end now ("" when it may go on) and,
// when there is more to say, a message; the deadline of the grant it runs
// under (zero when a read failed: decide at the next wake; an extension of
// the grant moves it) and the rule's idle timeout. recorded says whether a
// recorder sees the session: one that is not ends (revoked) as soon as its
// rule says record, so turning recording on ends the raw tunnels and
// unrecorded terminals already open on the port (fail closed).
func (a *api) grantCheck(ctx context.Context, x session.Session, recorded bool) (session.EndReason, string, time.Time, time.Duration) {
	port := policy.Port{Number: x.Port, Protocol: policy.Protocol(x.Protocol)}
	now := a.Now()
	live := true
	deadline := x.Deadline
	var idle time.Duration
	unrecorded := false
	g, err := a.Store.BastionGrant(ctx, x.Target, x.Principal, port, now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		live = false
	case err != nil:
		return "", "", time.Time{}, 0
	default:
		deadline = g.ExpiresAt
		t, err := a.Store.GetTarget(ctx, x.Target)
		switch {
		case errors.Is(err, store.ErrNotFound):
			live = false
		case err != nil:
			return "", "", time.Time{}, 0
		default:
			if rule, err := bastionRule(t, port); err != nil {
				live = false
			} else {
				idle = rule.IdleTimeout
				unrecorded = rule.Record && !recorded
			}
		}
	}
	cur := x
	cur.Deadline = deadline
	reason := cur.ReasonAt(now, live && !unrecorded)
	msg := ""
	if reason == session.Revoked && live && unrecorded {
		msg = "sessions on this port must now be recorded, and this one is not"
	}
	return reason, msg, deadline, idle
}

func toWireSession(x session.Session) wire.BastionSession {
	return wire.BastionSession{ID: x.ID, Target: x.Target, Principal: x.Principal, RequestID: x.RequestID, Port: fmt.Sprintf("%d/%s", x.Port, x.Protocol), Via: x.Via, Login: x.Login,
		ClientAddr: x.ClientAddr, State: string(x.State), StartedAt: x.StartedAt, Deadline: x.Deadline, EndedAt: x.EndedAt,
		EndReason: string(x.Reason), EndedBy: x.EndedBy, Message: x.Message, BytesIn: x.BytesIn, BytesOut: x.BytesOut}
}

// sessionVisible reports whether p may see session x: its own, or any on a
// target where p's roles read others' requests, the target as it was when
// the session started (targetAt: not a namesake created since).
func (a *api) sessionVisible(ctx context.Context, p store.Principal, bs []authz.Binding, x session.Session, targets map[string]*store.Target) bool {
	if x.Principal == p.Name() {
		return true
	}
	t := targets[x.Target]
	ok := authz.Allowed(bs, p.Authz(), authz.ReadAnyRequest, a.targetAt(ctx, x.Target, x.StartedAt, &t))
	targets[x.Target] = t
	return ok
}

// Paging of GET /api/v1/sessions: at most maxSessionPage a page (also the
// default), and at most sessionScan rows read for one page. Visibility
// (one's own sessions, and those on targets where one's roles read others'
// requests) is decided here, by authz, after the SQL filters: a page of a
// principal who sees few of many rows may come back short, with a next
// link, rather than read the whole table.
const (
	maxSessionPage = 1000
	sessionScan    = 10000
)

// listSessions lists the sessions p may see, newest first, a page at a
// time: ?active=true keeps the live ones, ?target= one target's,
// ?principal= one principal's; ?limit= sets the page size and ?cursor=
// (from the previous page's Link: rel="next") continues. A live session
// relayed here shows its bytes so far.
func (a *api) listSessions(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	q := r.URL.Query()
	search, err := sessionSearch(q)
	if err != nil {
		return err
	}
	f := store.SessionFilter{ID: search.id, Target: search.target, Principal: search.principal}
	switch v := q.Get("active"); v {
	case "", "false":
	case "true":
		f.Live = true
	default:
		return invalidField("active", "must be true or false")
	}
	if f.Target != "" {
		if err := policy.ValidateTargetName(f.Target); err != nil {
			return invalidField("target", "%v", err)
		}
	}
	limit := maxSessionPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxSessionPage {
			return invalidField("limit", "must be a whole number from 1 to %d", maxSessionPage)
		}
		limit = n
	}
	var after store.SessionKey
	if ok, err := a.readCursor(r, p, &after); err != nil {
		return err
	} else if ok {
		f.After = &after
	}
	bs, err := a.Store.ListBindings(r.Context())
	if err != nil {
		return err
	}
	// Whoever reads others' requests nowhere sees only their own
	// sessions: ask the database for those alone.
	if !readsOthers(bs, p) {
		if f.Principal != "" && f.Principal != p.Name() {
			writeJSON(w, http.StatusOK, []wire.BastionSession{})
			return nil
		}
		f.Principal = p.Name()
	}
	targets := map[string]*store.Target{}
	out := []wire.BastionSession{}
	more := false
	f.Limit = limit
	budget := a.scanBudget(sessionScan)
	for scanned := 0; len(out) < limit; {
		xs, err := a.Store.ListSessions(r.Context(), f)
		if err != nil {
			return err
		}
		for i, x := range xs {
			k := store.SessionKeyOf(x)
			f.After = &k
			scanned++
			if !a.sessionVisible(r.Context(), p, bs, x, targets) {
				continue
			}
			if ls := a.sessions.get(x.ID); ls != nil && x.State == session.Live {
				x.BytesIn, x.BytesOut = ls.count.In.Load(), ls.count.Out.Load()
			}
			out = append(out, toWireSession(x))
			if len(out) == limit {
				more = i < len(xs)-1 || len(xs) == f.Limit
				break
			}
		}
		if len(out) == limit {
			break
		}
		// A full batch may have more behind it.
		more = len(xs) == f.Limit
		if !more || scanned >= budget {
			break
		}
	}
	if err := a.addRecordings(r.Context(), out); err != nil {
		return err
	}
	if more {
		if err := a.setNextCursor(w, r, p, *f.After); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// readsOthers reports whether p reads others' requests anywhere.
func readsOthers(bs []authz.Binding, p store.Principal) bool {
	for _, g := range authz.Grants(bs, p.Authz()) {
		if g.Role.Allows(authz.ReadAnyRequest) {
			return true
		}
	}
	return false
}

// killSession ends a live session at once. Who may: whoever may revoke
// others' requests on the session's target (approvers in its scope and
// admins): killing a session is revoking its use of the grant. The grant
// itself stays live; revoke it to keep the person out.
func (a *api) killSession(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.SessionKill
	if err := decode(w, r, &in); err != nil {
		return err
	}
	reason := strings.TrimSpace(in.Reason)
	if reason == "" {
		return invalidField("reason", "required: say why the session is ended")
	}
	if err := policy.CheckReason(reason); err != nil {
		return err
	}
	id := r.PathValue("id")
	x, err := a.Store.GetSession(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		// As for targets: a principal that may not kill anywhere learns
		// nothing about which ids exist.
		if rerr := a.require(r.Context(), p, authz.RevokeAny, nil); rerr != nil {
			return rerr
		}
	}
	if err != nil {
		return err
	}
	// Judged by its target as it was when the session started (targetAt),
	// as the listing is: a namesake's revoker learns nothing of it.
	var cur *store.Target
	if err := a.require(r.Context(), p, authz.RevokeAny, a.targetAt(r.Context(), x.Target, x.StartedAt, &cur)); err != nil {
		return err
	}
	if x.State != session.Live {
		return fmt.Errorf("session %s already ended (%s): %w", id, x.Reason, store.ErrConflict)
	}
	if ls := a.sessions.get(id); ls != nil {
		ls.end(session.Killed, p.Name(), reason)
		select {
		case <-ls.done:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		x, err = a.Store.GetSession(r.Context(), id)
	} else {
		// Recorded live but not relayed here: its server is gone, or
		// another replica relays it and sees the end in the database
		// within endedElsewhereEvery (watchEndedElsewhere).
		x, err = a.Store.EndSession(r.Context(), id, session.Killed, p.Name(), reason, x.BytesIn, x.BytesOut, a.Now())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWireSession(x))
	return nil
}
