package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Config returns the yamux configuration both ends use: keepalives every
// 10 s so a silent peer is noticed, no logging to stderr.
func Config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.StreamOpenTimeout = 10 * time.Second
	c.LogOutput = io.Discard
	return c
}

// Server holds the agents' relay connections, one per target: a newer
// connection of the same target replaces the older one.
type Server struct {
	mu     sync.Mutex
	agents map[string]*yamux.Session
	closed bool
}

// NewServer returns a server with no agent connected.
func NewServer() *Server { return &Server{agents: map[string]*yamux.Session{}} }

// ServeAgent runs target's agent connection conn until it ends, ctx ends or
// the server closes. The server is the yamux client: it opens the streams.
func (s *Server) ServeAgent(ctx context.Context, target string, conn net.Conn) error {
	sess, err := yamux.Client(&coalesceConn{Conn: conn}, Config())
	if err != nil {
		conn.Close()
		return fmt.Errorf("starting relay session of %s: %w", target, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.Close()
		return fmt.Errorf("relay closed")
	}
	if old := s.agents[target]; old != nil {
		old.Close()
	}
	s.agents[target] = sess
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.agents[target] == sess {
			delete(s.agents, target)
		}
		s.mu.Unlock()
		sess.Close()
	}()
	select {
	case <-sess.CloseChan():
	case <-ctx.Done():
	}
	return nil
}

// Connected reports whether target's agent holds a relay connection.
func (s *Server) Connected(target string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.agents[target]
	return sess != nil && !sess.IsClosed()
}

// Open opens a stream to target's agent headed h and waits for the agent's
// answer: a *Refusal when it refuses, ErrNoAgent when it is not connected.
// The returned stream also ends when the agent's connection ends.
func (s *Server) Open(ctx context.Context, target string, h Header) (net.Conn, error) {
	s.mu.Lock()
	sess := s.agents[target]
	s.mu.Unlock()
	if sess == nil || sess.IsClosed() {
		return nil, ErrNoAgent
	}
	st, err := sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if err := WriteHeader(st, h); err != nil {
		st.Close()
		return nil, fmt.Errorf("sending tunnel header to %s: %w", target, err)
	}
	var rep reply
	if err := readFrame(st, &rep); err != nil {
		st.Close()
		return nil, fmt.Errorf("reading the agent's answer: %w", err)
	}
	st.SetDeadline(time.Time{})
	if rep.Error != "" {
		st.Close()
		return nil, &Refusal{Reason: rep.Error}
	}
	return st, nil
}

// Close ends every agent connection (and so every relayed stream).
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for t, sess := range s.agents {
		sess.Close()
		delete(s.agents, t)
	}
}
