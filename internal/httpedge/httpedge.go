// Package httpedge holds the security rules of jitgate's HTTP edge that the
// REST API (internal/api) and the web console (internal/web) must apply the
// same way: which address a request comes from behind trusted reverse
// proxies, whether it reached us over TLS, and the names of the browser
// session's cookies. They live here once so the two front doors cannot
// drift apart (an address audited by one and throttled by the other, a
// cookie set by one and not cleared by the other).
package httpedge

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// The cookies of a browser session, set by the API's single sign-on and by
// the console's sign-in alike.
const (
	// SessionCookie holds the session token (HttpOnly).
	SessionCookie = "jitgate_session"
	// CSRFCookie holds the CSRF token that state-changing requests repeat
	// in CSRFHeader (double submit; readable by the page's script).
	CSRFCookie = "jitgate_csrf"
	// CSRFHeader carries the CSRF cookie's value on API calls.
	CSRFHeader = "X-CSRF-Token"
	// LoginCookie carries a browser login begun (state, nonce, PKCE
	// verifier; sealed) and so binds it to the browser that began it:
	// nobody can make a victim's browser finish their own login.
	LoginCookie = "jitgate_login"
)

// ClientAddr is the address a request came from: its peer, or, when the
// peer is a trusted proxy, the rightmost X-Forwarded-For entry that is not a
// trusted proxy itself. Entries left of an untrusted one are whatever the
// client chose to send and are never believed; a malformed entry ends the
// walk at the last trusted hop (so a proxy's garbage cannot name a victim).
// Addresses are unmapped (::ffff:192.0.2.1 is 192.0.2.1) and lose their
// zone. It returns the zero Addr when the peer address cannot be parsed
// (only in tests that build requests by hand).
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	addr := peer(r)
	if !addr.IsValid() || !Trusted(addr, trusted) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr
		}
		hop = hop.Unmap().WithZone("")
		if !Trusted(hop, trusted) {
			return hop
		}
		addr = hop
	}
	return addr
}

// HTTPS reports whether the client reached us over TLS: TLS ended here, or
// at a trusted proxy that says so in X-Forwarded-Proto. Cookies are Secure
// exactly then.
func HTTPS(r *http.Request, trusted []netip.Prefix) bool {
	if r.TLS != nil {
		return true
	}
	p := peer(r)
	return p.IsValid() && Trusted(p, trusted) && r.Header.Get("X-Forwarded-Proto") == "https"
}

// Trusted reports whether addr lies in one of the trusted proxies' prefixes.
func Trusted(addr netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// peer is the request's TCP peer, unmapped and without zone.
func peer(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return addr.Unmap().WithZone("")
}

// SetSessionCookies gives the browser a session: the token in an HttpOnly
// cookie and a fresh CSRF token its script can read, both for maxAge
// seconds, Secure when the client reached us over TLS, SameSite=Lax.
func SetSessionCookies(w http.ResponseWriter, token, csrf string, maxAge int, secure bool) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: token, Path: "/", MaxAge: maxAge, HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
	http.SetCookie(w, &http.Cookie{Name: CSRFCookie, Value: csrf, Path: "/", MaxAge: maxAge, Secure: secure, SameSite: http.SameSiteLaxMode})
}

// ClearCookie tells the browser to drop the cookie name (Path /).
func ClearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Path: "/", MaxAge: -1})
}

type authenticatedKey struct{}

// WithAuthenticated returns ctx (a connection's base context) carrying f,
// which Authenticated calls. The server's connection cap counts only the
// connections that have not yet carried a valid credential (f stops
// counting one), so that nobody without a credential can hold the places
// a valid client needs (internal/server connLimiter).
func WithAuthenticated(ctx context.Context, f func()) context.Context {
	return context.WithValue(ctx, authenticatedKey{}, f)
}

// Authenticated tells the connection r came on that r carried a valid
// credential. The API and the console call it once a token, session
// cookie or enrollment token checked out, before anything else is done
// with the request; it does nothing for a request that came another way
// (tests, in-process calls without a connection).
func Authenticated(r *http.Request) {
	if f, ok := r.Context().Value(authenticatedKey{}).(func()); ok {
		f()
	}
}
