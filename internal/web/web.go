// Package web serves jitgate's web console under /ui/: server-rendered
// html/template pages with one small embedded script, served by the same
// binary and from the same origin as the REST API.
//
// The console holds no authorization logic of its own. Pages read their
// data by calling the REST API handler in-process with the browser's own
// session cookie, and every change is made by the page's script calling the
// REST API (cookie + X-CSRF-Token), so the API's checks (internal/authz via
// api.can/require, CSRF, failed-login limits and auditing) apply unchanged.
// The only state the console changes itself is the session: POST /ui/signin
// exchanges a pasted API token for a session token, POST /ui/signout
// revokes it.
package web

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// CSP is the Content-Security-Policy of every console response: no inline
// script or style, nothing from another origin, no framing.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Deps is what the console needs.
type Deps struct {
	// API is the REST API handler (api.New); pages read through it.
	API http.Handler
	// Store validates pasted tokens and holds console sessions.
	Store *store.Store
	// TrustedProxies are believed for X-Forwarded-For and X-Forwarded-Proto.
	TrustedProxies []netip.Prefix
	// SSO tells whether single sign-on (/auth/login) is configured.
	SSO bool
	// SessionTTL bounds a console session (default 12 h); a session never
	// outlives the token it was exchanged for.
	SessionTTL time.Duration
	// Contact is whom people signed in without a role should ask, shown
	// on their page with the admins (ParseContact; "" for none).
	Contact string
	Logger  *slog.Logger
	Now     func() time.Time
}

type console struct {
	Deps
	pages   map[string]*template.Template
	static  http.Handler
	version string   // content hash of the static files, for cache busting
	contact *Contact // Deps.Contact parsed; nil for none
}

// New returns a handler that serves the console under /ui/, redirects "/"
// there, and passes everything else to d.API.
func New(d Deps) (http.Handler, error) {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.SessionTTL <= 0 {
		d.SessionTTL = 12 * time.Hour
	}
	c := &console{Deps: d, pages: map[string]*template.Template{}}
	if contact, err := ParseContact(d.Contact); err != nil {
		return nil, err
	} else if contact.Text != "" {
		c.contact = &contact
	}
	if err := c.parse(); err != nil {
		return nil, err
	}
	sub, _ := fs.Sub(staticFS, "static")
	h := sha256.New()
	_ = fs.WalkDir(sub, ".", func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			b, _ := fs.ReadFile(sub, p)
			h.Write(b)
		}
		return nil
	})
	c.version = hex.EncodeToString(h.Sum(nil))[:12]
	c.static = http.StripPrefix("/ui/static/", http.FileServerFS(sub))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusFound)
	})
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/static/", c.serveStatic)
	mux.HandleFunc("GET /ui/signin", c.signinPage)
	mux.HandleFunc("POST /ui/signin", c.signin)
	mux.HandleFunc("POST /ui/signout", c.signout)
	mux.HandleFunc("GET /ui/{$}", c.page(c.dashboard))
	mux.HandleFunc("GET /ui/targets/{name}", c.page(c.target))
	mux.HandleFunc("GET /ui/approvals", c.page(c.approvals))
	mux.HandleFunc("GET /ui/audit", c.page(c.audit))
	mux.HandleFunc("GET /ui/sessions", c.page(c.sessions))
	mux.HandleFunc("GET /ui/terminal/{id}", c.page(c.terminal))
	mux.HandleFunc("GET /ui/sessions/{id}/play", c.page(c.player))
	mux.HandleFunc("GET /ui/sessions/{id}/watch", c.page(c.watch))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", &view{Title: "Not found", Error: "There is no page at " + r.URL.Path + "."})
	})
	mux.Handle("/", d.API)
	return mux, nil
}

// TerminalCSP is the terminal page's policy: the console's, but xterm.js
// makes <style> elements (its theme and cell sizes), admitted by a nonce of
// the response; scripts stay 'self' only, nothing inline.
func TerminalCSP(nonce string) string {
	return "default-src 'self'; script-src 'self'; style-src 'self' 'nonce-" + nonce + "'; img-src 'self' data:; " +
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
}

// PlayerCSP is the playback page's policy: the terminal page's, and
// asciinema-player's terminal emulator is WebAssembly, whose compilation
// needs 'wasm-unsafe-eval' (it admits WebAssembly only: no eval of
// JavaScript, no inline script).
func PlayerCSP(nonce string) string {
	return strings.Replace(TerminalCSP(nonce), "script-src 'self';", "script-src 'self' 'wasm-unsafe-eval';", 1)
}

// headers sets the security headers of every console response.
func headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
}

func (c *console) serveStatic(w http.ResponseWriter, r *http.Request) {
	headers(w)
	if r.URL.Query().Get("v") == c.version {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	c.static.ServeHTTP(w, r)
}

// session is what a page knows of the signed-in person.
type session struct {
	wire.Whoami
	CSRF string
}

// can reports whether any of the person's grants has one of roles (in any
// scope). It only decides which controls a page offers; the API decides
// what is allowed.
func (s *session) can(roles ...string) bool { return s.Can(roles...) }

// Can is can for templates (the navigation follows the viewer's roles).
func (s *session) Can(roles ...string) bool {
	for _, g := range s.Grants {
		for _, r := range roles {
			if g.Role == r || g.Role == "admin" {
				return true
			}
		}
	}
	return false
}

// page wraps a page handler: it asks the API who the cookie belongs to and
// sends people without a valid session to the sign-in page.
func (c *console) page(h func(http.ResponseWriter, *http.Request, *session) (string, *view, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var s session
		if err := c.get(r, "/api/v1/whoami", nil, &s.Whoami); err != nil {
			if apiStatus(err) == http.StatusUnauthorized || apiStatus(err) == http.StatusForbidden {
				httpedge.ClearCookie(w, httpedge.SessionCookie)
				http.Redirect(w, r, "/ui/signin?return="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, r, err)
			return
		}
		if ck, err := r.Cookie(httpedge.CSRFCookie); err == nil {
			s.CSRF = ck.Value
		}
		if len(s.Grants) == 0 {
			// Nothing to show or ask for: say whom to ask instead of a
			// page of refusals.
			c.render(w, r, http.StatusOK, "norole", &view{Title: "No access yet", Session: &s, Contact: c.contact})
			return
		}
		name, v, err := h(w, r, &s)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		v.Session = &s
		c.render(w, r, http.StatusOK, name, v)
	}
}

func (c *console) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := apiStatus(err)
	if status == 0 {
		status = http.StatusInternalServerError
		c.Logger.Error("console page", "path", r.URL.Path, "err", err)
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		msg = "Something went wrong on the server; the log has the details."
	}
	c.render(w, r, status, "error", &view{Title: http.StatusText(status), Error: msg})
}

func (c *console) render(w http.ResponseWriter, r *http.Request, status int, name string, v *view) {
	headers(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	v.Version = c.version
	v.Path = r.URL.Path
	switch {
	case v.Terminal != nil:
		w.Header().Set("Content-Security-Policy", TerminalCSP(v.Terminal.Nonce))
	case v.Watch != nil:
		w.Header().Set("Content-Security-Policy", TerminalCSP(v.Watch.Nonce))
	case v.Player != nil:
		w.Header().Set("Content-Security-Policy", PlayerCSP(v.Player.Nonce))
	}
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.Logger.Error("rendering console page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// apiError is an error answer of the in-process API.
type apiError struct {
	Status int
	Body   wire.Error
}

func (e *apiError) Error() string { return e.Body.Error }

func apiStatus(err error) int {
	if ae, ok := err.(*apiError); ok {
		return ae.Status
	}
	return 0
}

// get calls the REST API in-process as the browser (its cookies, address
// and TLS state) and decodes the JSON answer into out.
func (c *console) get(r *http.Request, path string, q url.Values, out any) error {
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	rec, err := c.call(r, u)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	return nil
}

// getAll is get of a list, every page: it follows the answers' Link
// rel="next" (the API pages its lists; the console shows them whole).
func getAll[T any](c *console, r *http.Request, path string, q url.Values) ([]T, error) {
	u := path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	out := []T{}
	for page := 0; u != "" && page < 1000; page++ {
		rec, err := c.call(r, u)
		if err != nil {
			return nil, err
		}
		var items []T
		if err := json.Unmarshal(rec.body.Bytes(), &items); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", path, err)
		}
		out = append(out, items...)
		u = nextLink(rec.header.Values("Link"))
	}
	return out, nil
}

// nextLink is the address of the rel="next" link among links ("" none).
func nextLink(links []string) string {
	for _, l := range links {
		for _, part := range strings.Split(l, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
			if ok && strings.Contains(params, `rel="next"`) {
				return strings.Trim(strings.TrimSpace(target), "<>")
			}
		}
	}
	return ""
}

// call is one in-process API GET of u (a path and query).
func (c *console) call(r *http.Request, u string) (*recorder, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"Cookie", "Authorization", "X-Forwarded-For", "X-Forwarded-Proto"} {
		if v := r.Header.Values(k); len(v) > 0 {
			req.Header[k] = v
		}
	}
	req.RemoteAddr, req.TLS, req.Host = r.RemoteAddr, r.TLS, r.Host
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	c.API.ServeHTTP(rec, req)
	if rec.status >= 400 {
		ae := &apiError{Status: rec.status}
		if json.Unmarshal(rec.body.Bytes(), &ae.Body) != nil || ae.Body.Error == "" {
			ae.Body.Error = http.StatusText(rec.status)
		}
		return nil, ae
	}
	return rec, nil
}

// recorder is the ResponseWriter of an in-process API call.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	if !r.wrote {
		r.status, r.wrote = s, true
	}
}
func (r *recorder) Write(b []byte) (int, error) { r.wrote = true; return r.body.Write(b) }

// ---- signing in and out ----

func (c *console) signinPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "signin", &view{Title: "Sign in", Return: safeReturn(r.URL.Query().Get("return")), SSO: c.SSO})
}

// signin exchanges a pasted API token for a console session. The token is
// checked by the API itself (GET /api/v1/whoami with it as the bearer), so
// a wrong token is audited as login.failed and counted against the
// source's failed-login limit exactly as anywhere else.
func (c *console) signin(w http.ResponseWriter, r *http.Request) {
	ret := safeReturn(r.FormValue("return"))
	fail := func(status int, msg string) {
		c.render(w, r, status, "signin", &view{Title: "Sign in", Return: ret, SSO: c.SSO, Error: msg})
	}
	if !sameOrigin(r) {
		fail(http.StatusForbidden, "This sign-in form was sent from another site.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	token := strings.TrimSpace(r.FormValue("token"))
	if token == "" {
		fail(http.StatusUnprocessableEntity, "Paste an API token (jitgate token create prints one).")
		return
	}
	probe := r.Clone(r.Context())
	probe.Header = http.Header{"Authorization": {"Bearer " + token}}
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto"} {
		if v := r.Header.Values(k); len(v) > 0 {
			probe.Header[k] = v
		}
	}
	var who wire.Whoami
	if err := c.get(probe, "/api/v1/whoami", nil, &who); err != nil {
		switch apiStatus(err) {
		case http.StatusUnauthorized:
			fail(http.StatusUnauthorized, "This token is not valid, or has expired or been revoked.")
		case http.StatusTooManyRequests, http.StatusForbidden:
			fail(apiStatus(err), err.Error())
		default:
			c.fail(w, r, err)
		}
		return
	}
	now := c.Now()
	p, err := c.Store.Authenticate(r.Context(), token, now)
	if err != nil {
		fail(http.StatusUnauthorized, "This token is not valid, or has expired or been revoked.")
		return
	}
	if p.Kind == store.KindService {
		fail(http.StatusForbidden, "Service tokens are for automation; sign in with a personal token.")
		return
	}
	ttl := c.SessionTTL
	if info, err := c.Store.GetToken(r.Context(), p.TokenID, now); err == nil && info.ExpiresAt != nil {
		ttl = min(ttl, info.ExpiresAt.Sub(now))
	}
	if ttl < time.Minute {
		fail(http.StatusUnauthorized, "This token expires within a minute; create a new one.")
		return
	}
	addr := c.clientAddr(r)
	secret, info, err := c.Store.CreateToken(r.Context(), store.Actor{Name: p.Name(), ClientAddr: addr}, store.TokenSpec{
		Kind: store.KindSession, Subject: p.Subject, Name: "web console (token " + p.TokenID + ")",
		Groups: p.Groups, Limits: p.Limits, TTL: ttl, Parent: p.TokenID,
	}, now)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if err := c.Store.Audit(r.Context(), audit.Event{At: now, Actor: p.Name(), ClientAddr: addr, Action: audit.LoginSucceeded,
		Details: map[string]any{"method": "console-token", "token_id": info.ID, "from_token": p.TokenID}}); err != nil {
		c.Logger.Error("auditing a console sign-in", "err", err)
	}
	httpedge.SetSessionCookies(w, secret, random.Secret(), int(ttl.Seconds()), httpedge.HTTPS(r, c.TrustedProxies))
	http.Redirect(w, r, ret, http.StatusSeeOther)
}

// signout revokes the session token and clears the cookies. It is a state
// change, so the form repeats the CSRF cookie.
func (c *console) signout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	ck, err := r.Cookie(httpedge.CSRFCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.FormValue("csrf"))) != 1 {
		c.render(w, r, http.StatusForbidden, "error", &view{Title: "Forbidden", Error: "Missing or wrong CSRF token: reload the page and sign out again."})
		return
	}
	if sc, err := r.Cookie(httpedge.SessionCookie); err == nil {
		now := c.Now()
		if p, err := c.Store.Authenticate(r.Context(), sc.Value, now); err == nil && p.Kind == store.KindSession {
			if _, err := c.Store.RevokeToken(r.Context(), store.Actor{Name: p.Name(), ClientAddr: c.clientAddr(r)}, p.TokenID, now); err != nil {
				c.Logger.Error("revoking a console session", "err", err)
			}
		}
	}
	httpedge.ClearCookie(w, httpedge.SessionCookie)
	httpedge.ClearCookie(w, httpedge.CSRFCookie)
	http.Redirect(w, r, "/ui/signin", http.StatusSeeOther)
}

// sameOrigin refuses a form posted from another site (login CSRF: making
// a victim's browser sign in as the attacker). Browsers send Origin on
// POST; Sec-Fetch-Site is the fallback.
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" && o != "null" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return false
}

// safeReturn keeps a post-sign-in destination only if it is a console path.
func safeReturn(s string) string {
	if !strings.HasPrefix(s, "/ui/") || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\\r\n\t") {
		return "/ui/"
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/ui/"
	}
	return u.RequestURI()
}

// clientAddr is the request's client address as the API resolves it (the
// same function: httpedge.ClientAddr), as a string for the audit trail.
func (c *console) clientAddr(r *http.Request) string {
	if a := httpedge.ClientAddr(r, c.TrustedProxies); a.IsValid() {
		return a.String()
	}
	return ""
}
