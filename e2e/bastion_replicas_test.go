package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// bastionReplica is one `jitgate server` process of the replicated bastion
// lab.
type bastionReplica struct {
	name string
	url  string // as the client namespace reaches it
	proc *testlab.Proc
}

// startBastionReplica runs replica name on port in the server namespace,
// with a data directory of its own, on the shared PostgreSQL database, and
// the replicas' secret.
func startBastionReplica(t *testing.T, b *testlab.BastionLab, database, name string, port uint16, secret string) *bastionReplica {
	t.Helper()
	data := filepath.Join(b.Dir, "server-"+name)
	r := &bastionReplica{name: name, url: fmt.Sprintf("http://%s", netip.AddrPortFrom(testlab.ServerIP, port))}
	r.proc = b.Start(b.ServerNS, "jitgate server "+name, b.Binary, "server",
		"--listen", fmt.Sprintf("0.0.0.0:%d", port), "--data-dir", data, "--database", database,
		"--activation-timeout", testlab.DefaultActivationTimeout.String(),
		"--replica-secret-file", secret, "--replica-address", fmt.Sprintf("http://127.0.0.1:%d", port),
		"--ssh-ca-key-file", filepath.Join(b.Dir, "ssh_ca_ed25519"))
	b.Eventually("replica "+name+" listening", 20*time.Second, func() bool { return b.CanConnect(testlab.Client1, testlab.ServerIP, port) })
	return r
}

// TestBastionAcrossReplicas proves issue 12's bastion across replicas with
// real parts: two real servers sharing one real PostgreSQL database, a real agent on the
// target (which the client cannot reach) given both servers' URLs, a real
// sshd and ssh client.
//   - The agent's relay connection is on replica a; `jitgate connect` to
//     replica b reaches the target: b forwards the stream to a.
//   - A kill through replica a's API ends the session b holds (through the
//     database).
//   - kill -9 of replica a ends the session spliced through it; the agent
//     moves to b (it logs so), a new tunnel through b works, and a new
//     grant made through b is applied by the agent in the kernel.
func TestBastionAcrossReplicas(t *testing.T) {
	b := testlab.NewBastion(t)
	l := &lab{Lab: b.Lab, t: t}
	secret := filepath.Join(b.Dir, "replica.secret")
	if err := os.WriteFile(secret, []byte("e2e-replica-secret-0123456789abcdef0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	database := testenv.Postgres(t)
	ra := startBastionReplica(t, b, database, "a", testlab.APIPort, secret)
	tok, err := os.ReadFile(filepath.Join(b.Dir, "server-a", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	b.Token = strings.TrimSpace(string(tok))
	rb := startBastionReplica(t, b, database, "b", testlab.APIPort+1, secret)
	on := func(r *bastionReplica, args ...string) []string { return append(args, "--server", r.url) }

	created := cliJSON[wire.TargetCreated](l, on(ra, "target", "add", "web-01")...)
	cliJSON[wire.PolicyResult](l, on(ra, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--access", "both")...)
	// The agent knows both replicas, a first.
	inside := func(port uint16) string {
		return fmt.Sprintf("http://%s", netip.AddrPortFrom(testlab.BastionServerInside, port))
	}
	b.Agent = b.Start(b.Target, "jitgate agent", b.Binary, "agent", "--server", inside(testlab.APIPort)+","+inside(testlab.APIPort+1),
		"--insecure-http", "--state-dir", filepath.Join(b.Dir, "agent"), "--enroll-token", created.EnrollToken)
	l.eventually("agent connected", 10*time.Second, func() bool {
		return cliJSON[wire.Target](l, on(ra, "target", "show", "web-01")...).Agent.State == "connected"
	})
	if b.ClientReaches(testlab.BastionTarget, 22) {
		t.Fatal("the client reaches the target directly: the lab must give it no route")
	}
	// Requested through b: the change feed (LISTEN/NOTIFY) wakes the
	// agent's long-poll on a.
	cliJSON[wire.Request](l, on(rb, "request", "web-01", "--port", "22", "--bastion", "--duration", "30m", "--reason", "e2e replicas", "--wait")...)

	// ssh through `jitgate connect --stdio` to replica b.
	envB := []string{"JITGATE_SERVER=" + rb.url, "JITGATE_TOKEN=" + b.Token, "HOME=" + b.Dir}
	sshVia := func(command string) (string, error) {
		o, err := proxySSH(b, envB, command).CombinedOutput()
		return string(o), err
	}
	t.Log("a client on replica b reaches the target whose agent's relay is on replica a")
	var out string
	l.eventually("ssh through replica b logs in (once the agent's relay is up on a)", 10*time.Second, func() bool {
		out, err = sshVia("echo through-b-to-a")
		return err == nil && strings.Contains(out, "through-b-to-a")
	})
	if !strings.Contains(b.Agent.Output(), "bastion relay connected") || !strings.Contains(rb.proc.Output(), "bastion stream forwarded") {
		t.Fatalf("the stream did not take the forwarded path:\nagent: %s\nreplica b: %s", b.Agent.Output(), rb.proc.Output())
	}

	pushVia := func() (*bastionSession, wire.BastionSession) {
		t.Helper()
		s := startPushSessionWith(t, b, envB)
		var live wire.BastionSession
		// Listed by replica b, which relays it and so knows its bytes so
		// far (the others show the bytes once it ends).
		l.eventually("the session is listed live with bytes", 5*time.Second, func() bool {
			ss := cliJSON[[]wire.BastionSession](l, on(rb, "sessions", "--active")...)
			if len(ss) != 1 {
				return false
			}
			live = ss[0]
			return live.BytesIn > 0
		})
		return s, live
	}

	t.Log("a kill through replica a's API ends the session replica b holds")
	s, live := pushVia()
	l.cli(on(ra, "sessions", "kill", live.ID, "--yes", "--reason", "e2e kill across replicas")...)
	l.eventually("the client's ssh ends after the kill", 3*time.Second, s.ended)
	for _, r := range []*bastionReplica{ra, rb} {
		for _, x := range cliJSON[[]wire.BastionSession](l, on(r, "sessions")...) {
			if x.ID == live.ID && (x.State != "ended" || x.EndReason != "killed") {
				t.Errorf("killed session as replica %s lists it: %+v", r.name, x)
			}
		}
	}

	t.Log("kill -9 of replica a ends the session spliced through it")
	s, live = pushVia()
	ra.proc.Kill()
	l.eventually("the client's ssh ends when replica a dies", 5*time.Second, s.ended)
	l.eventually("replica b records the session ended (agent lost)", 5*time.Second, func() bool {
		for _, x := range cliJSON[[]wire.BastionSession](l, on(rb, "sessions")...) {
			if x.ID == live.ID {
				return x.State == "ended" && x.EndReason == "agent_lost"
			}
		}
		return false
	})

	t.Log("the agent moves to replica b; a new tunnel through b works")
	l.eventually("the agent logs that it moved to replica b", 30*time.Second, func() bool {
		return strings.Contains(b.Agent.Output(), "moving on to the next") && strings.Count(b.Agent.Output(), "bastion relay connected") >= 2
	})
	l.eventually("ssh through replica b works again", 30*time.Second, func() bool {
		out, err = sshVia("echo after-failover")
		return err == nil && strings.Contains(out, "after-failover")
	})

	t.Log("a new grant made through replica b is applied in the kernel by the agent")
	// The server's own address on the target's link stands for a source
	// with a direct path (the client has none).
	reach := func() bool {
		d := &net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: testlab.BastionServerInside.AsSlice()}}
		c, err := b.ServerNS.DialContext(context.Background(), d, "tcp", netip.AddrPortFrom(testlab.BastionTarget, 22).String())
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	if reach() {
		t.Fatal("port 22 of the target is open to the server's address before any direct grant")
	}
	req := cliJSON[wire.Request](l, on(rb, "request", "web-01", "--port", "22", "--source", testlab.BastionServerInside.String(),
		"--duration", "10m", "--reason", "after failover", "--wait")...)
	if req.State != "active" || !reach() {
		t.Fatalf("a grant through replica b after a's death: state %q, open %v; want active and open", req.State, reach())
	}
}
