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
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	sessionCookie = "jitgate_session"
	csrfCookie    = "jitgate_csrf"
	// loginCookie binds a browser login's state to the browser that began
	// it, so nobody can make a victim's browser finish their own login.
	loginCookie = "jitgate_login"
	csrfHeader  = "X-CSRF-Token"

	browserLoginTTL = 10 * time.Minute
	// maxLogins bounds the logins in progress (memory); maxDevicesPerSource
	// the device logins one source may have waiting at the provider.
	maxLogins           = 10_000
	maxDevicesPerSource = 5
	defaultReturn       = "/api/v1/whoami"
)

// logins is what single sign-on keeps between requests, in memory: a
// restart only makes people start a login again.
type logins struct {
	// failures limits failed logins per source (5 in a burst, then one
	// every 12 s); nil when the limit is off.
	failures *failureLimiter

	mu      sync.Mutex
	browser map[string]browserLogin // by state
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
	var f *failureLimiter
	if l.Burst > 0 {
		f = newFailureLimiter(l.Burst, l.Every)
	}
	return &logins{failures: f, browser: map[string]browserLogin{}, devices: map[string]*deviceLogin{}}
}

type browserLogin struct {
	nonce, verifier, redirect, ret string
	expires                        time.Time
}

type deviceLogin struct {
	source  string // limiter key of the address that began it
	expires time.Time
	done    bool
	id      oidc.Identity
	err     error
}

// sweep drops logins past their time; the caller holds mu.
func (l *logins) sweep(now time.Time) {
	for k, b := range l.browser {
		if now.After(b.expires) {
			delete(l.browser, k)
		}
	}
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
	state, nonce, verifier := randomString(), randomString(), randomString()
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
	now := a.Now()
	a.logins.mu.Lock()
	a.logins.sweep(now)
	full := len(a.logins.browser)+len(a.logins.devices) >= maxLogins
	if !full {
		a.logins.browser[state] = browserLogin{nonce: nonce, verifier: verifier, redirect: redirect, ret: ret, expires: now.Add(browserLoginTTL)}
	}
	a.logins.mu.Unlock()
	if full {
		writeJSON(w, http.StatusServiceUnavailable, wire.Error{Error: "too many logins in progress; try again later"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: state, Path: "/auth/callback", MaxAge: int(browserLoginTTL.Seconds()),
		HttpOnly: true, Secure: a.scheme(r) == "https", SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, to, http.StatusFound)
}

// ssoCallback finishes the browser login: it checks the state, redeems the
// code with the PKCE verifier, verifies the ID token and its nonce, and
// sets the session and CSRF cookies.
func (a *api) ssoCallback(w http.ResponseWriter, r *http.Request) {
	p := a.provider(w)
	if p == nil || a.throttled(w, r) {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Path: "/auth/callback", MaxAge: -1})
	q := r.URL.Query()
	state := q.Get("state")
	a.logins.mu.Lock()
	bl, ok := a.logins.browser[state]
	delete(a.logins.browser, state)
	a.logins.mu.Unlock()
	fail := func(status int, user, reason string) {
		a.loginFailed(r.Context(), a.clientAddr(r), "browser", user, reason)
		writeJSON(w, status, wire.Error{Error: "login failed: " + reason})
	}
	c, _ := r.Cookie(loginCookie)
	switch {
	case !ok || a.Now().After(bl.expires):
		fail(http.StatusBadRequest, "", "unknown or expired login state; start again at /auth/login")
		return
	case c == nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1:
		fail(http.StatusBadRequest, "", "the login was begun in another browser")
		return
	case q.Get("error") != "":
		fail(http.StatusUnauthorized, "", "the identity provider refused: "+clip(q.Get("error")+" "+q.Get("error_description")))
		return
	case q.Get("code") == "":
		fail(http.StatusBadRequest, "", "no authorization code")
		return
	}
	id, err := p.Exchange(r.Context(), q.Get("code"), bl.verifier, bl.nonce, bl.redirect)
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
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.Token, Path: "/", MaxAge: maxAge, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: randomString(), Path: "/", MaxAge: maxAge, Secure: secure, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, bl.ret, http.StatusFound)
}

// deviceStart begins a device login at the provider. A goroutine waits for
// the provider's answer (polling at its interval) until the codes expire;
// the CLI polls deviceToken for the outcome with our own opaque code.
func (a *api) deviceStart(w http.ResponseWriter, r *http.Request) {
	p := a.provider(w)
	if p == nil || a.throttled(w, r) {
		return
	}
	addr := a.clientAddr(r)
	key := sourceKey(addr)
	now := a.Now()
	a.logins.mu.Lock()
	a.logins.sweep(now)
	mine := 0
	for _, d := range a.logins.devices {
		if d.source == key && !d.done {
			mine++
		}
	}
	total := len(a.logins.browser) + len(a.logins.devices)
	a.logins.mu.Unlock()
	if mine >= maxDevicesPerSource {
		tooMany(w, time.Minute, "too many device logins in progress from this address")
		return
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
	code := randomString()
	d := &deviceLogin{source: key, expires: expires}
	a.logins.mu.Lock()
	a.logins.devices[code] = d
	a.logins.mu.Unlock()
	go a.waitDevice(p, d, da, addr)

	interval := int(da.Interval)
	if interval <= 0 {
		interval = 5
	}
	writeJSON(w, http.StatusOK, wire.DeviceLogin{DeviceCode: code, UserCode: da.UserCode, VerificationURI: da.VerificationURI,
		VerificationURIComplete: da.VerificationURIComplete, Interval: interval, ExpiresIn: int(expires.Sub(now).Seconds())})
}

func (a *api) waitDevice(p *oidc.Provider, d *deviceLogin, da *oidc.DeviceAuthorization, addr netip.Addr) {
	ctx, cancel := context.WithDeadline(context.Background(), d.expires)
	defer cancel()
	id, err := p.DeviceWait(ctx, da)
	a.logins.mu.Lock()
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
	if p == nil || a.throttled(w, r) {
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
		a.loginFailed(r.Context(), a.clientAddr(r), "device", "", "unknown or expired device code")
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken, Field: "device_code"})
	case !done:
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.AuthorizationPending})
	case errors.Is(d.err, oidc.ErrDenied):
		writeJSON(w, http.StatusForbidden, wire.Error{Error: wire.AccessDenied})
	case errors.Is(d.err, oidc.ErrExpired):
		writeJSON(w, http.StatusBadRequest, wire.Error{Error: wire.ExpiredToken})
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

// loginFailed audits a failed login (never the credential) and counts it
// against its source.
func (a *api) loginFailed(ctx context.Context, addr netip.Addr, method, user, reason string) {
	now := a.Now()
	a.logins.failures.Fail(sourceKey(addr), now)
	if user == "" {
		user = "anonymous"
	}
	a.Logger.Info("login failed", "method", method, "client", addr, "reason", reason)
	if err := a.Store.Audit(context.WithoutCancel(ctx), audit.Event{At: now, Actor: user, ClientAddr: addrString(addr), Action: audit.LoginFailed,
		Reason: reason, Details: map[string]any{"method": method}}); err != nil {
		a.Logger.Error("auditing a failed login", "err", err)
	}
}

// credential is the request's token: the bearer header, else the session
// cookie of a browser login.
func credential(r *http.Request) (secret string, cookie, ok bool) {
	if s, ok := bearer(r); ok {
		return s, false, true
	}
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		return c.Value, true, true
	}
	return "", false, false
}

// throttled answers 429 when the request's source failed too many logins.
func (a *api) throttled(w http.ResponseWriter, r *http.Request) bool {
	wait := a.logins.failures.Wait(sourceKey(a.clientAddr(r)), a.Now())
	if wait > 0 {
		tooMany(w, wait, "too many failed logins from this address")
	}
	return wait > 0
}

// authFailed records a refused credential of the bearer check and drops a
// stale session cookie so the browser stops sending it.
func (a *api) authFailed(w http.ResponseWriter, r *http.Request, cookie bool, err error) {
	if !errors.Is(err, store.ErrUnauthorized) {
		return // not the credential's fault (a database error)
	}
	method := "bearer"
	if cookie {
		method = "cookie"
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1})
	}
	a.loginFailed(r.Context(), a.clientAddr(r), method, "", "invalid or expired token")
}

// csrfOK admits a request authenticated by the session cookie only if it
// is a GET or HEAD, or repeats the CSRF cookie in X-CSRF-Token (double
// submit: another site can make the browser send cookies, not read them).
func csrfOK(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	c, err := r.Cookie(csrfCookie)
	if err == nil && c.Value != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.Header.Get(csrfHeader))) == 1 {
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
	if r.TLS != nil {
		return "https"
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if peer, err := netip.ParseAddr(host); err == nil && a.trusted(peer.Unmap()) && r.Header.Get("X-Forwarded-Proto") == "https" {
		return "https"
	}
	return "http"
}

// safeReturn keeps a post-login destination only if it is a path on this
// server: never another origin ("//evil.example", "https://...", "/\evil").
func safeReturn(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\\r\n\t") {
		return defaultReturn
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return defaultReturn
	}
	return u.RequestURI()
}

// randomString is 256 random bits, base64url (also a valid PKCE verifier).
func randomString() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
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
