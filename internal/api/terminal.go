package api

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/session"
	"github.com/jitgate/jitgate/internal/sshca"
	"github.com/jitgate/jitgate/internal/sshca/sshhost"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/webterm"
)

// The browser terminal: GET /api/v1/requests/{id}/terminal?port=22&login=NAME,
// upgraded to a WebSocket (internal/webterm speaks the protocol). The server
// runs the SSH client itself over a stream the relay opens to the target's
// agent, under the same grant check, session record and ends as a tunnel
// (bastion.go), and accepts only the host keys the target's agent reported.
//
// Who: the request's own requester, with a bearer token (the CLI) or the
// console's session cookie. A cookie comes with the browser wherever the
// page that opens the WebSocket is from, so with a cookie the Origin must be
// this server's own (else any site the person visits could open a terminal
// as them: cross-site WebSocket hijacking), and the first frame repeats the
// CSRF cookie.
//
// Refusals before the upgrade are HTTP answers (the console's page fetches
// the same URL without the upgrade to show why); from the start frame on,
// the terminal's end message says why.

// sameOriginWS reports whether a cookie-authenticated WebSocket comes from
// a page of this server: its Origin names this host. A WebSocket carries no
// CSRF header and browsers always send Origin on one, so a missing Origin
// is refused too.
func sameOriginWS(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// terminal admits and runs one browser terminal, auditing a refusal as a
// tunnel's is (access.denied through the refusal log).
func (a *api) terminal(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	err := a.openTerminal(w, r, p)
	if status := statusOf(err); err != nil && status >= 400 && status < 500 && status != http.StatusUnauthorized {
		e := a.deniedEvent(r, p, err, status)
		q := r.URL.Query()
		e.Details["port"] = q.Get("port")
		e.Details["via"] = session.ViaTerminal
		a.recordDenied(r, e)
	}
	return err
}

// terminalGrant is what the checks before the upgrade found.
type terminalGrant struct {
	req      store.Request
	target   store.Target
	rule     policy.Rule
	port     policy.Port
	login    string
	grant    store.GrantRow
	hostKeys []ssh.PublicKey
}

// checkTerminal runs every check that needs no WebSocket.
func (a *api) checkTerminal(r *http.Request, p store.Principal) (terminalGrant, error) {
	var tg terminalGrant
	// Only the upgrade opens anything: the console's page asks the same
	// URL without it (and without Origin, which a same-origin GET does not
	// send) to learn why an upgrade was refused.
	if _, ok := bearer(r); !ok && isUpgrade(r) && !sameOriginWS(r) {
		return tg, fmt.Errorf("a terminal opened with the console's cookie must come from the console's own pages (Origin %q is not this server): %w",
			r.Header.Get("Origin"), errForbidden)
	}
	id := r.PathValue("id")
	q := r.URL.Query()
	tg.port = policy.Port{Number: 22, Protocol: policy.TCP}
	if s := q.Get("port"); s != "" {
		port, err := policy.ParsePort(s)
		if err != nil {
			return tg, invalidField("port", "%v", err)
		}
		if port.Protocol != policy.TCP {
			return tg, invalidField("port", "a terminal is over TCP")
		}
		tg.port = port
	}
	tg.login = strings.TrimSpace(q.Get("login"))
	if tg.login == "" {
		return tg, invalidField("login", "required: the user to log in as on the target")
	}
	if err := policy.CheckLogin(tg.login); err != nil {
		return tg, invalidField("login", "%v", err)
	}
	req, err := a.Store.GetRequest(r.Context(), id)
	if err != nil {
		return tg, err
	}
	tg.req = req
	// A terminal uses the requester's own grant: nobody logs in through
	// someone else's, whatever roles they hold.
	if req.Requester != p.Name() {
		return tg, fmt.Errorf("request %s is not %s's own: only its requester opens terminals with it: %w", id, p.Name(), errForbidden)
	}
	t, err := a.targetFor(r.Context(), p, authz.CreateRequest, req.Target)
	if err != nil {
		return tg, err
	}
	tg.target = t
	if req.State != access.Active {
		return tg, fmt.Errorf("request %s is %s, not active: %w", id, req.State, store.ErrConflict)
	}
	if !slices.Contains(req.Ports, tg.port) {
		return tg, invalidField("port", "request %s does not grant %s", id, tg.port)
	}
	rule, err := bastionRule(t, tg.port)
	if err != nil {
		return tg, err
	}
	tg.rule = rule
	// The rule's logins bound every login through the bastion's terminal,
	// whatever the credential: a password typed in the browser does not
	// reach users the policy does not name.
	if len(rule.Logins) > 0 && !slices.Contains(rule.Logins, tg.login) {
		return tg, &policy.DenyError{Rule: tg.port.String(), Reason: fmt.Sprintf("login %q is not one the rule names (%s)", tg.login, strings.Join(rule.Logins, ", "))}
	}
	g, err := a.Store.BastionGrant(r.Context(), req.Target, p.Name(), tg.port, a.Now())
	if errors.Is(err, store.ErrNotFound) || err == nil && g.RequestID != id {
		return tg, fmt.Errorf("request %s holds no live bastion grant for %s: %w", id, tg.port, store.ErrConflict)
	}
	if err != nil {
		return tg, err
	}
	tg.grant = g
	if t.Inventory != nil {
		for _, line := range sshhost.Clean(t.Inventory.SSHHostKeys) {
			if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil {
				tg.hostKeys = append(tg.hostKeys, k)
			}
		}
	}
	if len(tg.hostKeys) == 0 {
		a.auditHostKey(r, p, tg, &webterm.HostKeyError{})
		return tg, errStatus(http.StatusConflict, "the agent of %s reported no SSH host keys (agent --ssh-host-keys), so the server cannot check whom it talks to: refused (no trust on first use)", req.Target)
	}
	return tg, nil
}

// auditHostKey records a refused host key.
func (a *api) auditHostKey(r *http.Request, p store.Principal, tg terminalGrant, hk *webterm.HostKeyError) {
	e := audit.Event{At: a.Now(), Actor: p.Name(), Action: audit.SessionHostKeyMismatch, Target: tg.req.Target, RequestID: tg.req.ID,
		Details: map[string]any{"port": tg.port.String(), "login": tg.login, "presented": hk.Got, "reported": hk.Known}}
	if addr := a.clientAddr(r); addr.IsValid() {
		e.ClientAddr = addr.String()
	}
	if err := a.Store.Audit(context.WithoutCancel(r.Context()), e); err != nil {
		a.Logger.Error("auditing a refused host key", "target", tg.req.Target, "err", err)
	}
}

func (a *api) openTerminal(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	tg, err := a.checkTerminal(r, p)
	if err != nil {
		return err
	}
	if !isUpgrade(r) {
		return errStatus(http.StatusUpgradeRequired, "every check passed: open this URL as a WebSocket for the terminal")
	}
	maxSessions := a.MaxSessionsPerPrincipal
	if maxSessions <= 0 {
		maxSessions = DefaultMaxSessionsPerPrincipal
	}
	release, ok := a.sessions.reserve(p.Name(), maxSessions)
	if !ok {
		return errStatus(http.StatusTooManyRequests, "%s already holds the maximum of %d open bastion sessions; close some first", p.Name(), maxSessions)
	}
	defer release()
	now := a.Now()
	tok, err := a.Store.GetToken(r.Context(), p.TokenID, now)
	if errors.Is(err, store.ErrNotFound) {
		return store.ErrUnauthorized
	}
	if err != nil {
		return err
	}
	// The Origin was checked above (sameOriginWS) for a cookie; a bearer
	// client (the CLI) sends none, and a browser cannot send a bearer.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled, InsecureSkipVerify: true})
	if err != nil {
		return nil // Accept answered the client
	}
	term := webterm.New(ws)
	sctx, scancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer scancel()
	rctx, rcancel := context.WithTimeout(sctx, 60*time.Second)
	start, err := webterm.ReadStart(rctx, ws)
	rcancel()
	if err != nil {
		term.End("refused", err.Error())
		return nil
	}
	if _, fromBearer := bearer(r); !fromBearer {
		ck, err := r.Cookie(httpedge.CSRFCookie)
		if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(start.CSRF)) != 1 {
			term.End("refused", "missing or wrong CSRF token: reload the page")
			return nil
		}
	}
	auth, err := a.terminalAuth(r, p, tg, start)
	cols, rows := start.Cols, start.Rows
	start = webterm.Start{} // the secrets go no further than the auth methods
	if err != nil {
		term.End("refused", err.Error())
		return nil
	}

	x := session.Session{ID: store.NewSessionID(), Target: tg.req.Target, Principal: p.Name(), RequestID: tg.req.ID, Protocol: string(tg.port.Protocol),
		Port: tg.port.Number, StartedAt: now, Deadline: tg.grant.ExpiresAt, State: session.Live, Via: session.ViaTerminal, Login: tg.login,
		Replica: a.replicaID()}
	if addr := a.clientAddr(r); addr.IsValid() {
		x.ClientAddr = addr.String()
	}
	via := tg.req.Target
	if tg.target.Gateway != "" {
		via = tg.target.Gateway
	}
	term.Status("connecting to " + tg.req.Target)
	octx, ocancel := context.WithTimeout(sctx, 10*time.Second)
	st, err := a.Relay.Open(octx, via, relay.Header{Session: x.ID, RequestID: tg.req.ID, Principal: p.Name(), Protocol: string(tg.port.Protocol),
		Port: tg.port.Number, Deadline: tg.grant.ExpiresAt})
	forwardedTo := ""
	if errors.Is(err, relay.ErrNoAgent) && a.forwarding() {
		// The agent's relay connection is on another replica (replicas.go).
		st, forwardedTo, err = a.forward(octx, via, tg.req.Target, tg.port, p.Name(), x.ID)
	}
	ocancel()
	var refusal *relay.Refusal
	switch {
	case errors.Is(err, errForbidden):
		term.End("refused", err.Error())
		return nil
	case errors.Is(err, errForbidden):
		term.End("refused", err.Error())
		return nil
	case errors.Is(err, relay.ErrNoAgent):
		term.End(string(session.AgentLost), fmt.Sprintf("the agent of %s is not connected to the bastion relay; try again when it is", via))
		return nil
	case errors.As(err, &refusal):
		term.End("refused", refusal.Error())
		return nil
	case err != nil:
		term.End("refused", fmt.Sprintf("opening the connection to %s: %v", tg.req.Target, err))
		return nil
	}
	ls := &liveSession{x: x, stop: make(chan struct{}), done: make(chan struct{}), p: p, wake: make(chan struct{}, 1)}
	if tok.ExpiresAt != nil {
		ls.tokenExp = *tok.ExpiresAt
	}
	ls.count.Touch(time.Now())
	counted := &countConn{Conn: st, c: &ls.count}
	client, err := webterm.Dial(counted, tg.login, auth, tg.hostKeys)
	var hk *webterm.HostKeyError
	if errors.As(err, &hk) {
		a.auditHostKey(r, p, tg, hk)
		a.Logger.Warn("browser terminal refused a host key", "target", tg.req.Target, "presented", hk.Got)
		term.End("host_key_mismatch", hk.Error())
		return nil
	}
	if err != nil {
		term.End("login_failed", err.Error())
		return nil
	}
	if err := a.Store.StartSession(r.Context(), x); err != nil {
		client.Close()
		term.End("refused", "recording the session failed; the log has the details")
		return err
	}
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
	a.Logger.Info("browser terminal started", "session", x.ID, "target", x.Target, "principal", x.Principal, "login", x.Login, "until", x.Deadline)

	var obs webterm.Observer
	if a.TerminalObserver != nil {
		obs, err = a.TerminalObserver(webterm.SessionInfo{SessionID: x.ID, RequestID: x.RequestID, Target: x.Target, Port: x.Port, Login: x.Login,
			Principal: x.Principal, Cols: cols, Rows: rows, StartedAt: x.StartedAt, Rule: tg.rule, Notice: term.Notice,
			End: ls.endFunc()})
		if err != nil {
			a.Logger.Error("starting the terminal's observer", "session", x.ID, "err", err)
			ls.end(session.Closed, "", "the session's recording could not start")
		}
		// observe starts a recorder exactly when the rule records.
		ls.recorded = err == nil && tg.rule.Record
	}
	// Set before the watch starts: it reads ls.recorded.
	go a.watchSession(sctx, ls)
	select {
	case <-ls.stop:
		client.Close()
	default:
		runErr := term.Run(client, cols, rows, obs)
		if runErr != nil {
			a.Logger.Info("browser terminal stopped", "session", x.ID, "err", runErr)
		}
	}
	if reason, msg, _, _ := a.grantCheck(context.WithoutCancel(r.Context()), ls.x, ls.recorded); reason != "" {
		ls.end(reason, "", msg)
	}
	if forwardedTo == "" && !a.Relay.Connected(via) || forwardedTo != "" && !a.replicaAlive(forwardedTo) {
		ls.end(session.AgentLost, "", "")
	}
	ls.end(session.Closed, "", "")
	a.recordEnd(ls)
	if obs != nil {
		obs.Close(time.Now(), string(ls.why.reason))
	}
	term.End(string(ls.why.reason), endMessage(ls))
	return nil
}

// endFunc is ls's SessionInfo.End: an observer (the recorder) ends the
// session for a reason it names; an unknown one (or a kill, which must name
// who) ends it as closed. The message reaches the user and the audit.
func (ls *liveSession) endFunc() func(reason, message string) {
	return func(reason, message string) {
		why, err := session.ParseEndReason(reason)
		if err != nil || why == session.Killed {
			why = session.Closed
		}
		ls.end(why, "", message)
	}
}

// endMessage tells the person in front of a terminal why it ended.
func endMessage(ls *liveSession) string {
	var s string
	switch ls.why.reason {
	case session.Closed:
		s = "the session was closed"
	case session.GrantExpired:
		s = "the grant expired: request access again to reconnect"
	case session.Revoked:
		s = "the grant was revoked or no longer allows the bastion"
	case session.Killed:
		s = "the session was ended by " + ls.why.by
	case session.Idle:
		s = "the session was idle too long"
	case session.AgentLost:
		s = "the connection to the target's agent was lost"
	case session.ServerLost:
		s = "the server stopped"
	default:
		s = "the session ended (" + string(ls.why.reason) + ")"
	}
	if ls.why.msg != "" {
		s += ": " + ls.why.msg
	}
	return s
}

// terminalAuth returns the SSH auth methods of start: a certificate the
// server signs for an ephemeral key (valid until the grant's deadline, for
// the one login, the request id in its key id; audited as any certificate),
// or the person's password or pasted key, used for this login only.
func (a *api) terminalAuth(r *http.Request, p store.Principal, tg terminalGrant, start webterm.Start) ([]ssh.AuthMethod, error) {
	if start.Auth != webterm.AuthCertificate {
		return start.UserAuth()
	}
	if a.SSHCA == nil {
		return nil, errors.New("this server has no SSH certificate authority: log in with a password or a key")
	}
	if len(tg.rule.Logins) == 0 {
		return nil, fmt.Errorf("the rule of %s on %s names no logins, so no certificate is signed for it: log in with a password or a key", tg.port, tg.req.Target)
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, fmt.Errorf("making a key: %w", err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	now := a.Now()
	cert, err := sshca.Sign(a.SSHCA, sshca.Request{PublicKey: key, Logins: []string{tg.login}, RequestID: tg.req.ID, Principal: p.Name(),
		Now: now, NotAfter: tg.grant.ExpiresAt}, nil)
	if err != nil {
		return nil, fmt.Errorf("signing a certificate: %w", err)
	}
	e := audit.Event{At: now, Actor: p.Name(), Action: audit.SSHCertificateIssued, Target: tg.req.Target, RequestID: tg.req.ID,
		Details: map[string]any{"port": tg.port.String(), "login": tg.login, "key_id": cert.KeyId, "serial": fmt.Sprint(cert.Serial),
			"key": ssh.FingerprintSHA256(key), "until": time.Unix(int64(cert.ValidBefore), 0).UTC().Format(time.RFC3339), "via": session.ViaTerminal}}
	if addr := a.clientAddr(r); addr.IsValid() {
		e.ClientAddr = addr.String()
	}
	if err := a.Store.Audit(r.Context(), e); err != nil {
		return nil, fmt.Errorf("auditing the certificate: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, err
	}
	return []ssh.AuthMethod{ssh.PublicKeys(cs)}, nil
}

// countConn counts a terminal's relayed bytes (for the sessions list, the
// metrics and the idle timeout): writes go to the target (In), reads come
// from it (Out).
type countConn struct {
	net.Conn
	c *relay.Counter
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.c.Out.Add(int64(n))
		c.c.Touch(time.Now())
	}
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.c.In.Add(int64(n))
		c.c.Touch(time.Now())
	}
	return n, err
}
