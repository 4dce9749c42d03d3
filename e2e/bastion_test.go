package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// bastionSession is an ssh session through the bastion in which the target
// pushes a line every 100 ms.
type bastionSession struct {
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{}
}

// proxySSH is ssh in the client namespace, as root to web-01's port 22
// through `jitgate connect --stdio` (its ProxyCommand), running command
// there; env is the client environment (JITGATE_SERVER, JITGATE_TOKEN).
func proxySSH(b *testlab.BastionLab, env []string, command string) *exec.Cmd {
	cmd := b.ClientNS.Command(context.Background(), "ssh", append(b.SSHOptions(), "-o",
		"ProxyCommand="+b.Binary+" connect --stdio --port 22 web-01", "root@web-01", command)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

// startPushSession runs ssh with the ProxyCommand 'jitgate connect --stdio'
// in the client namespace.
func startPushSession(t *testing.T, b *testlab.BastionLab) *bastionSession {
	t.Helper()
	return startPushSessionWith(t, b, b.ClientEnv())
}

// startPushSessionWith is startPushSession with the client environment env
// (JITGATE_SERVER and JITGATE_TOKEN: which server, as whom), once ssh
// printed its first line.
func startPushSessionWith(t *testing.T, b *testlab.BastionLab, env []string) *bastionSession {
	t.Helper()
	cmd := proxySSH(b, env, "while date +%s.%N; do sleep 0.1; done")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &bastionSession{cmd: cmd, lines: make(chan string, 10000), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); <-s.exited })
	select {
	case <-s.lines:
	case <-time.After(10 * time.Second):
		t.Fatal("the ssh session through the bastion produced no output")
	}
	return s
}

func (s *bastionSession) ended() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// liveSession returns the one live session, waiting until bytes moved.
func liveSession(t *testing.T, l *lab) wire.BastionSession {
	t.Helper()
	var live wire.BastionSession
	l.eventually("a live session with bytes each way", 5*time.Second, func() bool {
		ss := cliJSON[[]wire.BastionSession](l, "sessions", "--active")
		if len(ss) != 1 {
			return false
		}
		live = ss[0]
		return live.BytesIn > 0 && live.BytesOut > 0
	})
	return live
}

func sessionState(t *testing.T, l *lab, id string) wire.BastionSession {
	t.Helper()
	for _, s := range cliJSON[[]wire.BastionSession](l, "sessions") {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("session %s not listed", id)
	return wire.BastionSession{}
}

// TestBastion proves the bastion end to end in namespaces where the client
// has no route to the target: the real server, the real agent on the
// target (relay connection outbound, nftables gate), a real sshd and the
// real ssh client. jitgate ssh logs in; ssh with the ProxyCommand and a
// native ssh through jitgate connect --local work; a session is listed
// with its bytes while it runs; kill, revoke and expiry each end it within
// 1 s with the client seeing the close; a port the policy does not name is
// refused; kill -9 of the agent ends its sessions (agent_lost); kill -9 of
// the server ends the sessions and the restarted server lists them ended.
func TestBastion(t *testing.T) {
	b := testlab.NewBastion(t)
	l := &lab{Lab: b.Lab, t: t}
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01")
	b.StartTargetAgent(created.EnrollToken)
	l.eventually("agent connected", 10*time.Second, func() bool {
		return cliJSON[wire.Target](l, "target", "show", "web-01").Agent.State == "connected"
	})
	if b.ClientReaches(testlab.BastionTarget, 22) {
		t.Fatal("the client reaches the target directly: the lab must give it no route")
	}
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h", "--access", "bastion")
	l.waitApplied("web-01")

	t.Log("jitgate ssh asks for a bastion grant, follows it, and logs in through the relay")
	sshArgs := []string{"ssh", "root@web-01", "--duration", "10m", "--reason", "e2e bastion", "-i", b.SSHKey,
		"--ssh-option", "BatchMode=yes", "--ssh-option", "StrictHostKeyChecking=no", "--ssh-option", "UserKnownHostsFile=/dev/null",
		"--ssh-option", "LogLevel=ERROR", "--", "echo", "hello-through-bastion"}
	var out, errOut string
	var err error
	l.eventually("jitgate ssh logs in (once the agent's relay is up)", 10*time.Second, func() bool {
		out, errOut, err = l.cliResult(sshArgs...)
		return err == nil
	})
	if !strings.Contains(out, "hello-through-bastion") {
		t.Fatalf("jitgate ssh: stdout %q stderr %q", out, errOut)
	}
	reqs := cliJSON[[]wire.Request](l, "requests", "--active")
	if len(reqs) != 1 || reqs[0].Source != "" || reqs[0].State != "active" {
		t.Fatalf("requests after jitgate ssh = %+v, want one active bastion request without a source", reqs)
	}
	grant := reqs[0]

	t.Log("ssh with ProxyCommand 'jitgate connect --stdio'")
	if o, err := proxySSH(b, b.ClientEnv(), "echo via-proxycommand").CombinedOutput(); err != nil || !strings.Contains(string(o), "via-proxycommand") {
		t.Fatalf("ssh with ProxyCommand: %v: %s", err, o)
	}

	t.Log("jitgate connect --local serves a native ssh client")
	b.Start(b.ClientNS, "jitgate connect", b.Binary, "connect", "web-01", "--port", "22", "--local", "127.0.0.1:2222",
		"--server", testlab.ServerURL, "--token", b.Token)
	l.eventually("local listener up", 5*time.Second, func() bool {
		return localListening(b)
	})
	o, err := b.ClientNS.Command(context.Background(), "ssh", append(b.SSHOptions(), "-p", "2222", "root@127.0.0.1", "echo via-local")...).CombinedOutput()
	if err != nil || !strings.Contains(string(o), "via-local") {
		t.Fatalf("ssh through jitgate connect --local: %v: %s", err, o)
	}

	t.Log("a port the policy does not name is refused by the server")
	_, errOut, err = l.cliResult("connect", "web-01", "--port", "8022", "--stdio")
	if err == nil || !strings.Contains(errOut, "does not configure this port") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("tunnel to an unnamed port: err=%v stderr=%q; want one line saying the policy does not configure it", err, errOut)
	}

	t.Log("a live session is listed with bytes; kill ends it within 1 s")
	s := startPushSession(t, b)
	live := liveSession(t, l)
	if live.Target != "web-01" || live.Port != "22/tcp" || live.RequestID != grant.ID {
		t.Fatalf("live session = %+v", live)
	}
	l.cli("sessions", "kill", live.ID, "--yes", "--reason", "e2e kill")
	l.eventually("the client's ssh ends after kill", time.Second, s.ended)
	if got := sessionState(t, l, live.ID); got.EndReason != "killed" || got.EndedBy == "" || got.BytesOut == 0 {
		t.Fatalf("killed session = %+v", got)
	}

	t.Log("revoke ends it within 1 s")
	s = startPushSession(t, b)
	live = liveSession(t, l)
	l.cli("revoke", grant.ID, "--yes", "--reason", "e2e revoke")
	l.eventually("the client's ssh ends after revoke", time.Second, s.ended)
	l.eventually("the session is recorded revoked", 5*time.Second, func() bool {
		return sessionState(t, l, live.ID).EndReason == "revoked"
	})

	t.Log("expiry ends it within 1 s of the deadline")
	short := cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--bastion", "--duration", "6s", "--reason", "e2e expiry", "--wait")
	s = startPushSession(t, b)
	live = liveSession(t, l)
	time.Sleep(time.Until(short.ExpiresAt))
	l.eventually("the client's ssh ends at the deadline", time.Second, s.ended)
	l.eventually("the session is recorded expired", 5*time.Second, func() bool {
		return sessionState(t, l, live.ID).EndReason == "grant_expired"
	})

	t.Log("kill -9 of the agent ends its sessions")
	cliJSON[wire.Request](l, "request", "web-01", "--port", "22", "--bastion", "--duration", "10m", "--reason", "e2e crash", "--wait")
	s = startPushSession(t, b)
	live = liveSession(t, l)
	b.Agent.Kill()
	l.eventually("the client's ssh ends when the agent dies", 2*time.Second, s.ended)
	l.eventually("the session is recorded agent_lost", 5*time.Second, func() bool {
		return sessionState(t, l, live.ID).EndReason == "agent_lost"
	})
	b.StartTargetAgent("")

	t.Log("kill -9 of the server ends the sessions; the restarted server lists them ended")
	l.eventually("a session through the restarted agent", 10*time.Second, func() bool {
		return proxySSH(b, b.ClientEnv(), "true").Run() == nil
	})
	s = startPushSession(t, b)
	live = liveSession(t, l)
	b.Server.Kill()
	l.eventually("the client's ssh ends when the server dies", 2*time.Second, s.ended)
	l.startServer()
	if got := sessionState(t, l, live.ID); got.State != "ended" || got.EndReason != "server_lost" {
		t.Fatalf("after the restart the session is %+v, want ended (server_lost)", got)
	}
	if ss := cliJSON[[]wire.BastionSession](l, "sessions", "--active"); len(ss) != 0 {
		t.Fatalf("after the restart %d sessions are listed live", len(ss))
	}

	events := cliJSON[[]wire.AuditEvent](l, "audit", "--target", "web-01", "--limit", "10000")
	seen := map[string]int{}
	for _, e := range events {
		seen[e.Action]++
	}
	for _, a := range []string{"session.started", "session.ended", "session.killed"} {
		if seen[a] == 0 {
			t.Errorf("audit trail lacks %s (%v)", a, seen)
		}
	}
}

// localListening reports whether jitgate connect listens on 127.0.0.1:2222
// in the client namespace.
func localListening(b *testlab.BastionLab) bool {
	c, err := b.ClientNS.DialContext(context.Background(), &net.Dialer{Timeout: 300 * time.Millisecond}, "tcp", "127.0.0.1:2222")
	if err != nil {
		return false
	}
	c.Close()
	return true
}
