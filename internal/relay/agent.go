package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/jitgate/jitgate/internal/wire"
)

// Agent is the agent's side of the relay: it accepts the streams the
// server opens, checks each against the latest desired state (Authorize),
// dials the local service and splices, and ends each stream at its
// deadline on its own clock.
type Agent struct {
	// State returns the latest desired state; ok is false before the
	// first, and then every stream is refused.
	State func() (wire.DesiredState, bool)
	// Dial dials the local service (default net.Dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Now is the agent's clock (default time.Now).
	Now func() time.Time
	Log *slog.Logger

	mu      sync.Mutex
	streams map[*agentStream]struct{}
}

type agentStream struct {
	h     Header
	addr  string // what the agent dialed
	conns [2]net.Conn
	once  sync.Once
	timer *time.Timer // ends the stream at its deadline
}

func (s *agentStream) close() {
	s.once.Do(func() {
		for _, c := range s.conns {
			if c != nil {
				closeHard(c)
			}
		}
	})
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) log() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

// ServeConn runs the agent's side of one relay connection until it ends.
// The agent is the yamux server: it accepts the streams.
func (a *Agent) ServeConn(ctx context.Context, conn net.Conn) error {
	sess, err := yamux.Server(&coalesceConn{Conn: conn}, Config())
	if err != nil {
		conn.Close()
		return err
	}
	defer sess.Close()
	go func() {
		select {
		case <-ctx.Done():
			sess.Close()
		case <-sess.CloseChan():
		}
	}()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, yamux.ErrSessionShutdown) {
				return nil
			}
			return err
		}
		go a.Handle(ctx, st)
	}
}

// Handle serves one relayed stream: read its header, authorize it, dial,
// answer, splice until either side ends or the deadline passes.
func (a *Agent) Handle(ctx context.Context, st net.Conn) {
	st.SetReadDeadline(a.now().Add(10 * time.Second))
	h, err := ReadHeader(st)
	if err != nil {
		st.Close()
		return
	}
	st.SetReadDeadline(time.Time{})
	refuse := func(why string) {
		a.log().Warn("bastion tunnel refused", "session", h.Session, "request", h.RequestID, "principal", h.Principal, "port", h.Port, "reason", why)
		_ = writeFrame(st, reply{Error: why})
		st.Close()
	}
	ds, ok := a.State()
	if !ok {
		refuse("the agent has no desired state yet")
		return
	}
	addr, until, err := Authorize(ds, h, a.now())
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			refuse(r.Reason)
		} else {
			refuse(err.Error())
		}
		return
	}
	dial := a.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	local, err := dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		refuse("cannot reach the service: " + err.Error())
		return
	}
	if err := writeFrame(st, reply{}); err != nil {
		local.Close()
		st.Close()
		return
	}
	s := &agentStream{h: h, addr: addr, conns: [2]net.Conn{st, local}}
	// The deadline is kept on the agent's own clock: the stream ends then
	// even if the server never says so (it may be gone).
	s.timer = time.AfterFunc(until.Sub(a.now()), s.close)
	defer s.timer.Stop()
	a.mu.Lock()
	if a.streams == nil {
		a.streams = map[*agentStream]struct{}{}
	}
	a.streams[s] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.streams, s)
		a.mu.Unlock()
	}()
	// A Recheck that ran while the service was being dialled did not see
	// this stream: check it against the latest state now that any later
	// Recheck will.
	if ds, ok := a.State(); !ok {
		s.close()
	} else if _, live := liveUntil(ds, h, addr, a.now()); !live {
		a.log().Info("bastion tunnel ended: its grant is gone", "session", h.Session, "request", h.RequestID)
		s.close()
	}
	a.log().Info("bastion tunnel opened", "session", h.Session, "request", h.RequestID, "principal", h.Principal, "port", h.Port, "until", until)
	var count Counter
	count.Touch(time.Now())
	if idle := idleTimeout(ds, h, addr); idle > 0 {
		// The agent enforces the rule's idle timeout too, on its own
		// clock and its own count of the bytes, as it does the deadline,
		// as a backstop: IdleGrace later, so that the server, which
		// records why a session ended, ends it first.
		stop := make(chan struct{})
		defer close(stop)
		go a.endWhenIdle(s, &count, idle+IdleGrace, stop)
	}
	Splice(st, local, &count)
	s.close()
}

// IdleGrace is how much longer than the rule's idle timeout the agent lets
// an idle stream live before it ends it itself.
const IdleGrace = time.Second

// idleTimeout is the idle timeout of the rule under which a stream headed
// h dials addr (0: none): the protected port of h's port and protocol, and
// in gateway mode of the dialled destination.
func idleTimeout(ds wire.DesiredState, h Header, addr string) time.Duration {
	host, _, _ := net.SplitHostPort(addr)
	for _, p := range ds.Protected {
		if p.Port == h.Port && p.Protocol == h.Protocol && (p.Destination == "" || p.Destination == host) {
			return time.Duration(p.IdleTimeout)
		}
	}
	return 0
}

// endWhenIdle ends stream s once no byte moved through count for idle,
// until stop is closed. The bytes are stamped on the wall clock.
func (a *Agent) endWhenIdle(s *agentStream, count *Counter, idle time.Duration, stop <-chan struct{}) {
	for {
		wait := time.Until(count.LastActive().Add(idle))
		if wait <= 0 {
			a.log().Info("bastion tunnel ended: idle", "session", s.h.Session, "request", s.h.RequestID, "idle_timeout", idle)
			s.close()
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Recheck ends the streams the desired state ds no longer allows (a
// revoked or expired grant, a rule no longer open to the bastion) and moves
// the deadline of the others to that of the principal's live grant for the
// port (an extension moves a grant to a newer request). The agent calls it
// with every desired state it receives.
func (a *Agent) Recheck(ds wire.DesiredState) {
	now := a.now()
	a.mu.Lock()
	var ended []*agentStream
	for s := range a.streams {
		until, ok := liveUntil(ds, s.h, s.addr, now)
		if !ok {
			ended = append(ended, s)
			continue
		}
		s.timer.Reset(until.Sub(now))
	}
	a.mu.Unlock()
	for _, s := range ended {
		a.log().Info("bastion tunnel ended: its grant is gone", "session", s.h.Session, "request", s.h.RequestID)
		s.close()
	}
}

// Live counts the streams being relayed.
func (a *Agent) Live() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.streams)
}

// liveUntil is the latest deadline of a live bastion grant of h's principal
// for h's port in ds that still leads to addr (a gateway serves several
// targets: a grant for another one does not keep this stream), if the port
// still allows the bastion.
func liveUntil(ds wire.DesiredState, h Header, addr string, now time.Time) (time.Time, bool) {
	var until time.Time
	for _, g := range ds.Bastion {
		if g.Principal != h.Principal || g.Port != h.Port || g.Protocol != h.Protocol || !now.Before(g.ExpiresAt) {
			continue
		}
		// Authorize checks the rule; only the request id may differ.
		hh := h
		hh.RequestID, hh.Deadline = g.RequestID, time.Time{}
		if a, u, err := Authorize(ds, hh, now); err == nil && a == addr && u.After(until) {
			until = u
		}
	}
	return until, !until.IsZero()
}
