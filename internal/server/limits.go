package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

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

// connLimiter caps the connections open at once from one address: an IPv4
// address, or an IPv6 /64 (one host commonly holds a whole /64). Beyond the
// cap a new connection is closed at once, before TLS or HTTP: a client
// cannot exhaust the server's sockets, goroutines and handshake work alone.
// An agent needs one or two connections, a CLI a few, a browser six. Peers
// in exempt (the trusted reverse proxies, which carry everyone's
// connections) are not counted.
type connLimiter struct {
	net.Listener
	max    int
	exempt []netip.Prefix
	log    *slog.Logger

	mu       sync.Mutex
	open     map[netip.Prefix]int
	lastWarn time.Time
	refused  int
}

func newConnLimiter(ln net.Listener, max int, exempt []netip.Prefix, log *slog.Logger) *connLimiter {
	return &connLimiter{Listener: ln, max: max, exempt: exempt, log: log, open: map[netip.Prefix]int{}}
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

// Accept returns the next connection within the cap; those beyond it are
// closed and logged (at most once a minute, with a count).
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key, ok := connKey(c.RemoteAddr())
		if !ok || l.isExempt(key.Addr()) {
			return c, nil
		}
		l.mu.Lock()
		if l.open[key] >= l.max {
			l.refused++
			warn := time.Since(l.lastWarn) >= time.Minute
			refused := l.refused
			if warn {
				l.lastWarn, l.refused = time.Now(), 0
			}
			l.mu.Unlock()
			c.Close()
			if warn {
				l.log.Warn("refused connections over the per-address cap", "address", key.String(), "cap", l.max, "refused", refused)
			}
			continue
		}
		l.open[key]++
		l.mu.Unlock()
		return &countedConn{Conn: c, release: func() { l.release(key) }}, nil
	}
}

func (l *connLimiter) isExempt(a netip.Addr) bool {
	for _, p := range l.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (l *connLimiter) release(key netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

// countedConn gives its place back once, when closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
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
