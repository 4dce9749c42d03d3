package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestHostModeCloseEstablished runs the real agent in host mode against the
// fake server with close-established on port 22: an ssh session in which the
// server pushes data ends at the grant's expiry, with the agent killed before
// (the kernel alone cuts it), and no new connection passes.
func TestHostModeCloseEstablished(t *testing.T) {
	t.Parallel()
	l := testlab.New(t)
	t.Cleanup(l.KillSSHSessions)
	exp := time.Now().Add(5 * time.Second)
	srv := newFakeServer(t, l.ServerNS, wire.DesiredState{
		Target: "web-cut", Revision: 1,
		Protected: []wire.Port{{Protocol: "tcp", Port: 22, CloseEstablished: true}},
		Grants:    []wire.GrantEntry{{Source: client1.String(), Protocol: "tcp", Port: 22, ExpiresAt: exp}},
	})
	agent := l.Start(l.ServerNS, "jitgate agent (host)", l.Binary, "agent", "--resync", "1s",
		"--server", srv.URL, "--enroll-token", fakeEnrollToken, "--state-dir", filepath.Join(l.Dir, "agent"))
	rep := srv.waitReport(t, "applying revision 1", 10*time.Second, func(r wire.AgentReport) bool { return r.Revision == 1 })
	if rep.Error != "" || rep.Mode != "host" {
		t.Fatalf("report: mode %q, error %q", rep.Mode, rep.Error)
	}
	if !l.CanConnect(client1, serverIP, 22) || l.CanConnect(client2, serverIP, 22) {
		t.Fatal("the grant does not open port 22 for exactly the granted source")
	}
	lines, stop := l.SSHSession(client1, serverIP)
	defer stop()
	select {
	case <-lines:
	case <-time.After(3 * time.Second):
		t.Fatal("the ssh session produced no output")
	}
	agent.Kill()
	time.Sleep(time.Until(exp.Add(-500 * time.Millisecond)))
	if n := drain(lines); n < 3 {
		t.Fatalf("the session got %d lines before expiry, want it alive", n)
	}
	timeout := time.After(2 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				if time.Now().Before(exp) {
					t.Fatalf("the session ended %v before the grant's deadline", time.Until(exp))
				}
				t.Logf("the session ended %v after the deadline", time.Since(exp))
				if l.CanConnect(client1, serverIP, 22) {
					t.Error("a new connection passes after expiry")
				}
				return
			}
		case <-timeout:
			t.Fatal("the session is still open 1.5s after expiry: close-established did not cut it")
		}
	}
}
