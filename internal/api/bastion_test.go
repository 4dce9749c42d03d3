package api_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestBastionGrantOpensNothingInKernel checks stage 1 of the bastion: a
// request without a source on a bastion-only port is created with no source,
// the agent's desired state carries it as a bastion grant (request id,
// principal, port, deadline) and holds no kernel element for it; on a port
// reached both ways a sourced request yields both.
func TestBastionGrantOpensNothingInKernel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"},
		{Port: 443, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "both"},
		{Port: 3389, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)},
	}})
	req, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Duration: wire.Duration(30 * time.Minute), Reason: "x"})
	if err != nil {
		t.Fatalf("CreateRequest: %v", err)
	}
	if req.Source != "" || req.State != "pending" {
		t.Fatalf("request = %+v, want pending with no source", req)
	}
	both, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"443"}, Source: "192.0.2.7", Duration: wire.Duration(30 * time.Minute)})
	if err != nil {
		t.Fatalf("CreateRequest 443: %v", err)
	}
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Grants) != 1 || ds.Grants[0].Port != 443 || ds.Grants[0].Source != "192.0.2.7/32" {
		t.Errorf("kernel grants = %+v, want only 192.0.2.7/32 -> 443", ds.Grants)
	}
	want := map[uint16]string{22: req.ID, 443: both.ID}
	if len(ds.Bastion) != 2 {
		t.Fatalf("bastion grants = %+v, want 22 and 443", ds.Bastion)
	}
	for _, g := range ds.Bastion {
		if want[g.Port] != g.RequestID || g.Principal != "alice" || g.ExpiresAt.IsZero() {
			t.Errorf("bastion grant %+v: want request %s of alice with a deadline", g, want[g.Port])
		}
	}
	// A bastion request on a port reached only directly is refused, and
	// an explicit bastion request with a source is malformed.
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"3389"}, Bastion: true, Duration: wire.Duration(time.Minute)}); err == nil {
		t.Error("bastion request on a direct-only port: accepted")
	}
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"443"}, Bastion: true, Source: "192.0.2.7", Duration: wire.Duration(time.Minute)}); err == nil {
		t.Error("bastion request with a source: accepted")
	}
	// Activation works as for any grant: the agent reports the revision.
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.c.Request(ctx, req.ID); got.State != "active" {
		t.Errorf("bastion request state %q after report, want active", got.State)
	}
}

// relayAgent connects a relay agent for target, serving the desired state
// the agent client polls, and returns it once the server relays to it.
func relayAgent(t *testing.T, e *env, agent *client.Client) *relay.Agent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var cur atomic.Pointer[wire.DesiredState]
	ra := &relay.Agent{Log: slog.New(slog.DiscardHandler), State: func() (wire.DesiredState, bool) {
		if ds := cur.Load(); ds != nil {
			return *ds, true
		}
		return wire.DesiredState{}, false
	}}
	refresh := func() {
		ds, err := agent.Desired(ctx, 0, 0)
		if err != nil {
			return
		}
		cur.Store(&ds)
		ra.Recheck(ds)
		relayedRevision(agent).Store(ds.Revision)
	}
	refresh()
	go func() {
		var after int64
		for ctx.Err() == nil {
			ds, err := agent.Desired(ctx, after, 5*time.Second)
			if err != nil {
				continue
			}
			after = ds.Revision
			cur.Store(&ds)
			ra.Recheck(ds)
			relayedRevision(agent).Store(ds.Revision)
		}
	}()
	conn, err := agent.AgentTunnel(ctx)
	if err != nil {
		t.Fatalf("AgentTunnel: %v", err)
	}
	go ra.ServeConn(ctx, conn)
	return ra
}

// bastionTarget enrols web-01 with one bastion-only rule for port (edited
// by edit, may be nil) and returns its agent's client.
func bastionTarget(t *testing.T, e *env, port uint16, edit func(*wire.PortRule)) *client.Client {
	t.Helper()
	agent := e.addTarget(t, "web-01")
	rule := wire.PortRule{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"}
	if edit != nil {
		edit(&rule)
	}
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{rule}})
	return agent
}

// grantBastion has c request a bastion grant on web-01's port for an hour.
func grantBastion(t *testing.T, c *client.Client, port uint16) wire.Request {
	t.Helper()
	req, err := c.CreateRequest(context.Background(), wire.RequestCreate{Target: "web-01", Ports: []string{fmt.Sprint(port)}, Bastion: true, Duration: wire.Duration(time.Hour), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// relayed holds, per agent client with a relayAgent, the revision its
// relay last took.
var relayed sync.Map // *client.Client → *atomic.Int64

func relayedRevision(agent *client.Client) *atomic.Int64 {
	v, _ := relayed.LoadOrStore(agent, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// applyDesired has agent fetch its desired state and report its revision
// as applied, which makes the grants in it active. As the real agent does
// (its relay is given a state before that state's report leaves), an agent
// with a relayAgent reports only once its relay holds the revision: else a
// tunnel opened after the activation can reach a relay still holding the
// state before it.
func applyDesired(t *testing.T, agent *client.Client) {
	t.Helper()
	ctx := context.Background()
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := relayed.Load(agent); ok {
		deadline := time.Now().Add(10 * time.Second)
		for v.(*atomic.Int64).Load() < ds.Revision {
			if time.Now().After(deadline) {
				t.Fatalf("the relay agent did not take revision %d within 10 s", ds.Revision)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: ds.Revision}); err != nil {
		t.Fatal(err)
	}
}

// dialTunnel opens a tunnel as c to web-01's port, trying again for up to
// 5 s while the server answers 503 (the relay agent is still connecting).
func dialTunnel(c *client.Client, port uint16) (net.Conn, error) {
	return testenv.DialTunnel(context.Background(), c, "web-01", port, 5*time.Second)
}

// openTunnel is dialTunnel that fails the test on an error.
func openTunnel(t *testing.T, c *client.Client, port uint16) net.Conn {
	t.Helper()
	conn, err := dialTunnel(c, port)
	if err != nil {
		t.Fatalf("Tunnel: %v", err)
	}
	return conn
}

// waitClosed fails unless c ends (EOF or reset) within 5 s. It sets no
// read deadline: after a passed deadline a client tunnel (a WebSocket's
// net.Conn) stays broken for good, so a deadline could pass for a close.
func waitClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(done) }()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		c.Close()
		t.Fatalf("%s: the tunnel is still open 5 s later", what)
	}
}

func sessionByID(t *testing.T, c *client.Client, id string) wire.BastionSession {
	t.Helper()
	ss, err := c.Sessions(context.Background(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		if s.ID == id || (id == "" && s.State == "live") {
			return s
		}
	}
	t.Fatalf("session %q not listed in %+v", id, ss)
	return wire.BastionSession{}
}

// TestTunnelThroughRelay runs the relay in process, over real WebSockets
// and yamux: a tunnel reaches a loopback service, is listed live with its
// bytes, and ends on kill and on revocation with the client seeing the
// close; refusals (no grant, a port reached directly, no agent) say why.
func TestTunnelThroughRelay(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := testenv.Echo(t)
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"},
		{Port: 3389, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)},
	}})
	// A browser session's cookie opens no tunnel (cross-site WebSocket
	// hijacking): only a bearer token does.
	if code, body := e.raw(t, "GET", fmt.Sprintf("/api/v1/tunnel?target=web-01&port=%d", port), "", "", nil,
		"Cookie", httpedge.SessionCookie+"="+e.admin); code != http.StatusForbidden || !strings.Contains(string(body), "bearer token") {
		t.Fatalf("tunnel with a session cookie: %d %s, want 403 asking for a bearer token", code, body)
	}
	// No grant yet, and no agent: the grant is checked first.
	if _, err := e.c.Tunnel(ctx, "web-01", port); client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "no active grant") {
		t.Fatalf("tunnel without a grant: %v, want 403 naming the missing grant", err)
	}
	if _, err := e.c.Tunnel(ctx, "web-01", 3389); client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "not reachable through the bastion") {
		t.Fatalf("tunnel to a direct port: %v, want 403", err)
	}
	if _, err := e.c.Tunnel(ctx, "web-01", 25); client.StatusOf(err) != http.StatusForbidden || !strings.Contains(err.Error(), "does not configure this port") {
		t.Fatalf("tunnel to a port the policy does not name: %v, want 403", err)
	}
	grant := func() wire.Request {
		req := grantBastion(t, e.c, port)
		applyDesired(t, agent)
		return req
	}
	req := grant()
	if _, err := e.c.Tunnel(ctx, "web-01", port); client.StatusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("tunnel with no agent connected: %v, want 503", err)
	}
	relayAgent(t, e, agent)
	conn := openTunnel(t, e.c, port)
	r := bufio.NewReader(conn)
	fmt.Fprintf(conn, "hello\n")
	if line, err := r.ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("echo through the tunnel = %q, %v", line, err)
	}
	live := sessionByID(t, e.c, "")
	if live.Principal != "alice" || live.RequestID != req.ID || live.BytesIn != 6 || live.BytesOut != 6 || live.Port != fmt.Sprintf("%d/tcp", port) {
		t.Errorf("live session = %+v, want alice's on request %s with 6 bytes each way", live, req.ID)
	}
	if code, body := e.raw(t, "GET", "/metrics", e.admin, "", nil); code != http.StatusOK ||
		!strings.Contains(string(body), "jitgate_bastion_sessions_live 1") || !strings.Contains(string(body), "jitgate_bastion_bytes_in_total 6") {
		t.Errorf("metrics (%d) lack the live session and its bytes", code)
	}
	killed, err := e.c.KillSession(ctx, live.ID, "suspicious")
	if err != nil {
		t.Fatalf("KillSession: %v", err)
	}
	if killed.State != "ended" || killed.EndReason != "killed" || killed.EndedBy != "alice" || killed.Message != "suspicious" || killed.BytesIn != 6 {
		t.Errorf("killed session = %+v", killed)
	}
	waitClosed(t, conn, "kill")
	if _, err := e.c.KillSession(ctx, live.ID, "again"); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("killing an ended session: %v, want 409", err)
	}

	// Revocation ends the next one, whatever close_established says.
	conn, err = e.c.Tunnel(ctx, "web-01", port)
	if err != nil {
		t.Fatal(err)
	}
	second := sessionByID(t, e.c, "")
	if _, err := e.c.Revoke(ctx, req.ID, "done"); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, conn, "revoke")
	for sessionByID(t, e.c, second.ID).State != "ended" {
		time.Sleep(10 * time.Millisecond)
	}
	if got := sessionByID(t, e.c, second.ID); got.EndReason != "revoked" {
		t.Errorf("session after revoke = %+v, want ended revoked", got)
	}
	events, err := e.c.Audit(ctx, client.AuditFilter{Target: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range events {
		if strings.HasPrefix(ev.Action, "session.") {
			actions = append(actions, ev.Action)
		}
	}
	if want := []string{"session.started", "session.killed", "session.started", "session.ended"}; !slices.Equal(actions, want) {
		t.Errorf("session audit = %q, want %q", actions, want)
	}
}

// TestTunnelIdleTimeout: a session in which no byte moves for the rule's
// idle timeout ends (idle) and the client sees the close; one that keeps
// talking outlives the same span.
func TestTunnelIdleTimeout(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	port := testenv.Echo(t)
	agent := bastionTarget(t, e, port, func(r *wire.PortRule) { r.IdleTimeout = wire.Duration(time.Second) })
	grantBastion(t, e.c, port)
	applyDesired(t, agent)
	relayAgent(t, e, agent)
	busy, quiet := openTunnel(t, e.c, port), openTunnel(t, e.c, port)
	stop := make(chan struct{})
	talked := make(chan error, 1)
	go func() {
		r := bufio.NewReader(busy)
		for {
			select {
			case <-stop:
				talked <- nil
				return
			case <-time.After(200 * time.Millisecond):
			}
			fmt.Fprintf(busy, "x\n")
			if _, err := r.ReadString('\n'); err != nil {
				talked <- err
				return
			}
		}
	}()
	waitClosed(t, quiet, "idle timeout")
	time.Sleep(time.Second) // the busy one has now outlived the idle timeout too
	close(stop)
	if err := <-talked; err != nil {
		t.Fatalf("the busy session ended: %v", err)
	}
	var idle, live int
	ss, err := e.c.Sessions(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss {
		switch {
		case s.State == "ended" && s.EndReason == "idle":
			idle++
		case s.State == "live":
			live++
		}
	}
	if idle != 1 || live != 1 {
		t.Errorf("sessions %+v: want one ended idle, one live", ss)
	}
}

// TestTunnelRefusalsAudited probes the relay for what it would reach: no
// grant, a port reached only directly, a port the policy does not name, a
// target that does not exist. Each refusal is in the audit trail as
// access.denied with the target and port asked for (the endpoint is a GET,
// which refusals of other endpoints skip), and a flood of the same refusal
// is one row, counted, not one per attempt.
func TestTunnelRefusalsAudited(t *testing.T) {
	var refusals *api.RefusalLog
	e := newEnvWith(t, func(d *api.Deps) {
		refusals = api.NewRefusalLog(d.Store, slog.New(slog.DiscardHandler))
		d.Refusals = refusals
	})
	ctx := context.Background()
	port := testenv.Echo(t)
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: port, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour), Access: "bastion"},
		{Port: 3389, Protocol: "tcp", MaxDuration: wire.Duration(time.Hour)},
	}})
	for range 50 {
		if _, err := e.c.Tunnel(ctx, "web-01", port); client.StatusOf(err) != http.StatusForbidden {
			t.Fatalf("tunnel without a grant: %v, want 403", err)
		}
	}
	for _, p := range []uint16{3389, 25} {
		if _, err := e.c.Tunnel(ctx, "web-01", p); client.StatusOf(err) != http.StatusForbidden {
			t.Fatalf("tunnel to port %d: %v, want 403", p, err)
		}
	}
	events, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.AccessDenied)})
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, ev := range events {
		if ev.Target != "web-01" || ev.Actor != "alice" || ev.Details["path"] != "/api/v1/tunnel" {
			t.Errorf("refusal event %+v, want alice's on web-01 for /api/v1/tunnel", ev)
		}
		p, _ := ev.Details["port"].(string)
		ports = append(ports, p)
	}
	slices.Sort(ports)
	want := []string{"25", "3389", fmt.Sprint(port)}
	slices.Sort(want)
	if !slices.Equal(ports, want) {
		t.Fatalf("audited refusals for ports %q, want one each for %q (the 50 alike counted in one)", ports, want)
	}
}

// TestTunnelEndsWithItsCredential opens a tunnel as bob, then takes away
// what let him open it while the grant (held by the person, not the token)
// stays live: the token that bob's token was made with is revoked, or bob's
// requester role is removed. The live tunnel ends at once, its client sees
// the close, and the session says why. A tunnel is the use of a credential
// as much as of a grant: a stolen token that is revoked must not keep the
// sessions it opened.
func TestTunnelEndsWithItsCredential(t *testing.T) {
	for _, tt := range []struct {
		name, why string
		take      func(e *env, parentID string) error
	}{
		{"parent token revoked", "token", func(e *env, parentID string) error {
			return e.c.RevokeToken(context.Background(), parentID)
		}},
		{"role removed", "may no longer use grants", func(e *env, _ string) error {
			return e.c.Unbind(context.Background(), wire.Binding{Principal: "user:bob", Role: "requester", Scope: "*"})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			port := testenv.Echo(t)
			agent := bastionTarget(t, e, port, nil)
			bob := e.requester(t, "bob")
			parent, err := bob.CreateToken(ctx, wire.TokenCreate{Name: "laptop", TTL: wire.Duration(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			child, err := bob.WithToken(parent.Secret).CreateToken(ctx, wire.TokenCreate{Name: "tunnel", TTL: wire.Duration(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			cc := bob.WithToken(child.Secret)
			grantBastion(t, cc, port)
			applyDesired(t, agent)
			relayAgent(t, e, agent)
			conn := openTunnel(t, cc, port)
			fmt.Fprintf(conn, "hello\n")
			if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "hello\n" {
				t.Fatalf("echo through the tunnel = %q, %v", line, err)
			}
			live := sessionByID(t, e.c, "")
			if err := tt.take(e, parent.Token.ID); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, conn, tt.name)
			for sessionByID(t, e.c, live.ID).State != "ended" {
				time.Sleep(10 * time.Millisecond)
			}
			if got := sessionByID(t, e.c, live.ID); got.EndReason != "revoked" || !strings.Contains(got.Message, tt.why) {
				t.Errorf("session = %+v, want ended revoked, saying %q", got, tt.why)
			}
		})
	}
}

// TestTunnelsPerPrincipalCapped: one principal cannot hold more tunnels
// open than the cap (each costs the server and the agent a connection,
// goroutines and rows); more get 429 and are audited, another principal
// is not held back, and a closed tunnel frees its place.
func TestTunnelsPerPrincipalCapped(t *testing.T) {
	e := newEnvWith(t, func(d *api.Deps) { d.MaxSessionsPerPrincipal = 2 })
	port := testenv.Echo(t)
	agent := bastionTarget(t, e, port, nil)
	bob := e.requester(t, "bob")
	for _, c := range []*client.Client{e.c, bob} {
		grantBastion(t, c, port)
	}
	applyDesired(t, agent)
	relayAgent(t, e, agent)
	open := func(c *client.Client) (net.Conn, error) { return dialTunnel(c, port) }
	var conns []net.Conn
	for range 2 {
		conn, err := open(e.c)
		if err != nil {
			t.Fatalf("tunnel within the cap: %v", err)
		}
		conns = append(conns, conn)
	}
	if _, err := open(e.c); client.StatusOf(err) != http.StatusTooManyRequests || !strings.Contains(err.Error(), "maximum of 2") {
		t.Fatalf("a third tunnel: %v, want 429 naming the cap", err)
	}
	bc, err := open(bob)
	if err != nil {
		t.Fatalf("bob's tunnel while alice is at her cap: %v", err)
	}
	bc.Close()
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := open(e.c)
		if err == nil {
			conn.Close()
			break
		}
		if client.StatusOf(err) != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("a tunnel after one was closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conns[1].Close()
}

// TestRelayConnectionEndsWithItsCredential: web-01 is removed (say its host
// was compromised): the old agent's relay connection ends and cannot be
// opened again, also once a new web-01 is enrolled; otherwise tunnels to the
// new web-01 would go to the old host until the new agent connects.
func TestRelayConnectionEndsWithItsCredential(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := e.addTarget(t, "web-01")
	conn, err := old.AgentTunnel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ra := &relay.Agent{Log: slog.New(slog.DiscardHandler), State: func() (wire.DesiredState, bool) { return wire.DesiredState{}, false }}
	done := make(chan struct{})
	go func() { ra.ServeConn(ctx, conn); close(done) }()
	if err := e.c.RemoveTarget(ctx, "web-01"); err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatal("the old agent's relay connection outlived its target")
	}
	// Nor can it connect again, before or after a new web-01 is enrolled.
	if _, err := old.AgentTunnel(ctx); client.StatusOf(err) != http.StatusGone {
		t.Fatalf("relay connection of a removed target: %v, want 410", err)
	}
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatal(err)
	}
	if _, err := old.AgentTunnel(ctx); client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("relay connection with the old credential of a re-enrolled target: %v, want 401", err)
	}
}
