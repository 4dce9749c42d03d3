package api_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/replica"
	"github.com/jitgate/jitgate/internal/testenv"
)

var (
	replicaSecret = replica.Secret("0123456789abcdef0123456789abcdef")
	otherSecret   = replica.Secret("fedcba9876543210fedcba9876543210")
)

// replicaPair is two API servers (replicas A and B) sharing one database,
// one hub (as a change feed would) and the replicas' secret; A's address is
// recorded live so that B forwards to it.
type replicaPair struct {
	a  *env
	b  *httptest.Server
	cB *client.Client // alice (admin) on B
}

func newReplicaPair(t *testing.T, secretB replica.Secret, more ...func(*api.Deps)) *replicaPair {
	t.Helper()
	repA := &api.Replica{ID: "A", Secret: replicaSecret}
	var deps api.Deps
	a := newEnvWith(t, func(d *api.Deps) {
		for _, f := range more { // both replicas' (deps is copied for B)
			f(d)
		}
		d.Replica = repA
		deps = *d
	})
	repA.Address = a.srv.URL
	for id, addr := range map[string]string{"A": repA.Address, "B": ""} {
		if err := a.st.HeartbeatReplica(context.Background(), id, addr, time.Now(), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	deps.Relay = nil // B's own: the agent is not connected to it
	deps.Registry = prometheus.NewRegistry()
	deps.Replica = &api.Replica{ID: "B", Secret: secretB}
	b := httptest.NewServer(api.New(deps))
	t.Cleanup(b.Close)
	cB, err := client.New(b.URL, a.admin)
	if err != nil {
		t.Fatal(err)
	}
	return &replicaPair{a: a, b: b, cB: cB}
}

// waitRelayRoute checks that the database the replicas share holds the
// route of target's agent relay connection on A, as B reads it before it
// forwards a stream (api.forward). A records the route before the agent's
// WebSocket handshake completes (agentTunnel), so once AgentTunnel returned
// there is nothing to wait for (TestRelayRouteBeforeTheHandshake); before,
// the route landed milliseconds after the connection was up, and
// TestTerminalAcrossReplicas, opening a stream at B at once, failed now and
// then.
func (p *replicaPair) waitRelayRoute(t *testing.T, target string) {
	t.Helper()
	routes, err := p.a.st.RelayRoutes(context.Background(), target, "B", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) == 0 {
		t.Fatalf("the agent of %s is connected to A, but B finds no route to it", target)
	}
}

// TestRelayRouteBeforeTheHandshake: an agent's relay connection is up for
// the agent (AgentTunnel returned) only once replica A has recorded where it
// is: B finds the route at once, with no wait. A route that cannot be
// written refuses the connection (503), and the agent's next connection,
// once it can be, is routed. Before, the route was written after the
// handshake, outside the writer: the connection was up while B found no
// route (it answered "not connected"), and with the route's write failing
// the agent held a connection no other replica could reach.
func TestRelayRouteBeforeTheHandshake(t *testing.T) {
	p := newReplicaPair(t, replicaSecret)
	agent := bastionTarget(t, p.a, testenv.Echo(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sql.Open("sqlite", p.a.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The route's write fails (as on a full disk, or a database that
	// refuses writes): the agent's connection is refused.
	if _, err := db.ExecContext(ctx, `CREATE TRIGGER refuse_routes BEFORE INSERT ON relay_routes
		BEGIN SELECT RAISE(ABORT, 'test: the route is not written'); END`); err != nil {
		t.Fatal(err)
	}
	if conn, err := agent.AgentTunnel(ctx); err == nil {
		conn.Close()
		t.Fatal("the agent's relay connection was accepted though its route could not be written; want 503")
	} else if client.StatusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("AgentTunnel with the route unwritable: %v, want 503", err)
	}
	if routes, err := p.a.st.RelayRoutes(ctx, "web-01", "B", time.Now()); err != nil || len(routes) != 0 {
		t.Fatalf("routes after the refused connection: %+v, %v; want none", routes, err)
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER refuse_routes`); err != nil {
		t.Fatal(err)
	}
	conn, err := agent.AgentTunnel(ctx)
	if err != nil {
		t.Fatalf("AgentTunnel: %v", err)
	}
	defer conn.Close()
	p.waitRelayRoute(t, "web-01") // no wait: recorded before the handshake completed
}

// TestTunnelAcrossReplicas: the agent's relay connection is on replica A,
// the client's tunnel arrives at replica B: B checks the grant, records the
// session and forwards the stream to A, which checks the grant again and
// splices; a kill through A's API (which does not hold the session) ends
// it on B through the database.
func TestTunnelAcrossReplicas(t *testing.T) {
	p := newReplicaPair(t, replicaSecret)
	ctx := context.Background()
	port := testenv.Echo(t)
	agent := bastionTarget(t, p.a, port, nil)
	grantBastion(t, p.a.c, port)
	applyDesired(t, agent)
	relayAgent(t, p.a, agent)

	conn := openTunnel(t, p.cB, port)
	fmt.Fprintf(conn, "hello\n")
	if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || line != "hello\n" {
		t.Fatalf("echo through B to the agent on A = %q, %v", line, err)
	}
	live := sessionByID(t, p.cB, "")
	if live.Principal != "alice" || live.BytesIn != 6 {
		t.Errorf("session listed on B = %+v, want alice's with 6 bytes in", live)
	}
	// A lists it too, with the bytes B records every few seconds.
	deadline := time.Now().Add(10 * time.Second)
	for sessionByID(t, p.a.c, live.ID).BytesIn != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("replica A lists the live session B relays as %+v, want 6 bytes in within 10 s", sessionByID(t, p.a.c, live.ID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	killed, err := p.a.c.KillSession(ctx, live.ID, "ended from the other replica")
	if err != nil || killed.EndReason != "killed" {
		t.Fatalf("kill through A = %+v, %v", killed, err)
	}
	waitClosed(t, conn, "kill through the replica that does not hold the session")
	if got := sessionByID(t, p.cB, live.ID); got.State != "ended" || got.EndReason != "killed" || got.EndedBy != "alice" {
		t.Errorf("session after the kill = %+v, want ended, killed by alice", got)
	}
}

// TestTunnelAcrossReplicasWrongSecret: a replica whose secret differs is
// refused by the one holding the agent; the client gets 503 (no agent
// reachable), never a stream.
func TestTunnelAcrossReplicasWrongSecret(t *testing.T) {
	p := newReplicaPair(t, otherSecret)
	port := testenv.Echo(t)
	agent := bastionTarget(t, p.a, port, nil)
	grantBastion(t, p.a.c, port)
	applyDesired(t, agent)
	relayAgent(t, p.a, agent)
	p.waitRelayRoute(t, "web-01") // else B finds no route, not A's refusal
	if _, err := p.cB.Tunnel(context.Background(), "web-01", port); client.StatusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("tunnel through a replica with another secret: %v, want 503", err)
	}
}

// TestReplicaEndpointRefusals attacks the inter-replica endpoint directly:
// without the replica header it is the API's usual 401, and 403 for any
// person's token; with a wrong secret, a replayed or a stale MAC 401; with
// the right secret but for a principal without a live grant (or a port the
// policy does not open to the bastion) 403. Only the valid case upgrades.
func TestReplicaEndpointRefusals(t *testing.T) {
	p := newReplicaPair(t, replicaSecret)
	port := testenv.Echo(t)
	agent := bastionTarget(t, p.a, port, nil)
	grantBastion(t, p.a.c, port)
	applyDesired(t, agent)
	relayAgent(t, p.a, agent)
	openTunnel(t, p.cB, port).Close() // the agent's relay connection is up
	queryFor := func(replica, principal string, port uint16) string {
		return url.Values{"target": {"web-01"}, "port": {fmt.Sprint(port)}, "principal": {principal}, "session": {"s-x"},
			"replica": {replica}}.Encode()
	}
	query := func(principal string, port uint16) string { return queryFor("A", principal, port) }
	replayed, _ := http.NewRequest("GET", p.a.srv.URL+"/api/v1/replica/tunnel?"+query("alice", port), nil)
	replicaSecret.Sign(replayed, time.Now())
	tests := []struct {
		name   string
		query  string
		sign   replica.Secret
		signAt time.Time
		token  string
		header http.Header // used as is when set
		want   int
	}{
		{name: "nothing", query: query("alice", port), want: http.StatusUnauthorized},
		{name: "admin token", query: query("alice", port), token: p.a.admin, want: http.StatusForbidden},
		{name: "wrong secret", query: query("alice", port), sign: otherSecret, signAt: time.Now(), want: http.StatusUnauthorized},
		{name: "stale MAC", query: query("alice", port), sign: replicaSecret, signAt: time.Now().Add(-time.Hour), want: http.StatusUnauthorized},
		{name: "secret and admin token but forged header", query: query("alice", port), token: p.a.admin,
			header: http.Header{replica.Header: {"v1 1 00000000000000000000000000000000 00"}}, want: http.StatusUnauthorized},
		{name: "no grant", query: query("bob", port), sign: replicaSecret, signAt: time.Now(), want: http.StatusForbidden},
		{name: "port without bastion", query: query("alice", 25), sign: replicaSecret, signAt: time.Now(), want: http.StatusForbidden},
		{name: "valid, not an upgrade", query: query("alice", port), sign: replicaSecret, signAt: time.Now(), want: http.StatusBadRequest},
		{name: "replayed", header: replayed.Header, query: query("alice", port), want: http.StatusUnauthorized},
		// A request B signed for replica C, captured and sent to A within
		// the MAC's window (A has never seen its nonce).
		{name: "signed for another replica", query: queryFor("C", "alice", port), sign: replicaSecret, signAt: time.Now(), want: http.StatusUnauthorized},
		{name: "signed for no replica", query: queryFor("", "alice", port), sign: replicaSecret, signAt: time.Now(), want: http.StatusUnauthorized},
	}
	// The replayed request is used once first.
	if resp, err := http.DefaultClient.Do(replayed); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", p.a.srv.URL+"/api/v1/replica/tunnel?"+tt.query, nil)
			if tt.sign != nil {
				tt.sign.Sign(req, tt.signAt)
			}
			for k, v := range tt.header {
				req.Header[k] = v
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, strings.TrimSpace(string(body)), tt.want)
			}
		})
	}
}
