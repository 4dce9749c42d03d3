// Package e2e proves jitgate end to end with real parts: the real jitgate
// binary as server, agent and CLI, real nftables, a real OpenSSH server and
// client, in network namespaces the test creates and removes. The lab
// itself lives in internal/testlab; this file adapts it to the tests' names.
package e2e

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

var (
	client1  = testlab.Client1
	client2  = testlab.Client2
	serverIP = testlab.ServerIP
	client6  = testlab.Client6
	server6  = testlab.Server6
)

func TestMain(m *testing.M) {
	code := testlab.Run(m)
	testenv.StopPostgres() // started by the tests of replicas, if any ran
	os.Exit(code)
}

// lab is a testlab.Lab under the names the tests use.
type lab struct {
	*testlab.Lab
	t *testing.T
	// server and agent kill the process last started by startServer and
	// startAgent.
	server, agent procHandle
}

type procHandle struct{ kill func() }

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{Lab: testlab.New(t), t: t}
	l.server = procHandle{kill: func() { l.Server.Kill() }}
	l.agent = procHandle{kill: func() { l.Agent.Kill() }}
	return l
}

// newGatedLab is a lab with the server and web-01's agent running (the
// agent connected) and a policy that gates web-01's 22/tcp for at most an
// hour, applied by the agent: the start of most tests of one target.
func newGatedLab(t *testing.T) *lab {
	t.Helper()
	l := newLab(t)
	l.startServer()
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01")
	l.startAgent(created.EnrollToken)
	l.eventually("agent connected", 10*time.Second, func() bool {
		return cliJSON[wire.Target](l, "target", "show", "web-01").Agent.State == "connected"
	})
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "22/tcp", "--max", "1h")
	l.waitApplied("web-01")
	return l
}

// The wrappers are helpers, so failures point at the test's line.

func (l *lab) startServer()                  { l.t.Helper(); l.StartServer() }
func (l *lab) startAgent(enrollToken string) { l.t.Helper(); l.StartAgent(enrollToken) }
func (l *lab) cli(args ...string) string     { l.t.Helper(); return l.CLI(args...) }
func (l *lab) waitApplied(target string)     { l.t.Helper(); l.WaitApplied(target) }

func (l *lab) cliResult(args ...string) (stdout, stderr string, err error) {
	return l.CLIResult(args...)
}

func (l *lab) canConnect(src, dst netip.Addr, port uint16) bool { return l.CanConnect(src, dst, port) }

func (l *lab) eventually(what string, d time.Duration, cond func() bool) {
	l.t.Helper()
	l.Eventually(what, d, cond)
}

func (l *lab) sshSession(src, dst netip.Addr) (<-chan string, func()) {
	l.t.Helper()
	return l.SSHSession(src, dst)
}

func (l *lab) sshRun(src, dst netip.Addr, command string) (string, error) {
	return l.SSHRun(src, dst, command)
}

// cliJSON runs a command with --output json and decodes its answer.
func cliJSON[T any](l *lab, args ...string) T {
	l.t.Helper()
	return testlab.CLIJSON[T](l.Lab, args...)
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
