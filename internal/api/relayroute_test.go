package api_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
)

// TestRelayRouteKeptWhenAHandshakeFails: the agent of web-01 holds its
// relay connection on replica A; then a request with the agent's
// credential asks A for another one with the WebSocket headers but a
// handshake that fails (a version, a key or an Origin the upgrade refuses).
// A answers 4xx, and B still finds the route to the connection that is up.
// Before, A wrote the route of the new attempt over the live connection's
// (one route per target and replica) before the handshake, then removed it
// when the handshake failed: the live connection was left with no route,
// and every tunnel through another replica was refused "not connected"
// until the agent connected again.
func TestRelayRouteKeptWhenAHandshakeFails(t *testing.T) {
	p := newReplicaPair(t, replicaSecret)
	agent := bastionTarget(t, p.a, testenv.Echo(t), nil)
	ctx := context.Background()
	conn, err := agent.AgentTunnel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p.waitRelayRoute(t, "web-01")
	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"unsupported version", map[string]string{"Sec-WebSocket-Version": "12", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}},
		{"no key", map[string]string{"Sec-WebSocket-Version": "13"}},
		{"foreign Origin", map[string]string{"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "https://attacker.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.a.srv.URL+"/api/v1/agent/tunnel", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+p.a.creds["web-01"])
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Fatalf("a failed handshake answered %d, want 4xx", resp.StatusCode)
			}
			routes, err := p.a.st.RelayRoutes(ctx, "web-01", "B", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if len(routes) == 0 {
				t.Fatal("after a failed handshake, B finds no route to the agent's connection that is up on A")
			}
		})
	}
}

// TestAgentRelayRefusedWhenItsCredentialGoesBeforeTheHandshake: the
// agent's credential authenticates, then (while A writes the route, which
// may wait behind other writes) the target is enrolled anew, which deletes
// that credential. A refuses the handshake (401) and keeps no route. Before,
// the credential was looked at again only at the next change of the target
// seen after the handshake or after credentialRecheck (10 s): a change in
// between was not seen, and the replaced host (perhaps why the target was
// enrolled anew) held the target's relay connection, replacing that of the
// new agent, and received its tunnels meanwhile. The trigger deletes the
// credential as the route is written, as a re-enrollment committed then
// would (through another replica: no notification reaches A's hub first).
func TestAgentRelayRefusedWhenItsCredentialGoesBeforeTheHandshake(t *testing.T) {
	p := newReplicaPair(t, replicaSecret)
	agent := bastionTarget(t, p.a, testenv.Echo(t), nil)
	ctx := context.Background()
	db, err := sql.Open("sqlite", p.a.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TRIGGER reenroll_meanwhile BEFORE INSERT ON relay_routes
		BEGIN DELETE FROM tokens WHERE kind = 'agent' AND subject = NEW.target; END`); err != nil {
		t.Fatal(err)
	}
	conn, err := agent.AgentTunnel(ctx)
	if err == nil {
		conn.Close()
		t.Fatal("a relay connection was accepted with a credential deleted before its handshake completed")
	}
	if client.StatusOf(err) != http.StatusUnauthorized {
		t.Fatalf("AgentTunnel with its credential deleted meanwhile: %v, want 401", err)
	}
	if routes, err := p.a.st.RelayRoutes(ctx, "web-01", "B", time.Now()); err != nil || len(routes) != 0 {
		t.Fatalf("routes after the refused connection: %+v, %v; want none", routes, err)
	}
}

// TestRelayRouteOfTwoConnections: the agent connects twice to A (its first
// connection is replaced by the second, as after a restart of the agent
// that A has not noticed yet): B finds the route throughout, and once the
// agent's last connection ends the route is removed, with none left
// pointing at a connection that is gone.
func TestRelayRouteOfTwoConnections(t *testing.T) {
	p := newReplicaPair(t, replicaSecret)
	agent := bastionTarget(t, p.a, testenv.Echo(t), nil)
	ctx := context.Background()
	first, err := agent.AgentTunnel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := agent.AgentTunnel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The server ends the first connection (replaced): its end must not
	// take the route of the second.
	first.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, first); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("the replaced connection was not ended within 10 s")
	}
	p.waitRelayRoute(t, "web-01")
	second.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		routes, err := p.a.st.RelayRoutes(ctx, "web-01", "B", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's last connection ended 10 s ago, and its route is still there: %+v", routes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
