package relay_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

var t0 = time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)

func desired(port uint16, access string) wire.DesiredState {
	return wire.DesiredState{Target: "web-01", Mode: "host",
		Protected: []wire.Port{{Port: port, Protocol: "tcp", Access: access}, {Port: 3389, Protocol: "tcp"}},
		Bastion:   []wire.BastionGrant{{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port, ExpiresAt: t0.Add(time.Hour)}},
	}
}

// TestAuthorize checks the agent's own decision on a relayed stream: it
// dials only the loopback port of a live bastion grant that the header
// names exactly, on a port whose rule allows the bastion, and never past
// the grant's deadline.
func TestAuthorize(t *testing.T) {
	good := relay.Header{Session: "s-1", RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22}
	tests := []struct {
		name      string
		ds        wire.DesiredState
		mod       func(*relay.Header)
		now       time.Time
		wantUntil time.Time // zero: refused
	}{
		{"live grant", desired(22, "bastion"), nil, t0, t0.Add(time.Hour)},
		{"both", desired(22, "both"), nil, t0, t0.Add(time.Hour)},
		{"header deadline earlier", desired(22, "bastion"), func(h *relay.Header) { h.Deadline = t0.Add(time.Minute) }, t0, t0.Add(time.Minute)},
		{"header deadline later", desired(22, "bastion"), func(h *relay.Header) { h.Deadline = t0.Add(2 * time.Hour) }, t0, t0.Add(time.Hour)},
		{"expired", desired(22, "bastion"), nil, t0.Add(time.Hour), time.Time{}},
		{"direct rule", desired(22, ""), nil, t0, time.Time{}},
		{"unknown request", desired(22, "bastion"), func(h *relay.Header) { h.RequestID = "r-2" }, t0, time.Time{}},
		{"other principal", desired(22, "bastion"), func(h *relay.Header) { h.Principal = "user:mallory" }, t0, time.Time{}},
		{"other port", desired(22, "bastion"), func(h *relay.Header) { h.Port = 3389 }, t0, time.Time{}},
		{"port not in policy", desired(22, "bastion"), func(h *relay.Header) { h.Port = 25 }, t0, time.Time{}},
		{"udp", desired(22, "bastion"), func(h *relay.Header) { h.Protocol = "udp" }, t0, time.Time{}},
		{"gateway mode", func() wire.DesiredState { d := desired(22, "bastion"); d.Mode = "gateway"; return d }(), nil, t0, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := good
			if tt.mod != nil {
				tt.mod(&h)
			}
			addr, until, err := relay.Authorize(tt.ds, h, tt.now)
			if tt.wantUntil.IsZero() {
				var r *relay.Refusal
				if !errors.As(err, &r) {
					t.Fatalf("Authorize = %q, %v, %v; want a refusal", addr, until, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if addr != "127.0.0.1:22" || !until.Equal(tt.wantUntil) {
				t.Errorf("Authorize = %q until %v, want 127.0.0.1:22 until %v", addr, until, tt.wantUntil)
			}
		})
	}
}

// gatewayDesired is a gateway's desired state: web-01 (198.51.100.10)
// behind it exposes 3389 through the bastion and 22 only directly; db-01
// (203.0.113.20) exposes 3389 through the bastion too.
func gatewayDesired() wire.DesiredState {
	return wire.DesiredState{Target: "gw-1", Mode: "gateway",
		Protected: []wire.Port{
			{Port: 3389, Protocol: "tcp", Destination: "198.51.100.10", Access: "bastion"},
			{Port: 22, Protocol: "tcp", Destination: "198.51.100.10"},
			{Port: 3389, Protocol: "tcp", Destination: "203.0.113.20", Access: "both"},
		},
		Bastion: []wire.BastionGrant{
			{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 3389, ExpiresAt: t0.Add(time.Hour), Destination: "198.51.100.10"},
			{RequestID: "r-2", Principal: "user:alice", Protocol: "tcp", Port: 22, ExpiresAt: t0.Add(time.Hour), Destination: "198.51.100.10"},
			{RequestID: "r-3", Principal: "user:bob", Protocol: "tcp", Port: 3389, ExpiresAt: t0.Add(time.Hour), Destination: "203.0.113.20"},
			{RequestID: "r-4", Principal: "user:bob", Protocol: "tcp", Port: 3389, ExpiresAt: t0.Add(time.Hour), Destination: "192.0.2.99"},
		},
	}
}

// TestAuthorizeGatewayDestinations feeds a gateway the desired state a
// compromised server could send: a bastion grant, and a protected port with
// bastion access, for an address no target behind a gateway may have (the
// gateway's own loopback, a cloud metadata address, a host name, an address
// with an IPv6 zone, multicast, unspecified, a mapped address). The gateway
// dials none of them; a global unicast address still works.
func TestAuthorizeGatewayDestinations(t *testing.T) {
	for _, tt := range []struct {
		dest string
		ok   bool
	}{
		{"198.51.100.10", true},
		{"2001:db8::10", true},
		{"127.0.0.1", false},
		{"::1", false},
		{"169.254.169.254", false},
		{"fe80::1%eth0", false},
		{"fe80::1", false},
		{"localhost", false},
		{"metadata.google.internal", false},
		{"224.0.0.1", false},
		{"0.0.0.0", false},
		{"::ffff:198.51.100.10", false},
		{"", false},
	} {
		t.Run(tt.dest, func(t *testing.T) {
			ds := wire.DesiredState{Target: "gw-1", Mode: "gateway",
				Protected: []wire.Port{{Port: 22, Protocol: "tcp", Destination: tt.dest, Access: "bastion"}},
				Bastion:   []wire.BastionGrant{{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22, ExpiresAt: t0.Add(time.Hour), Destination: tt.dest}},
			}
			addr, _, err := relay.Authorize(ds, relay.Header{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22}, t0)
			if !tt.ok {
				var r *relay.Refusal
				if !errors.As(err, &r) {
					t.Fatalf("Authorize = %q, %v; want a refusal", addr, err)
				}
				return
			}
			if want := net.JoinHostPort(tt.dest, "22"); err != nil || addr != want {
				t.Fatalf("Authorize = %q, %v; want %s", addr, err, want)
			}
		})
	}
}

// TestAuthorizeGateway checks a gateway agent's decision: it dials the
// address of the target behind it that the grant names, only on a port the
// policy protects there with bastion access; the header cannot choose the
// address.
func TestAuthorizeGateway(t *testing.T) {
	tests := []struct {
		name     string
		h        relay.Header
		wantAddr string // empty: refused
	}{
		{"grant to web-01", relay.Header{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 3389}, "198.51.100.10:3389"},
		{"grant to db-01 (both)", relay.Header{RequestID: "r-3", Principal: "user:bob", Protocol: "tcp", Port: 3389}, "203.0.113.20:3389"},
		{"port whose rule is direct", relay.Header{RequestID: "r-2", Principal: "user:alice", Protocol: "tcp", Port: 22}, ""},
		{"address the policy does not protect", relay.Header{RequestID: "r-4", Principal: "user:bob", Protocol: "tcp", Port: 3389}, ""},
		{"port the grant does not name", relay.Header{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 445}, ""},
		{"another principal's grant", relay.Header{RequestID: "r-3", Principal: "user:alice", Protocol: "tcp", Port: 3389}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _, err := relay.Authorize(gatewayDesired(), tt.h, t0)
			if tt.wantAddr == "" {
				var r *relay.Refusal
				if !errors.As(err, &r) {
					t.Fatalf("Authorize = %q, %v; want a refusal", addr, err)
				}
				return
			}
			if err != nil || addr != tt.wantAddr {
				t.Fatalf("Authorize = %q, %v; want %s", addr, err, tt.wantAddr)
			}
		})
	}
}

// pair connects a relay server and an agent over an in-memory connection
// and waits until the server sees the agent.
func pair(t *testing.T, state func() (wire.DesiredState, bool), now func() time.Time) (*relay.Server, *relay.Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := relay.NewServer()
	ag := &relay.Agent{State: state, Now: now}
	a, b := net.Pipe()
	go srv.ServeAgent(ctx, "web-01", a)
	go ag.ServeConn(ctx, b)
	deadline := time.Now().Add(5 * time.Second)
	for !srv.Connected("web-01") {
		if time.Now().After(deadline) {
			t.Fatal("the agent never connected")
		}
		time.Sleep(time.Millisecond)
	}
	return srv, ag
}

// TestRelayRefusesBogusStreams opens streams on the agent's side with
// headers the desired state does not allow: the agent refuses each one and
// dials nothing.
func TestRelayRefusesBogusStreams(t *testing.T) {
	port := testenv.Echo(t)
	ds := desired(port, "bastion")
	ds.Bastion[0].ExpiresAt = time.Now().Add(time.Hour)
	var dialed atomic.Int32
	srv, ag := pair(t, func() (wire.DesiredState, bool) { return ds, true }, time.Now)
	ag.Dial = func(ctx context.Context, n, addr string) (net.Conn, error) {
		dialed.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, n, addr)
	}
	for _, h := range []relay.Header{
		{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22},          // a port the policy does not name
		{RequestID: "r-9", Principal: "user:alice", Protocol: "tcp", Port: port},        // no such grant
		{RequestID: "r-1", Principal: "user:mallory", Protocol: "tcp", Port: port},      // someone else's grant
		{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port + 1},    // another port
		{RequestID: "r-1", Principal: "user:alice", Protocol: "udp", Port: port},        // not tcp
		{RequestID: "", Principal: "", Protocol: "", Port: 0, Session: "garbage\x00\n"}, // nothing at all
	} {
		_, err := srv.Open(context.Background(), "web-01", h)
		var r *relay.Refusal
		if !errors.As(err, &r) {
			t.Errorf("Open(%+v) = %v, want a refusal", h, err)
		}
	}
	if n := dialed.Load(); n != 0 {
		t.Errorf("the agent dialed %d times for refused streams", n)
	}
}

// TestRelayStreamEndsAtDeadline relays a live stream, then checks that the
// agent ends it at the grant's deadline on its own (nothing from the
// server), and that Recheck ends a stream whose grant left the desired
// state.
func TestRelayStreamEndsAtDeadline(t *testing.T) {
	port := testenv.Echo(t)
	ds := desired(port, "both")
	ds.Bastion[0].ExpiresAt = time.Now().Add(300 * time.Millisecond)
	var cur atomic.Pointer[wire.DesiredState]
	cur.Store(&ds)
	srv, ag := pair(t, func() (wire.DesiredState, bool) { return *cur.Load(), true }, time.Now)
	h := relay.Header{Session: "s-1", RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port}
	st, err := srv.Open(context.Background(), "web-01", h)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if _, err := st.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(st).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo = %q, %v", line, err)
	}
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, st); err != nil {
		t.Fatalf("the stream did not end at the deadline: %v", err)
	}

	for ag.Live() != 0 {
		time.Sleep(time.Millisecond)
	}
	later := desired(port, "both")
	later.Bastion[0].ExpiresAt = time.Now().Add(time.Hour)
	cur.Store(&later)
	st2, err := srv.Open(context.Background(), "web-01", h)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	for ag.Live() != 1 {
		time.Sleep(time.Millisecond)
	}
	revoked := later
	revoked.Bastion = nil
	ag.Recheck(revoked)
	st2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, st2); err != nil {
		t.Fatalf("Recheck did not end the stream: %v", err)
	}
}

// TestRelayRecheckDuringDial revokes the grant while the agent is dialling
// the service for a stream it has just authorized: the revocation's Recheck
// runs before the stream is registered as live, and must still end it (the
// agent re-checks the stream against the latest state once registered).
func TestRelayRecheckDuringDial(t *testing.T) {
	port := testenv.Echo(t)
	ds := desired(port, "bastion")
	ds.Bastion[0].ExpiresAt = time.Now().Add(time.Hour)
	var cur atomic.Pointer[wire.DesiredState]
	cur.Store(&ds)
	srv, ag := pair(t, func() (wire.DesiredState, bool) { return *cur.Load(), true }, time.Now)
	ag.Dial = func(ctx context.Context, n, addr string) (net.Conn, error) {
		revoked := ds
		revoked.Bastion = nil
		cur.Store(&revoked)
		ag.Recheck(revoked)
		var d net.Dialer
		return d.DialContext(ctx, n, addr)
	}
	st, err := srv.Open(context.Background(), "web-01", relay.Header{Session: "s-1", RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: port})
	if err != nil {
		return // refused: nothing is relayed
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	st.Write([]byte("hello\n"))
	if _, err := io.Copy(io.Discard, st); err != nil {
		t.Fatalf("the stream outlived its revoked grant: %v", err)
	}
}
