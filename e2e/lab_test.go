// Package e2e proves jitgate end to end with real parts: the real jitgate
// binary as server, agent and CLI, real nftables, a real OpenSSH server and
// client, in network namespaces the test creates and removes.
//
//	client namespace                      server namespace
//	192.0.2.1, 192.0.2.3                  192.0.2.2          jitgate server :8080
//	2001:db8::1, 2001:db8::3   ──veth──   2001:db8::2        jitgate agent, sshd :22
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

var (
	client1  = netip.MustParseAddr("192.0.2.1")
	client2  = netip.MustParseAddr("192.0.2.3")
	serverIP = netip.MustParseAddr("192.0.2.2")
	client6  = netip.MustParseAddr("2001:db8::1")
	server6  = netip.MustParseAddr("2001:db8::2")
)

// binary is the jitgate binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "jitgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "jitgate")
	build := exec.Command("go", "build", "-o", binary, "../cmd/jitgate")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building jitgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lab is a client host and a server host joined by a veth pair.
type lab struct {
	t                  *testing.T
	clientNS, serverNS *testenv.Netns
	dir                string
	token              string // admin token
	server             *proc
	agent              *proc
	sshKey             string
}

func newLab(t *testing.T) *lab {
	t.Helper()
	testenv.RequireKernel(t)
	for _, tool := range []string{"sshd", "ssh", "ssh-keygen"} {
		testenv.RequireTool(t, tool)
	}
	l := &lab{t: t, clientNS: testenv.NewNetns(t), serverNS: testenv.NewNetns(t), dir: t.TempDir()}
	testenv.NewLink(t,
		testenv.LinkEnd{NS: l.clientNS, Name: "eth0", Addrs: []netip.Prefix{
			netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("192.0.2.3/24"),
			netip.MustParsePrefix("2001:db8::1/64"), netip.MustParsePrefix("2001:db8::3/64")}},
		testenv.LinkEnd{NS: l.serverNS, Name: "eth0", Addrs: []netip.Prefix{
			netip.MustParsePrefix("192.0.2.2/24"), netip.MustParsePrefix("2001:db8::2/64")}},
	)
	l.startSSHD()
	return l
}

// proc is a jitgate process running in a namespace.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs name args... in ns until the test ends (or kill).
func (l *lab) start(ns *testenv.Netns, label string, name string, args ...string) *proc {
	l.t.Helper()
	p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = ns.Command(context.Background(), name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		l.t.Fatalf("starting %s: %v", label, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	l.t.Cleanup(func() {
		p.kill()
		if l.t.Failed() {
			l.t.Logf("--- output of %s ---\n%s", label, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL: no cleanup code of the process runs.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func (l *lab) startSSHD() {
	l.t.Helper()
	d := filepath.Join(l.dir, "ssh")
	if err := os.MkdirAll(d, 0o700); err != nil {
		l.t.Fatal(err)
	}
	l.sshKey = filepath.Join(d, "id_ed25519")
	for _, k := range []string{filepath.Join(d, "host_ed25519"), l.sshKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			l.t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(l.sshKey + ".pub")
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "authorized_keys"), pub, 0o600); err != nil {
		l.t.Fatal(err)
	}
	conf := fmt.Sprintf(`Port 22
ListenAddress 0.0.0.0
ListenAddress ::
HostKey %[1]s/host_ed25519
AuthorizedKeysFile %[1]s/authorized_keys
PidFile %[1]s/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
LogLevel ERROR
`, d)
	if err := os.WriteFile(filepath.Join(d, "sshd_config"), []byte(conf), 0o600); err != nil {
		l.t.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	l.start(l.serverNS, "sshd", "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	l.eventually("sshd listening", 5*time.Second, func() bool { return l.canConnect(client1, serverIP, 22) })
}

// startServer starts (or restarts) the jitgate server in the server namespace.
func (l *lab) startServer() {
	l.t.Helper()
	data := filepath.Join(l.dir, "server")
	l.server = l.start(l.serverNS, "jitgate server", binary, "server", "--listen", "0.0.0.0:8080", "--data-dir", data,
		"--activation-timeout", "5s")
	l.eventually("server healthy", 10*time.Second, func() bool { return l.canConnect(client1, serverIP, 8080) })
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		l.t.Fatalf("reading admin token: %v", err)
	}
	l.token = strings.TrimSpace(string(tok))
}

// startAgent starts (or restarts) the agent; enrollToken is needed only the first time.
func (l *lab) startAgent(enrollToken string) {
	l.t.Helper()
	args := []string{"agent", "--server", "http://127.0.0.1:8080", "--state-dir", filepath.Join(l.dir, "agent")}
	if enrollToken != "" {
		args = append(args, "--enroll-token", enrollToken)
	}
	l.agent = l.start(l.serverNS, "jitgate agent", binary, args...)
}

// cli runs a jitgate client command in the client namespace and returns
// stdout; it fails the test when the command fails.
func (l *lab) cli(args ...string) string {
	l.t.Helper()
	out, errOut, err := l.cliResult(args...)
	if err != nil {
		l.t.Fatalf("jitgate %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (l *lab) cliResult(args ...string) (stdout, stderr string, err error) {
	cmd := l.cli0(args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (l *lab) cli0(args ...string) *exec.Cmd {
	cmd := l.clientNS.Command(context.Background(), binary, args...)
	cmd.Env = append(os.Environ(), "JITGATE_SERVER=http://192.0.2.2:8080", "JITGATE_TOKEN="+l.token, "HOME="+l.dir)
	return cmd
}

// cliJSON runs a command with --output json and decodes its answer.
func cliJSON[T any](l *lab, args ...string) T {
	l.t.Helper()
	var v T
	out := l.cli(append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		l.t.Fatalf("jitgate %s: decoding %q: %v", strings.Join(args, " "), out, err)
	}
	return v
}

// canConnect reports whether a new TCP connection from src to dst:port
// completes; a dropped SYN shows as a timeout.
func (l *lab) canConnect(src, dst netip.Addr, port uint16) bool {
	ns := l.clientNS
	if src == serverIP {
		ns = l.serverNS
	}
	d := &net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err := ns.DialContext(ctx, d, "tcp", netip.AddrPortFrom(dst, port).String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// eventually polls cond every 10 ms until it holds or d passes.
func (l *lab) eventually(what string, d time.Duration, cond func() bool) {
	l.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitApplied waits until the agent applied the target's latest revision.
func (l *lab) waitApplied(target string) {
	l.t.Helper()
	l.eventually("agent applied the latest revision", 10*time.Second, func() bool {
		tg := cliJSON[wire.Target](l, "target", "show", target)
		return tg.Agent.AppliedRevision == tg.Agent.Revision
	})
}

// sshSession starts an ssh session from src in which the server pushes a
// line every 100 ms; lines arrive on the returned channel.
func (l *lab) sshSession(src, dst netip.Addr) (<-chan string, func()) {
	l.t.Helper()
	cmd := l.clientNS.Command(context.Background(), "ssh", l.sshArgs(src, dst, "while true; do date +%s.%N; sleep 0.1; done")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	l.t.Cleanup(stop)
	return lines, stop
}

func (l *lab) sshArgs(src, dst netip.Addr, command string) []string {
	return []string{"-i", l.sshKey, "-b", src.String(), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR",
		"root@" + dst.String(), command}
}

// sshRun runs one command over ssh from src and returns its output.
func (l *lab) sshRun(src, dst netip.Addr, command string) (string, error) {
	out, err := l.clientNS.Command(context.Background(), "ssh", l.sshArgs(src, dst, command)...).CombinedOutput()
	return string(out), err
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
