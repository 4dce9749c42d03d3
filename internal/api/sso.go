package api

// Single sign-on with the OpenID provider of Deps.SSO: the browser login
// (authorization code flow with PKCE, GET /auth/login and /auth/callback)
// and the device login of `jitgate login` (POST /api/v1/auth/device and
// /api/v1/auth/device/token). These endpoints take no token: they are the
// login. Each ends in a session token (store.KindSession) carrying the user
// name and groups of the ID token. Failed logins, there and in the bearer
// check of every other endpoint, are audited and limited per source.

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	browserLoginTTL = 10 * time.Minute
	// maxLogins bounds the device logins in progress (rows of the
	// database; browser logins keep nothing there, see browserLogin);
	// maxDevicesPerSource the device logins one source may have waiting at
	// the provider.
	maxLogins           = 10_000
	maxDevicesPerSource = 5
	// auditedFailuresBurst and auditedFailuresEvery bound the failed
	// logins audited installation-wide: 100 at once, then 10 a second.
	auditedFailuresBurst = 100
	auditedFailuresEvery = 100 * time.Millisecond
	defaultReturn        = "/api/v1/whoami"
)

// logins is what single sign-on keeps in this process. What a login in
// progress needs is in the database (device logins) or in the browser's
// cookie under a seal whose key is in the database (browser logins), so
// the load balancer may send each step of a login to any replica.
type logins struct {
	// failures limits failed logins per source (5 in a burst, then one
	// every 12 s); nil when the limit is off.
	failures *failureLimiter
	// audits bounds the failed logins audited installation-wide (one key):
	// an outsider with many addresses (an IPv6 /48 holds 65,536 /64s, each
	// a source of its own) would otherwise write five rows, and as many
	// webhook deliveries, per address. Beyond it a failure is still
	// answered as its source's limit says, but only counted; the next one
	// audited says how many went unaudited (unaudited_elsewhere). Nil when
	// the limit is off.
	audits *failureLimiter
	// seal carries browser logins in their cookie: made from the key all
	// replicas share (loginSealKey), at the first login.
	sealMu sync.Mutex
	seal   cipher.AEAD

	// waiting ends the waits at the provider that this replica runs, by
	// device login id (a newer login from the same source supersedes one).
	mu      sync.Mutex
	waiting map[string]context.CancelFunc
}

// LoginLimit is how many failed logins a source may make: Burst at once,
// then one more every Every.
type LoginLimit struct {
	Burst int
	Every time.Duration
}

func newLogins(l LoginLimit) *logins {
	if l.Burst == 0 {
		l.Burst = 5
	}
	if l.Every <= 0 {
		l.Every = 12 * time.Second
	}
	var f, audits *failureLimiter
	if l.Burst > 0 {
		f = newFailureLimiter(l.Burst, l.Every)
		audits = newFailureLimiter(auditedFailuresBurst, auditedFailuresEvery)
	}
	return &logins{failures: f, audits: audits, waiting: map[string]context.CancelFunc{}}
}

// browserLogin is a browser login begun: what the callback needs to finish
// it. It travels in the login cookie, sealed (AES-256-GCM under a key that
// every replica reads from the database), not in the server: a table of logins in progress, however
// large, can be filled by anyone who asks /auth/login often enough, and
// then refuses everybody else's login. The cookie binds the login to the
// browser that began it (the state in the callback must be the sealed
// one), the seal keeps the PKCE verifier and nonce from being read or
// chosen, and the provider redeems each code once.
type browserLogin struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Redirect string `json:"r"`
	Return   string `json:"t"`
	Expires  int64  `json:"e"` // Unix milliseconds
}

// loginSealAD binds a sealed value to its use.
var loginSealAD = []byte("jitgate browser login")

// loginSealKey names the seal's key among the database's shared keys.
const loginSealKey = "sso-login-seal"

// loginSeal returns the seal of browser login cookies, reading (or, at the
// very first login, making) its key in the database, so that a login begun
// at one replica can be finished at any other.
func (a *api) loginSeal(ctx context.Context) (cipher.AEAD, error) {
	l := a.logins
	l.sealMu.Lock()
	defer l.sealMu.Unlock()
	if l.seal != nil {
		return l.seal, nil
	}
	aead, err := a.sharedAEAD(ctx, loginSealKey)
	if err != nil {
		return nil, fmt.Errorf("the login seal: %w", err)
	}
	l.seal = aead
	return aead, nil
}

// sealLogin returns bl sealed for the login cookie.
func sealLogin(seal cipher.AEAD, bl browserLogin) string {
	plain, _ := json.Marshal(bl)
	nonce := make([]byte, seal.NonceSize())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(seal.Seal(nonce, nonce, plain, loginSealAD))
}

// openLogin returns the login sealed in v, if v is one of ours.
func openLogin(seal cipher.AEAD, v string) (browserLogin, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < seal.NonceSize() {
		return browserLogin{}, false
	}
	plain, err := seal.Open(nil, raw[:seal.NonceSize()], raw[seal.NonceSize():], loginSealAD)
	if err != nil {
		return browserLogin{}, false
	}
	var bl browserLogin
	if json.Unmarshal(plain, &bl) != nil {
		return browserLogin{}, false
	}
	return bl, true
}

// provider returns the OpenID provider, or answers 404 when there is none.
func (a *api) provider(w http.ResponseWriter) *oidc.Provider {
	if a.SSO == nil {
		writeProblem(w, http.StatusNotFound, wire.Error{Error: "single sign-on is not configured"})
	}
	return a.SSO
}

// ssoLogin sends the browser to the provider.
func (a *api) ssoLogin(w http.ResponseWriter, r *http.Request) {
	p := a.provider(w)
	if p == nil {
		return
	}
	ret := safeReturn(r.URL.Query().Get("return"))
	state, nonce, verifier := random.Secret(), random.Secret(), random.Secret()
	redirect := p.Config().RedirectURL
	if redirect == "" {
		redirect = a.scheme(r) + "://" + r.Host + "/auth/callback"
	}
	to, err := p.AuthCodeURL(r.Context(), state, nonce, verifier, redirect)
	if err != nil {
		a.Logger.Error("single sign-on", "err", err)
		writeProblem(w, http.StatusBadGateway, wire.Error{Error: "the identity provider cannot be reached"})
		return
	}
	seal, err := a.loginSeal(r.Context())
	if err != nil {
		writeError(w, a.Logger, err)
		return
	}
	sealed := sealLogin(seal, browserLogin{State: state, Nonce: nonce, Verifier: verifier, Redirect: redirect, Return: ret,
		Expires: a.Now().Add(browserLoginTTL).UnixMilli()})
	http.SetCookie(w, &http.Cookie{Name: httpedge.LoginCookie, Value: sealed, Path: "/auth/callback", MaxAge: int(browserLoginTTL.Seconds()),
		HttpOnly: true, Secure: a.scheme(r) == "https", SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, to, http.StatusFound)
}

// ssoCallback finishes the browser login: it checks the state, redeems the
// code with the PKCE verifier, verifies the ID token and its nonce, and
// sets the session and CSRF cookies.
func (a *api) ssoCallback(w http.ResponseWriter, r *http.Request) {
	p := a.provider(w)
	if p == nil {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: httpedge.LoginCookie, Path: "/auth/callback", MaxAge: -1})
	q := r.URL.Query()
	state := q.Get("state")
	fail := func(status int, user, reason string) {
		if wait := a.loginFailed(r.Context(), a.clientAddr(r), "browser", user, reason); wait > 0 {
			tooMany(w, wait, failedLoginsMsg)
			return
		}
		writeProblem(w, status, wire.Error{Error: "login failed: " + reason})
	}
	var bl browserLogin
	c, _ := r.Cookie(httpedge.LoginCookie)
	ok := c != nil
	if ok {
		seal, err := a.loginSeal(r.Context())
		if err != nil {
			writeError(w, a.Logger, err)
			return
		}
		bl, ok = openLogin(seal, c.Value)
	}
	switch {
	case !ok || a.Now().UnixMilli() > bl.Expires:
		fail(http.StatusBadRequest, "", "unknown or expired login state (or the login was begun in another browser); start again at /auth/login")
		return
	case subtle.ConstantTimeCompare([]byte(bl.State), []byte(state)) != 1:
		fail(http.StatusBadRequest, "", "the login state does not match this browser's login; start again at /auth/login")
		return
	case q.Get("error") != "":
		fail(http.StatusUnauthorized, "", "the identity provider refused: "+clip(q.Get("error")+" "+q.Get("error_description")))
		return
	case q.Get("code") == "":
		fail(http.StatusBadRequest, "", "no authorization code")
		return
	}
	id, err := p.Exchange(r.Context(), q.Get("code"), bl.Verifier, bl.Nonce, bl.Redirect)
	if err != nil {
		fail(http.StatusUnauthorized, "", clip(err.Error()))
		return
	}
	s, err := a.createSession(r.Context(), a.clientAddr(r), id, "browser")
	if err != nil {
		writeError(w, a.Logger, err)
		return
	}
	secure := a.scheme(r) == "https"
	maxAge := int(time.Until(s.ExpiresAt).Seconds())
	httpedge.SetSessionCookies(w, s.Token, random.Secret(), maxAge, secure)
	http.Redirect(w, r, bl.Return, http.StatusFound)
}

// deviceStart begins a device login at the provider. A goroutine waits for
// the provider's answer (polling at its interval) until the codes expire;
// the CLI polls deviceToken for the outcome with our own opaque code.
func (a *api) deviceStart(w http.ResponseWriter, r *http.Request) {
	p := a.provider(w)
	if p == nil {
		return
	}
	addr := a.clientAddr(r)
	now := a.Now()
	da, err := p.DeviceAuth(r.Context())
	if err != nil {
		a.Logger.Error("single sign-on", "err", err)
		writeProblem(w, http.StatusBadGateway, wire.Error{Error: "the identity provider refused to start a device login"})
		return
	}
	expires := da.Expiry
	if expires.IsZero() || expires.After(now.Add(30*time.Minute)) {
		expires = now.Add(30 * time.Minute)
	}
	da.Expiry = expires
	// At its source's bound, the source's oldest device login in progress
	// ends to make room (whichever replica waits for it): refusing the new
	// one would let anyone behind the same address (an office NAT, a shared
	// jump host) begin five device logins, never finish them, and keep
	// everybody else there from signing in with the CLI for their 30
	// minutes.
	code := random.Secret()
	id, superseded, err := a.Store.BeginDeviceLogin(r.Context(), code, sourceKey(addr), now, expires, maxDevicesPerSource, maxLogins)
	if errors.Is(err, store.ErrTooManyLogins) {
		writeProblem(w, http.StatusServiceUnavailable, wire.Error{Error: "too many logins in progress; try again later"})
		return
	}
	if err != nil {
		writeError(w, a.Logger, err)
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), expires)
	a.logins.mu.Lock()
	endOldest := a.logins.waiting[superseded]
	a.logins.waiting[id] = cancel
	a.logins.mu.Unlock()
	if endOldest != nil {
		endOldest()
	}
	go a.waitDevice(ctx, p, id, da, addr)

	interval := int(da.Interval)
	if interval <= 0 {
		interval = 5
	}
	writeJSON(w, http.StatusOK, wire.DeviceLogin{DeviceCode: code, UserCode: da.UserCode, VerificationURI: da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete, Interval: interval, ExpiresIn: int(expires.Sub(now).Seconds())})
}

// waitDevice waits at the provider for the device login id and records
// its outcome in the database, for whichever replica the CLI polls. A
// login superseded meanwhile (here or at another replica) is nobody's
// failure: its outcome is dropped.
func (a *api) waitDevice(ctx context.Context, p *oidc.Provider, id string, da *oidc.DeviceAuthorization, addr netip.Addr) {
	defer func() {
		a.logins.mu.Lock()
		cancel := a.logins.waiting[id]
		delete(a.logins.waiting, id)
		a.logins.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	}()
	who, err := p.DeviceWait(ctx, da)
	state, identity, errText := store.DeviceLoginSucceeded, "", ""
	switch {
	case err == nil:
		b, _ := json.Marshal(who)
		identity = string(b)
	case errors.Is(err, oidc.ErrDenied):
		state = store.DeviceLoginDenied
	case errors.Is(err, oidc.ErrExpired):
		state = store.DeviceLoginExpired
	default:
		state, errText = store.DeviceLoginFailed, clip(err.Error())
	}
	recorded, rerr := a.Store.EndDeviceLogin(context.WithoutCancel(ctx), id, state, identity, errText)
	if rerr != nil {
		a.Logger.Error("recording the end of a device login", "err", rerr)
		return
	}
	if !recorded || err == nil { // superseded, or succeeded
		return
	}
	reason := clip(err.Error())
	switch {
	case errors.Is(err, oidc.ErrDenied):
		reason = "the user refused at the identity provider"
	case errors.Is(err, oidc.ErrExpired):
		reason = "nobody approved the device code before it expired"
	}
	a.loginFailed(context.Background(), addr, "device", "", reason)
}

// deviceToken answers a poll of the CLI: authorization_pending until the
// user approved at the provider, then (once) the session token.
func (a *api) deviceToken(w http.ResponseWriter, r *http.Request) {
	p := a.provider(w)
	if p == nil {
		return
	}
	var in wire.DeviceTokenRequest
	if err := decode(w, r, &in); err != nil {
		writeError(w, a.Logger, err)
		return
	}
	d, err := a.Store.TakeDeviceLogin(r.Context(), in.DeviceCode, a.Now())
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		writeError(w, a.Logger, err)
		return
	}
	switch {
	case err != nil:
		if wait := a.loginFailed(r.Context(), a.clientAddr(r), "device", "", "unknown or expired device code"); wait > 0 {
			tooMany(w, wait, failedLoginsMsg)
			return
		}
		writeProblem(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken, Field: "device_code"})
	case d.State == store.DeviceLoginPending:
		writeProblem(w, http.StatusBadRequest, wire.Error{Error: wire.AuthorizationPending})
	case d.State == store.DeviceLoginDenied:
		writeProblem(w, http.StatusForbidden, wire.Error{Error: wire.AccessDenied})
	case d.State == store.DeviceLoginExpired:
		writeProblem(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken})
	case d.State == store.DeviceLoginSuperseded:
		writeProblem(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken, Field: "device_code"})
	case d.State != store.DeviceLoginSucceeded: // audited when it happened
		writeProblem(w, http.StatusUnauthorized, wire.Error{Error: "login failed: " + d.Error})
	default:
		var id oidc.Identity
		if err := json.Unmarshal([]byte(d.Identity), &id); err != nil {
			writeError(w, a.Logger, fmt.Errorf("reading the identity of a device login: %w", err))
			return
		}
		s, err := a.createSession(r.Context(), a.clientAddr(r), id, "device")
		if err != nil {
			writeError(w, a.Logger, err)
			return
		}
		writeJSON(w, http.StatusOK, s)
	}
}

// createSession stores a session token for id and audits the login.
func (a *api) createSession(ctx context.Context, addr netip.Addr, id oidc.Identity, method string) (wire.Session, error) {
	now := a.Now()
	ca := addrString(addr)
	secret, info, err := a.Store.CreateToken(ctx, store.Actor{Name: id.Username, ClientAddr: ca}, store.TokenSpec{
		Kind: store.KindSession, Subject: id.Username, Name: "single sign-on (" + method + ")", Groups: id.Groups, TTL: a.SSO.Config().SessionTTL,
	}, now)
	if err != nil {
		return wire.Session{}, fmt.Errorf("creating session: %w", err)
	}
	if err := a.Store.Audit(context.WithoutCancel(ctx), audit.Event{At: now, Actor: id.Username, ClientAddr: ca, Action: audit.LoginSucceeded,
		Details: map[string]any{"method": method, "groups": nonNil(id.Groups), "subject": id.Subject, "token_id": info.ID}}); err != nil {
		a.Logger.Error("auditing a login", "err", err)
	}
	s := wire.Session{Token: secret, TokenID: info.ID, User: id.Username, Groups: nonNil(id.Groups)}
	if info.ExpiresAt != nil {
		s.ExpiresAt = *info.ExpiresAt
	}
	return s, nil
}

// loginFailed counts a failed login (a refused token, enrollment token,
// login state or device code) against its source. Within the source's
// limit it is logged and audited as login.failed (never the credential)
// and loginFailed returns 0. Over the limit it is only counted, and
// loginFailed returns how long the source must wait, for the caller to
// answer 429: a flood of failures costs no audit row or log line each, and
// the next failure audited after the wait says how many were refused in
// between (details.refused_while_limited). Within the source's limit but
// beyond the installation-wide audit budget (logins.audits), a failure is
// answered as usual and only counted (details.unaudited_elsewhere).
func (a *api) loginFailed(ctx context.Context, addr netip.Addr, method, user, reason string) time.Duration {
	now := a.Now()
	wait, refused := a.logins.failures.Fail(sourceKey(addr), now)
	if wait > 0 {
		return wait
	}
	over, unaudited := a.logins.audits.Fail("", now)
	if over > 0 {
		return 0 // answered as its source's limit says, counted, not audited
	}
	if user == "" {
		user = "anonymous"
	}
	details := map[string]any{"method": method}
	if refused > 0 {
		details["refused_while_limited"] = refused
	}
	if unaudited > 0 {
		details["unaudited_elsewhere"] = unaudited
	}
	a.Logger.Info("login failed", "method", method, "client", addr, "reason", reason, "refused_while_limited", refused)
	if err := a.Store.Audit(context.WithoutCancel(ctx), audit.Event{At: now, Actor: user, ClientAddr: addrString(addr), Action: audit.LoginFailed,
		Reason: reason, Details: details}); err != nil {
		a.Logger.Error("auditing a failed login", "err", err)
	}
	return 0
}

// credential is the request's token: the bearer header, else the session
// cookie of a browser login.
func credential(r *http.Request) (secret string, cookie, ok bool) {
	if s, ok := bearer(r); ok {
		return s, false, true
	}
	if c, err := r.Cookie(httpedge.SessionCookie); err == nil && c.Value != "" {
		return c.Value, true, true
	}
	return "", false, false
}

// authFailed answers a credential the bearer check refused (401, or 429
// once its source is over the failed-login limit) and drops a stale
// session cookie so the browser stops sending it.
func (a *api) authFailed(w http.ResponseWriter, r *http.Request, cookie bool, err error) {
	if !errors.Is(err, store.ErrUnauthorized) {
		writeError(w, a.Logger, err) // not the credential's fault (a database error)
		return
	}
	method := "bearer"
	if cookie {
		method = "cookie"
		httpedge.ClearCookie(w, httpedge.SessionCookie)
	}
	if wait := a.loginFailed(r.Context(), a.clientAddr(r), method, "", "invalid or expired token"); wait > 0 {
		tooMany(w, wait, failedLoginsMsg)
		return
	}
	writeError(w, a.Logger, err)
}

// failedLoginsMsg is the answer (429) to a failure over the limit.
const failedLoginsMsg = "too many failed logins from this address"

// csrfOK admits a request authenticated by the session cookie only if it
// is a GET or HEAD, or repeats the CSRF cookie in X-CSRF-Token (double
// submit: another site can make the browser send cookies, not read them).
func csrfOK(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	c, err := r.Cookie(httpedge.CSRFCookie)
	if err == nil && c.Value != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.Header.Get(httpedge.CSRFHeader))) == 1 {
		return true
	}
	writeProblem(w, http.StatusForbidden, wire.Error{Error: "missing or wrong CSRF token"})
	return false
}

func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeProblem(w, http.StatusTooManyRequests, wire.Error{Error: fmt.Sprintf("%s; try again in %d s", msg, secs)})
}

// scheme is how the client reached us: https when TLS ended here, or at a
// trusted proxy that says so.
func (a *api) scheme(r *http.Request) string {
	if httpedge.HTTPS(r, a.TrustedProxies) {
		return "https"
	}
	return "http"
}

// safeReturn keeps a post-login destination only if it is a path on this
// server: never another origin ("//evil.example", "https://...", "/\evil").
func safeReturn(s string) string {
	if len(s) > 2048 || !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\\r\n\t") {
		return defaultReturn
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return defaultReturn
	}
	return u.RequestURI()
}

func clip(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func addrString(a netip.Addr) string {
	if a.IsValid() {
		return a.String()
	}
	return ""
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
