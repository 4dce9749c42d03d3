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
	"crypto/aes"
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
	// maxLogins bounds the device logins in progress (memory; browser
	// logins keep nothing here, see browserLogin); maxDevicesPerSource the
	// device logins one source may have waiting at the provider.
	maxLogins           = 10_000
	maxDevicesPerSource = 5
	// auditedFailuresBurst and auditedFailuresEvery bound the failed
	// logins audited installation-wide: 100 at once, then 10 a second.
	auditedFailuresBurst = 100
	auditedFailuresEvery = 100 * time.Millisecond
	defaultReturn        = "/api/v1/whoami"
)

// logins is what single sign-on keeps between requests, in memory: a
// restart only makes people start a login again.
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
	// seal carries browser logins in their cookie.
	seal cipher.AEAD

	mu      sync.Mutex
	devices map[string]*deviceLogin // by our device code
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
	return &logins{failures: f, audits: audits, seal: newSeal(), devices: map[string]*deviceLogin{}}
}

// browserLogin is a browser login begun: what the callback needs to finish
// it. It travels in the login cookie, sealed (AES-256-GCM under a key made
// at start), not in server memory: a table of logins in progress, however
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

func newSeal() cipher.AEAD {
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // a 32-byte key is always accepted
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// sealLogin returns bl sealed for the login cookie.
func (l *logins) sealLogin(bl browserLogin) string {
	plain, _ := json.Marshal(bl)
	nonce := make([]byte, l.seal.NonceSize())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(l.seal.Seal(nonce, nonce, plain, loginSealAD))
}

// openLogin returns the login sealed in v, if v is one of ours.
func (l *logins) openLogin(v string) (browserLogin, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(raw) < l.seal.NonceSize() {
		return browserLogin{}, false
	}
	plain, err := l.seal.Open(nil, raw[:l.seal.NonceSize()], raw[l.seal.NonceSize():], loginSealAD)
	if err != nil {
		return browserLogin{}, false
	}
	var bl browserLogin
	if json.Unmarshal(plain, &bl) != nil {
		return browserLogin{}, false
	}
	return bl, true
}

type deviceLogin struct {
	source  string // limiter key of the address that began it
	started time.Time
	expires time.Time
	cancel  context.CancelFunc // ends the wait at the provider
	done    bool
	id      oidc.Identity
	err     error
}

// errSuperseded ends a device login that a newer one from the same source
// pushed out (maxDevicesPerSource).
var errSuperseded = errors.New("a newer device login from the same address took its place; start again")

// sweep drops device logins past their time; the caller holds mu.
func (l *logins) sweep(now time.Time) {
	for k, d := range l.devices {
		if now.After(d.expires.Add(time.Minute)) {
			delete(l.devices, k)
		}
	}
}

// provider returns the OpenID provider, or answers 404 when there is none.
func (a *api) provider(w http.ResponseWriter) *oidc.Provider {
	if a.SSO == nil {
		writeJSON(w, http.StatusNotFound, wire.Error{Error: "single sign-on is not configured"})
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
		writeJSON(w, http.StatusBadGateway, wire.Error{Error: "the identity provider cannot be reached"})
		return
	}
	sealed := a.logins.sealLogin(browserLogin{State: state, Nonce: nonce, Verifier: verifier, Redirect: redirect, Return: ret,
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
		writeJSON(w, status, wire.Error{Error: "login failed: " + reason})
	}
	var bl browserLogin
	c, _ := r.Cookie(httpedge.LoginCookie)
	ok := c != nil
	if ok {
		bl, ok = a.logins.openLogin(c.Value)
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
	key := sourceKey(addr)
	now := a.Now()
	// At its source's bound, the source's oldest device login in progress
	// ends to make room: refusing the new one would let anyone behind the
	// same address (an office NAT, a shared jump host) begin five device
	// logins, never finish them, and keep everybody else there from
	// signing in with the CLI for their 30 minutes.
	a.logins.mu.Lock()
	a.logins.sweep(now)
	var oldest *deviceLogin
	mine := 0
	for _, d := range a.logins.devices {
		if d.source == key && !d.done {
			mine++
			if oldest == nil || d.started.Before(oldest.started) {
				oldest = d
			}
		}
	}
	total := len(a.logins.devices)
	var endOldest context.CancelFunc
	if total < maxLogins && mine >= maxDevicesPerSource {
		oldest.done, oldest.err = true, errSuperseded
		endOldest = oldest.cancel
	}
	a.logins.mu.Unlock()
	if endOldest != nil {
		endOldest()
	}
	if total >= maxLogins {
		writeJSON(w, http.StatusServiceUnavailable, wire.Error{Error: "too many logins in progress; try again later"})
		return
	}
	da, err := p.DeviceAuth(r.Context())
	if err != nil {
		a.Logger.Error("single sign-on", "err", err)
		writeJSON(w, http.StatusBadGateway, wire.Error{Error: "the identity provider refused to start a device login"})
		return
	}
	expires := da.Expiry
	if expires.IsZero() || expires.After(now.Add(30*time.Minute)) {
		expires = now.Add(30 * time.Minute)
	}
	da.Expiry = expires
	code := random.Secret()
	ctx, cancel := context.WithDeadline(context.Background(), expires)
	d := &deviceLogin{source: key, started: now, expires: expires, cancel: cancel}
	a.logins.mu.Lock()
	a.logins.devices[code] = d
	a.logins.mu.Unlock()
	go a.waitDevice(ctx, p, d, da, addr)

	interval := int(da.Interval)
	if interval <= 0 {
		interval = 5
	}
	writeJSON(w, http.StatusOK, wire.DeviceLogin{DeviceCode: code, UserCode: da.UserCode, VerificationURI: da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete, Interval: interval, ExpiresIn: int(expires.Sub(now).Seconds())})
}

func (a *api) waitDevice(ctx context.Context, p *oidc.Provider, d *deviceLogin, da *oidc.DeviceAuthorization, addr netip.Addr) {
	defer d.cancel()
	id, err := p.DeviceWait(ctx, da)
	a.logins.mu.Lock()
	if d.done { // superseded: not a failure of anyone's
		a.logins.mu.Unlock()
		return
	}
	d.done, d.id, d.err = true, id, err
	a.logins.mu.Unlock()
	if err != nil {
		reason := clip(err.Error())
		switch {
		case errors.Is(err, oidc.ErrDenied):
			reason = "the user refused at the identity provider"
		case errors.Is(err, oidc.ErrExpired):
			reason = "nobody approved the device code before it expired"
		}
		a.loginFailed(context.Background(), addr, "device", "", reason)
	}
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
	a.logins.mu.Lock()
	d, ok := a.logins.devices[in.DeviceCode]
	done := ok && d.done
	if done {
		delete(a.logins.devices, in.DeviceCode) // the outcome is told once
	}
	a.logins.mu.Unlock()
	switch {
	case !ok:
		if wait := a.loginFailed(r.Context(), a.clientAddr(r), "device", "", "unknown or expired device code"); wait > 0 {
			tooMany(w, wait, failedLoginsMsg)
			return
		}
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken, Field: "device_code"})
	case !done:
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.AuthorizationPending})
	case errors.Is(d.err, oidc.ErrDenied):
		writeJSON(w, http.StatusForbidden, wire.Error{Error: wire.AccessDenied})
	case errors.Is(d.err, oidc.ErrExpired):
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken})
	case errors.Is(d.err, errSuperseded):
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken, Field: "device_code"})
	case d.err != nil: // audited when it happened
		writeJSON(w, http.StatusUnauthorized, wire.Error{Error: "login failed: " + clip(d.err.Error())})
	default:
		s, err := a.createSession(r.Context(), a.clientAddr(r), d.id, "device")
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
	writeJSON(w, http.StatusForbidden, wire.Error{Error: "missing or wrong CSRF token"})
	return false
}

func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeJSON(w, http.StatusTooManyRequests, wire.Error{Error: fmt.Sprintf("%s; try again in %d s", msg, secs)})
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
