package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver, to read the lease table

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// replica is one `jitgate server` process of a replicated lab.
type replica struct {
	name string
	url  string // as the client namespace reaches it
	proc *testlab.Proc
}

// startReplica runs a server named name on port in the server namespace,
// on the shared PostgreSQL database, with a data directory of its own.
func startReplica(l *lab, database, name string, port int) *replica {
	l.t.Helper()
	r := &replica{name: name, url: fmt.Sprintf("http://%s", netip.AddrPortFrom(serverIP, uint16(port)))}
	r.proc = l.Start(l.ServerNS, "jitgate server "+name, l.Binary, "server",
		"--listen", fmt.Sprintf("0.0.0.0:%d", port), "--data-dir", filepath.Join(l.Dir, "server-"+name),
		"--database", database, "--replica-id", name, "--activation-timeout", testlab.DefaultActivationTimeout.String(),
		// Replicas sign with one SSH CA key (a server with another is refused).
		"--ssh-ca-key-file", filepath.Join(l.Dir, "ssh_ca_ed25519"))
	l.eventually("replica "+name+" listening", 20*time.Second, func() bool { return l.canConnect(client1, serverIP, uint16(port)) })
	return r
}

// leaseHolders reads which replica holds each singleton job's live lease.
func leaseHolders(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query(`SELECT name, holder FROM leases WHERE expires_at > $1`, time.Now().UnixMilli())
	if err != nil {
		t.Fatalf("reading leases: %v", err)
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var n, h string
		if err := rows.Scan(&n, &h); err != nil {
			t.Fatal(err)
		}
		m[n] = h
	}
	return m
}

// TestReplicas runs three real servers on one real PostgreSQL database,
// a real agent polling replica a, and real packets:
//   - a request made through replica b opens the port whose agent
//     long-polls replica a (the change feed crosses replicas);
//   - kill -9 of replica b, which holds every singleton lease, during a
//     stream of requests sent to "b,c": no request the CLI reported is lost,
//     every request reported active is open to its source;
//   - the sweeper's work continues on another replica: a grant that ends
//     after the kill is marked expired and audited;
//   - `audit verify` holds over events written by several replicas;
//   - replicas that never serve the agent's polls do not take it for gone.
func TestReplicas(t *testing.T) {
	l := newLab(t)
	database := testenv.Postgres(t)
	db, err := sql.Open("pgx", database)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// b starts first and so takes every singleton lease.
	b := startReplica(l, database, "b", testlab.APIPort+1)
	l.eventually("b holds the singleton leases", 10*time.Second, func() bool {
		h := leaseHolders(t, db)
		return h["sweeper"] == "b" && h["webhooks"] == "b" && h["prune"] == "b"
	})
	a := startReplica(l, database, "a", testlab.APIPort) // the agent's (testlab.StartAgent polls APIPort)
	c := startReplica(l, database, "c", testlab.APIPort+2)
	tok, err := os.ReadFile(filepath.Join(l.Dir, "server-b", "admin.token"))
	if err != nil {
		t.Fatalf("reading the admin token b made: %v", err)
	}
	l.Token = strings.TrimSpace(string(tok))
	via := func(r ...*replica) []string {
		var urls []string
		for _, x := range r {
			urls = append(urls, x.url)
		}
		return []string{"--server", strings.Join(urls, ",")}
	}

	created := cliJSON[wire.TargetCreated](l, append([]string{"target", "add", "web-01"}, via(a)...)...)
	l.startAgent(created.EnrollToken)
	l.eventually("agent connected", 10*time.Second, func() bool {
		return cliJSON[wire.Target](l, append([]string{"target", "show", "web-01"}, via(c)...)...).Agent.State == "connected"
	})
	cliJSON[wire.PolicyResult](l, append([]string{"policy", "set", "web-01", "--port", "22/tcp", "--max", "1h"}, via(c)...)...)
	l.waitApplied("web-01")
	if l.canConnect(client1, serverIP, 22) {
		t.Fatal("port 22 is open before any request")
	}

	t.Log("a request through replica b opens the port of the agent polling replica a")
	req := cliJSON[wire.Request](l, append([]string{"request", "web-01", "--port", "22", "--duration", "1h", "--reason", "via b", "--wait"}, via(b)...)...)
	if req.State != "active" || !l.canConnect(client1, serverIP, 22) {
		t.Fatalf("request through b: state %q, open %v; want active and open", req.State, l.canConnect(client1, serverIP, 22))
	}

	t.Log("a short grant through c, to end after b is gone")
	short := cliJSON[wire.Request](l, append([]string{"request", "web-01", "--port", "22", "--duration", "8s", "--source", client2.String(), "--reason", "ends after the kill", "--wait"}, via(c)...)...)
	if short.State != "active" {
		t.Fatalf("short request: %q, want active", short.State)
	}

	t.Log("a stream of requests to b,c; kill -9 of b in the middle")
	const n = 16
	var srcs []netip.Addr
	for i := range n {
		srcs = append(srcs, netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}))
	}
	l.AddClientAddrs(srcs...)
	type sent struct {
		src netip.Addr
		req wire.Request
		err error
	}
	var stream []sent
	var killed time.Time
	for i, src := range srcs {
		if i == n/2 {
			b.proc.Kill()
			killed = time.Now()
		}
		out, stderr, err := l.CLIResult(append([]string{"request", "web-01", "--port", "22", "--duration", "1h", "--source", src.String(),
			"--reason", fmt.Sprintf("stream %d", i), "--wait", "--output", "json"}, via(b, c)...)...)
		s := sent{src: src, err: err}
		if err == nil {
			s.req = decode[wire.Request](t, out)
		} else {
			t.Logf("request %d from %s: %v: %s", i, src, err, strings.TrimSpace(stderr))
		}
		stream = append(stream, s)
	}
	reported := 0
	for i, s := range stream {
		if s.err != nil {
			continue
		}
		reported++
		got := cliJSON[wire.Request](l, append([]string{"requests", s.req.ID}, via(c, a)...)...)
		if got.State != "active" {
			t.Errorf("request %d (%s) reported %q is %q now; want active", i, s.req.ID, s.req.State, got.State)
		}
		if !l.canConnect(s.src, serverIP, 22) {
			t.Errorf("request %d (%s) from %s is active but the port is closed to it", i, s.req.ID, s.src)
		}
	}
	if reported < n-1 {
		t.Errorf("%d of %d requests of the stream were reported; want all but (at most) the one b was answering when killed", reported, n)
	}

	t.Log("the singleton jobs move to a surviving replica")
	l.eventually("the sweeper's lease taken over", 20*time.Second, func() bool {
		h := leaseHolders(t, db)["sweeper"]
		return h == "a" || h == "c"
	})
	t.Logf("sweeper lease taken over %s after kill -9 of its holder (now %v)", time.Since(killed).Round(100*time.Millisecond), leaseHolders(t, db))

	t.Log("the short grant ends: closed by the kernel, marked expired and audited by the sweeper's new replica")
	time.Sleep(time.Until(short.ExpiresAt))
	l.eventually("the short grant closed", 2*time.Second, func() bool { return !l.canConnect(client2, serverIP, 22) })
	l.eventually("the short grant marked expired", 15*time.Second, func() bool {
		return cliJSON[wire.Request](l, append([]string{"requests", short.ID}, via(a)...)...).State == "expired"
	})
	events := cliJSON[[]wire.AuditEvent](l, append([]string{"audit", "--action", "request.expired"}, via(c)...)...)
	found := false
	for _, e := range events {
		found = found || e.RequestID == short.ID
	}
	if !found {
		t.Errorf("no request.expired event for %s among %d", short.ID, len(events))
	}

	t.Log("the agent, polling a all along, is still recorded connected by every replica's reckoning")
	if st := cliJSON[wire.Target](l, append([]string{"target", "show", "web-01"}, via(c)...)...).Agent.State; st != "connected" {
		t.Errorf("agent state after %s with replicas it never polled: %q, want connected", time.Since(killed).Round(time.Second), st)
	}

	t.Log("the audit chain holds over events from several replicas")
	if out, stderr, err := l.CLIResult(append([]string{"audit", "verify"}, via(a)...)...); err != nil {
		t.Errorf("audit verify: %v: %s%s", err, out, stderr)
	}
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return v
}
