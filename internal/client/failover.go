package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Failover across the URLs of one deployment (several replicas sharing one
// database, or one URL behind a load balancer, where there is nothing to
// move to and the balancer does it).
//
// The client uses one URL at a time, and moves on to the next (in the
// order given, wrapping round) when the one in use looks dead: the
// connection is refused or cut, the call times out, or the answer is 502,
// 503 or 504 (what a proxy or load balancer says of a backend that is
// gone). The failed request itself is sent again to the next URL only when
// that cannot do a change twice:
//   - a GET or HEAD (a read): always;
//   - any other method: only when the connection was never made (a dial
//     error such as "connection refused": no byte of the request left this
//     host). A write cut after it was sent, or answered 5xx, is not sent
//     again: it may have been committed, and the caller decides.
//
// Each URL is tried at most once per call, without waiting: the callers
// that loop (the agent) back off with jitter between calls. The URL that
// answered stays in use; there is no "primary" to go back to.

// defaultTransport is http.DefaultTransport with a shorter dial timeout,
// so that a replica that black-holes packets costs seconds, not half a
// minute, before the next one is tried.
func defaultTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	return tr
}

// dialTimeout bounds one TCP connect to a server.
const dialTimeout = 5 * time.Second

// noRetry marks an error after which the request must not be sent again
// even when it is a read (part of the answer was already passed on).
type noRetry struct{ err error }

func (e *noRetry) Error() string { return e.err.Error() }
func (e *noRetry) Unwrap() error { return e.err }

// judge says, for a request of method that failed with err (status is the
// answer's, 0 when none came), whether the server looks dead (move on) and
// whether the request may be sent again to another one.
func judge(ctx context.Context, method string, status int, err error) (dead, retry bool) {
	if err == nil {
		return false, false
	}
	if ctx.Err() != nil {
		// The caller's deadline passed while this server held the call
		// (a black hole) : the next call goes elsewhere. A cancellation is
		// the caller's own doing and says nothing of the server.
		return errors.Is(ctx.Err(), context.DeadlineExceeded), false
	}
	var nr *noRetry
	final := errors.As(err, &nr)
	idempotent := method == http.MethodGet || method == http.MethodHead
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.Status {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true, idempotent && !final
		}
		return false, false
	}
	// No (complete) answer: the connection failed.
	return true, !final && (idempotent || notSent(err))
}

// notSent reports whether err is a failure to connect at all (refused, no
// route, dial timeout, unknown host): the request never left this host.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// each runs f against the URL in use and, while judge allows, against the
// next ones, each at most once. It returns f's last error.
func (c *Client) each(ctx context.Context, method string, f func(base *url.URL) (int, error)) error {
	n := len(c.bases)
	start := int(c.cur.Load())
	var err error
	for i := range n {
		idx := (start + i) % n
		var status int
		status, err = f(c.bases[idx])
		dead, retry := judge(ctx, method, status, err)
		if !dead {
			return err
		}
		if n > 1 {
			c.moveOn(idx, err)
		}
		if !retry {
			return err
		}
	}
	return err
}

// moveOn makes the URL after idx the one in use, unless another call
// already moved.
func (c *Client) moveOn(idx int, why error) {
	n := len(c.bases)
	next := (idx + 1) % n
	if !c.cur.CompareAndSwap(int32(idx), int32(next)) {
		return
	}
	c.switchMu.Lock()
	f := *c.switched
	c.switchMu.Unlock()
	if f != nil {
		f(c.bases[idx].String(), c.bases[next].String(), why)
	}
}

// Server returns the server URL in use.
func (c *Client) Server() string { return c.bases[int(c.cur.Load())%len(c.bases)].String() }

// Servers returns every server URL the client knows, in order.
func (c *Client) Servers() []string {
	out := make([]string, len(c.bases))
	for i, u := range c.bases {
		out[i] = u.String()
	}
	return out
}
