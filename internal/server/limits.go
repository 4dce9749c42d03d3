package server

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/store"
)

// bodyDeadline bounds the time a request body may take to arrive: d from the
// moment the handler starts, however the bytes are spaced, so a client
// trickling a body (one byte every 10 s) holds a connection and a handler
// for at most d. Requests without a body (every long-poll: GET
// /api/v1/agent/desired, GET /api/v1/requests/{id}?wait=) get no deadline:
// the server's ReadHeaderTimeout bounds their headers, and nothing else is
// read from them. The deadline is lifted once the body has been read, so a
// handler that works longer after reading is not cut (net/http cancels a
// request's context when its connection's read deadline passes).
//
// http.Server.ReadTimeout would bound bodies too, but it stays on the
// connection after the body and so cancels long-polls; WriteTimeout would
// cut them as well. Neither is set.
func bodyDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(d)); err == nil {
				r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts its connection's read deadline at the end of the body.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// connLimiter caps the connections open at once from one address (an IPv4
// address, or an IPv6 /64: one host commonly holds a whole /64) that have
// not yet carried a valid credential: a client without one cannot exhaust
// the server's sockets, goroutines and handshake work alone. An agent needs
// one or two connections, a CLI a few, a browser six. Peers in exempt (the
// trusted reverse proxies, which carry everyone's connections) are not
// counted.
//
// A connection stops counting once a request on it authenticated
// (httpedge.Authenticated, through the server's ConnContext): its holder
// is known and accountable, and its token can be revoked. At the cap, a new
// connection is not refused: the oldest connection of that address that
// never authenticated is closed to make room. Refusing the new one would
// let anyone who shares an address with a valid client (an unprivileged
// process on an agent's own host, a neighbour behind one NAT) hold the cap
// with idle keep-alive connections and keep that client out: a lockout by
// someone else's doing, which item 1 of the threat model forbids (see
// docs/design.md). With eviction, such a squatter must open cap new
// connections within the moment between a valid client's connect and its
// first request's headers to push it out, and loses its own places doing so.
//
// Authenticated connections have a bound of their own, authMax (16 times
// max) per address, so that a holder of any valid token (with single
// sign-on: anyone the provider knows, even without a role) cannot open
// connections without end. Beyond it, a connection that authenticates keeps
// counting as unauthenticated: it is served, but is the first to go when a
// new connection arrives at the cap.
type connLimiter struct {
	net.Listener
	max     int
	authMax int
	exempt  []netip.Prefix
	log     *slog.Logger

	mu sync.Mutex
	// open holds, per address, the counted connections, oldest first.
	open map[netip.Prefix][]*countedConn
	// authed counts, per address, the connections that stopped counting.
	authed   map[netip.Prefix]int
	lastWarn time.Time
	evicted  int
}

func newConnLimiter(ln net.Listener, max int, exempt []netip.Prefix, log *slog.Logger) *connLimiter {
	return &connLimiter{Listener: ln, max: max, authMax: 16 * max, exempt: exempt, log: log,
		open: map[netip.Prefix][]*countedConn{}, authed: map[netip.Prefix]int{}}
}

// connKey is the address a connection is counted under.
func connKey(addr net.Addr) (netip.Prefix, bool) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ap := ta.AddrPort().Addr().Unmap().WithZone("")
	if ap.Is4() {
		return netip.PrefixFrom(ap, 32), true
	}
	p, _ := ap.Prefix(64)
	return p, true
}

// Accept returns the next connection. When its address is at the cap, the
// oldest of that address's counted connections is closed first (logged at
// most once a minute, with a count).
func (l *connLimiter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	key, ok := connKey(c.RemoteAddr())
	if !ok || l.isExempt(key.Addr()) {
		return c, nil
	}
	cc := &countedConn{Conn: c, l: l, key: key, counted: true}
	l.mu.Lock()
	var victim *countedConn
	if conns := l.open[key]; len(conns) >= l.max {
		victim = conns[0]
		victim.counted = false
		l.open[key] = conns[1:]
		l.evicted++
	}
	l.open[key] = append(l.open[key], cc)
	warn := victim != nil && time.Since(l.lastWarn) >= time.Minute
	evicted := l.evicted
	if warn {
		l.lastWarn, l.evicted = time.Now(), 0
	}
	l.mu.Unlock()
	if victim != nil {
		victim.Conn.Close()
	}
	if warn {
		l.log.Warn("closed unauthenticated connections over the per-address cap", "address", key.String(), "cap", l.max, "closed", evicted)
	}
	return cc, nil
}

func (l *connLimiter) isExempt(a netip.Addr) bool {
	for _, p := range l.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// forget stops counting c: it closed.
func (l *connLimiter) forget(c *countedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.authed {
		c.authed = false
		if l.authed[c.key]--; l.authed[c.key] <= 0 {
			delete(l.authed, c.key)
		}
	}
	l.uncountLocked(c)
}

// promote stops counting c as unauthenticated, within authMax.
func (l *connLimiter) promote(c *countedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !c.counted || l.authed[c.key] >= l.authMax {
		return
	}
	l.uncountLocked(c)
	c.authed = true
	l.authed[c.key]++
}

func (l *connLimiter) uncountLocked(c *countedConn) {
	if !c.counted {
		return
	}
	c.counted = false
	conns := l.open[c.key]
	for i, o := range conns {
		if o == c {
			conns = append(conns[:i:i], conns[i+1:]...)
			break
		}
	}
	if len(conns) == 0 {
		delete(l.open, c.key)
	} else {
		l.open[c.key] = conns
	}
}

// countedConn is a connection the limiter counts until it is closed or
// authenticates.
type countedConn struct {
	net.Conn
	l   *connLimiter
	key netip.Prefix
	// counted (among the unauthenticated) and authed (among the
	// authenticated) are guarded by l.mu.
	counted, authed bool
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.l.forget(c)
	return err
}

// authenticated stops counting c as unauthenticated: a request on it
// carried a valid credential.
func (c *countedConn) authenticated() { c.l.promote(c) }

// connContext is the server's ConnContext: it lets the API and the console
// tell a counted connection that it authenticated (httpedge.Authenticated).
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if cc, ok := c.(*countedConn); ok {
		return httpedge.WithAuthenticated(ctx, cc.authenticated)
	}
	return ctx
}

// pruneBatch is how many rows one pruning transaction deletes at most.
const pruneBatch = 500

// deliveryRetention is how long finished webhook deliveries are kept.
const deliveryRetention = 7 * 24 * time.Hour

// pruner is what pruneLoop needs of the store.
type pruner interface {
	PruneExpiredTokens(ctx context.Context, now time.Time, limit int) (int64, error)
	PruneOutbox(ctx context.Context, before time.Time, limit int) (int64, error)
}

// prune deletes expired tokens and console sessions, and webhook deliveries
// finished more than deliveryRetention ago, batch by batch, so that no
// write transaction holds the database for long.
func prune(ctx context.Context, st pruner, now time.Time, log *slog.Logger) {
	drain := func(what string, f func() (int64, error)) {
		var total int64
		for ctx.Err() == nil {
			n, err := f()
			if err != nil {
				if ctx.Err() == nil {
					log.Error("pruning "+what, "err", err)
				}
				return
			}
			total += n
			if n < pruneBatch {
				break
			}
		}
		if total > 0 {
			log.Debug("pruned "+what, "count", total)
		}
	}
	drain("expired tokens", func() (int64, error) { return st.PruneExpiredTokens(ctx, now, pruneBatch) })
	drain("webhook deliveries", func() (int64, error) { return st.PruneOutbox(ctx, now.Add(-deliveryRetention), pruneBatch) })
}

// pruneLoop prunes at start and then every interval until ctx ends.
func pruneLoop(ctx context.Context, st *store.Store, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		prune(ctx, st, time.Now(), log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
