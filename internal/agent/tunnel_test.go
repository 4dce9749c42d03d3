package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/firewall"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestAgentRelayChecksStreamsItself runs the real agent (its poll loop, its
// client's outbound WebSocket, its relay side) against a server whose relay
// end the test drives: streams with bogus headers are refused by the agent
// (nothing is dialled beyond what its desired state names), a stream for a
// live bastion grant reaches the local service, and the stream ends when
// the next desired state no longer holds the grant.
func TestAgentRelayChecksStreamsItself(t *testing.T) {
	port := testenv.Echo(t)

	api, _ := newFakeAPI(t)
	rs := relay.NewServer()
	defer rs.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/agent/enroll", api.enroll)
	mux.HandleFunc("GET /api/v1/agent/desired", api.desired)
	mux.HandleFunc("POST /api/v1/agent/report", api.report)
	mux.HandleFunc("GET /api/v1/agent/tunnel", func(w http.ResponseWriter, r *http.Request) {
		if !api.authorized(w, r) {
			return
		}
		ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
		defer cancel()
		c, err := relay.AcceptWS(ctx, w, r)
		if err != nil {
			return
		}
		rs.ServeAgent(ctx, "web-1", c)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	api.mu.Lock()
	api.bastion = []wire.BastionGrant{{RequestID: "r-1", Principal: "alice", Protocol: "tcp", Port: port, ExpiresAt: time.Now().Add(time.Hour)}}
	api.mu.Unlock()
	rev := api.update([]wire.Port{{Port: port, Protocol: "tcp", Access: "bastion"}, {Port: 22, Protocol: "tcp"}}, nil)
	start(t, Config{ServerURL: srv.URL, EnrollToken: api.enrollToken, StateDir: t.TempDir(), PollWait: 2 * time.Second}, &fakeBackend{})
	api.waitReport(t, "for the revision with the bastion grant", revision(rev))
	deadline := time.Now().Add(5 * time.Second)
	for !rs.Connected("web-1") {
		if time.Now().After(deadline) {
			t.Fatal("the agent never opened its relay connection")
		}
		time.Sleep(10 * time.Millisecond)
	}

	ctx := context.Background()
	for _, h := range []relay.Header{
		{RequestID: "r-1", Principal: "alice", Protocol: "tcp", Port: 22},     // protected, but direct only
		{RequestID: "r-1", Principal: "alice", Protocol: "tcp", Port: 25},     // not in the policy
		{RequestID: "r-2", Principal: "alice", Protocol: "tcp", Port: port},   // no such grant
		{RequestID: "r-1", Principal: "mallory", Protocol: "tcp", Port: port}, // someone else's grant
		{RequestID: "r-1", Principal: "alice", Protocol: "udp", Port: port},   // not TCP
	} {
		_, err := rs.Open(ctx, "web-1", h)
		var refusal *relay.Refusal
		if !errors.As(err, &refusal) {
			t.Errorf("stream %+v: %v, want the agent's refusal", h, err)
		}
	}
	st, err := rs.Open(ctx, "web-1", relay.Header{Session: "s-1", RequestID: "r-1", Principal: "alice", Protocol: "tcp", Port: port})
	if err != nil {
		t.Fatalf("stream for the live grant: %v", err)
	}
	fmt.Fprintf(st, "ping\n")
	if line, err := bufio.NewReader(st).ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo through the agent = %q, %v", line, err)
	}
	// The grant leaves the desired state (a revocation): the agent ends the
	// stream on its own.
	api.mu.Lock()
	api.bastion = nil
	api.mu.Unlock()
	api.update([]wire.Port{{Port: port, Protocol: "tcp", Access: "bastion"}}, nil)
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, st); err != nil {
		t.Fatalf("the stream outlived its grant: %v", err)
	}
}

// TestRelayIgnoresStatesItCannotApply gives the agent's relay desired states
// a compromised or confused server could send: one of the other mode (a
// host agent told it is a gateway would otherwise dial the address the
// state names, reaching into the host's network), and a malformed one. The
// relay then allows no stream at all, as the kernel applies none of it; a
// state of the agent's own mode still allows its grant.
func TestRelayIgnoresStatesItCannotApply(t *testing.T) {
	exp := time.Now().Add(time.Hour)
	host := wire.DesiredState{Target: "web-1", Mode: "host", Revision: 1,
		Protected: []wire.Port{{Port: 22, Protocol: "tcp", Access: "bastion"}},
		Bastion:   []wire.BastionGrant{{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22, ExpiresAt: exp}}}
	gateway := wire.DesiredState{Target: "web-1", Mode: "gateway", Revision: 1,
		Protected: []wire.Port{{Port: 22, Protocol: "tcp", Destination: "198.51.100.10", Access: "bastion"}},
		Bastion:   []wire.BastionGrant{{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22, ExpiresAt: exp, Destination: "198.51.100.10"}}}
	malformed := host
	malformed.Protected = []wire.Port{{Port: 22, Protocol: "tcp", Access: "bastion"}, {Port: 25, Protocol: "sctp"}}
	tests := []struct {
		name     string
		mode     firewall.Mode
		ds       wire.DesiredState
		wantAddr string // empty: refused
	}{
		{"host agent, host state", firewall.HostMode, host, "127.0.0.1:22"},
		{"gateway agent, gateway state", firewall.GatewayMode, gateway, "198.51.100.10:22"},
		{"host agent sent a gateway state", firewall.HostMode, gateway, ""},
		{"gateway agent sent a host state", firewall.GatewayMode, host, ""},
		{"malformed state", firewall.HostMode, malformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Config{ServerURL: "http://192.0.2.1", StateDir: t.TempDir(), Mode: tt.mode}, &fakeBackend{})
			if err != nil {
				t.Fatal(err)
			}
			a.setRelayState(tt.ds, time.Now())
			ds, ok := a.relayAgent().State()
			if !ok {
				t.Fatal("the relay has no state")
			}
			addr, _, err := relay.Authorize(ds, relay.Header{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22}, time.Now())
			if tt.wantAddr == "" {
				var r *relay.Refusal
				if !errors.As(err, &r) {
					t.Fatalf("the relay would dial %q (%v); want a refusal", addr, err)
				}
				return
			}
			if err != nil || addr != tt.wantAddr {
				t.Fatalf("Authorize = %q, %v; want %s", addr, err, tt.wantAddr)
			}
		})
	}
}

// TestRelayDeadlinesOnTheEarlierClock: the server's clock is an hour ahead
// of the agent's, and a bastion grant ends in half an hour by the server's
// clock, so it has ended (half an hour ago) by the server's reading. The
// relay refuses it, as the kernel would close a grant at the earlier of the
// two clocks' readings; a grant that ends two hours from the server's now
// is relayed until one hour from the agent's.
func TestRelayDeadlinesOnTheEarlierClock(t *testing.T) {
	a, err := New(Config{ServerURL: "http://192.0.2.1", StateDir: t.TempDir()}, &fakeBackend{})
	if err != nil {
		t.Fatal(err)
	}
	local := time.Now()
	server := local.Add(time.Hour)
	ds := wire.DesiredState{Target: "web-1", Mode: "host", Revision: 1, ServerTime: server,
		Protected: []wire.Port{{Port: 22, Protocol: "tcp", Access: "bastion"}},
		Bastion: []wire.BastionGrant{
			{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22, ExpiresAt: server.Add(-30 * time.Minute)},
			{RequestID: "r-2", Principal: "user:bob", Protocol: "tcp", Port: 22, ExpiresAt: server.Add(time.Hour)},
		}}
	a.setRelayState(ds, local)
	got, _ := a.relayAgent().State()
	if addr, until, err := relay.Authorize(got, relay.Header{RequestID: "r-1", Principal: "user:alice", Protocol: "tcp", Port: 22}, local); err == nil {
		t.Errorf("a grant that ended by the server's clock is relayed to %s until %v", addr, until)
	}
	_, until, err := relay.Authorize(got, relay.Header{RequestID: "r-2", Principal: "user:bob", Protocol: "tcp", Port: 22}, local)
	if err != nil || !until.Equal(local.Add(time.Hour)) {
		t.Errorf("live grant relayed until %v (%v), want %v (an hour from the agent's now)", until, err, local.Add(time.Hour))
	}
	if !ds.Bastion[1].ExpiresAt.Equal(server.Add(time.Hour)) {
		t.Error("setRelayState changed the desired state it was given")
	}
}
