// Package testlab is a two-host lab for end-to-end tests and benchmarks: a
// client host and a server host (network namespaces joined by a veth pair)
// with a real sshd, on which tests run the real jitgate binary as server,
// agent and CLI.
//
//	client namespace                      server namespace
//	192.0.2.1, 192.0.2.3                  192.0.2.2          jitgate server :8080
//	2001:db8::1, 2001:db8::3   ──veth──   2001:db8::2        jitgate agent, sshd :22
//
// A package using the lab builds the binary once from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testlab.Run(m)) }
//
// The package is for tests only (it imports testing and testenv): production
// code must never import it.
package testlab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// The lab's addresses (RFC 5737 and RFC 3849 documentation ranges).
var (
	Client1  = netip.MustParseAddr("192.0.2.1")
	Client2  = netip.MustParseAddr("192.0.2.3")
	ServerIP = netip.MustParseAddr("192.0.2.2")
	Client6  = netip.MustParseAddr("2001:db8::1")
	Client6b = netip.MustParseAddr("2001:db8::3")
	Server6  = netip.MustParseAddr("2001:db8::2")
)

// APIPort is the port the jitgate server listens on (plain HTTP, all addresses).
const APIPort = 8080

// ServerURL is the server's URL as seen from the client namespace.
var ServerURL = fmt.Sprintf("http://%s", netip.AddrPortFrom(ServerIP, APIPort))

// DefaultActivationTimeout is the server's --activation-timeout unless
// StartServer is given another.
const DefaultActivationTimeout = 5 * time.Second

// BuildBinary builds the jitgate binary into dir and returns its path.
func BuildBinary(dir string) (string, error) {
	bin := filepath.Join(dir, "jitgate")
	build := exec.Command("go", "build", "-o", bin, "github.com/jitgate/jitgate/cmd/jitgate")
	var out bytes.Buffer
	build.Stdout, build.Stderr = &out, &out
	if err := build.Run(); err != nil {
		return "", fmt.Errorf("building jitgate: %w\n%s", err, out.String())
	}
	return bin, nil
}

// binary is the jitgate binary built by Run, set once before any test runs.
var binary string

// Run builds the jitgate binary into a temporary directory, runs m's tests
// and removes the directory. It returns the exit code for os.Exit.
func Run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "jitgate-testlab-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testlab:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if binary, err = BuildBinary(dir); err != nil {
		fmt.Fprintln(os.Stderr, "testlab:", err)
		return 1
	}
	return m.Run()
}

// Lab is a client host and a server host joined by a veth pair.
type Lab struct {
	tb                 testing.TB
	ClientNS, ServerNS *testenv.Netns
	// Dir is a per-test directory holding the server's data, the agent's
	// state and the ssh keys.
	Dir string
	// Binary is the jitgate binary.
	Binary string
	// Token is the admin token, read by StartServer.
	Token string
	// Server and Agent are the processes last started by StartServer and
	// StartAgent (nil before).
	Server, Agent *Proc
	// SSHKey is the private key authorised for root on the server's sshd.
	SSHKey string
	// Replicas are the servers StartReplicas started on one database (nil
	// with one server). With them, the CLI and APIClient are given every
	// replica's URL and the agent every replica's address (replicas.go).
	Replicas []*Replica
	// clientServers and agentServers override ServerURL and the agent's
	// server when set (comma-separated lists of replicas).
	clientServers, agentServers string
}

// New builds the two namespaces and the link between them and starts sshd
// on the server. It skips (or under CI fails) tb without root or tools.
func New(tb testing.TB) *Lab {
	tb.Helper()
	testenv.RequireKernel(tb)
	for _, tool := range []string{"sshd", "ssh", "ssh-keygen"} {
		testenv.RequireTool(tb, tool)
	}
	if binary == "" {
		tb.Fatal("testlab: no jitgate binary; call testlab.Run from TestMain")
	}
	l := &Lab{tb: tb, ClientNS: testenv.NewNetns(tb), ServerNS: testenv.NewNetns(tb), Dir: tb.TempDir(), Binary: binary}
	testenv.NewLink(tb,
		testenv.LinkEnd{NS: l.ClientNS, Name: "eth0", Addrs: []netip.Prefix{
			netip.PrefixFrom(Client1, 24), netip.PrefixFrom(Client2, 24),
			netip.PrefixFrom(Client6, 64), netip.PrefixFrom(Client6b, 64)}},
		testenv.LinkEnd{NS: l.ServerNS, Name: "eth0", Addrs: []netip.Prefix{
			netip.PrefixFrom(ServerIP, 24), netip.PrefixFrom(Server6, 64)}},
	)
	l.startSSHD()
	return l
}

// AddClientAddrs assigns more addresses to the client's interface, each in
// the lab's /24 or /64 (IPv4 addresses must lie in 192.0.2.0/24, IPv6 ones in
// 2001:db8::/64, so that the server's replies find them).
func (l *Lab) AddClientAddrs(addrs ...netip.Addr) {
	l.tb.Helper()
	var batch strings.Builder
	for _, a := range addrs {
		bits, extra := 24, ""
		if a.Is6() {
			bits, extra = 64, " nodad"
		}
		fmt.Fprintf(&batch, "addr add %s dev eth0%s\n", netip.PrefixFrom(a, bits), extra)
	}
	cmd := l.ClientNS.Command(context.Background(), "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		l.tb.Fatalf("adding client addresses: %v: %s", err, out)
	}
}

// Proc is a process running in a namespace until the test ends or Kill.
type Proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

type syncBuffer = testenv.Buffer

// Start runs name args... in ns until the test ends (or Kill). The output
// is logged if the test fails.
func (l *Lab) Start(ns *testenv.Netns, label string, name string, args ...string) *Proc {
	l.tb.Helper()
	p := &Proc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = ns.Command(context.Background(), name, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		l.tb.Fatalf("starting %s: %v", label, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	l.tb.Cleanup(func() {
		p.Kill()
		if l.tb.Failed() {
			l.tb.Logf("--- output of %s ---\n%s", label, p.out.String())
		}
	})
	return p
}

// Kill sends SIGKILL and waits for the process to end: no cleanup code of
// the process runs. (`ip netns exec` execs the program, so the signal
// reaches it directly.) Killing an ended process does nothing.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Done is closed when the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output is what the process wrote to stdout and stderr so far.
func (p *Proc) Output() string { return p.out.String() }

func (l *Lab) startSSHD() {
	l.tb.Helper()
	d := filepath.Join(l.Dir, "ssh")
	if err := os.MkdirAll(d, 0o700); err != nil {
		l.tb.Fatal(err)
	}
	l.SSHKey = filepath.Join(d, "id_ed25519")
	for _, k := range []string{filepath.Join(d, "host_ed25519"), l.SSHKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			l.tb.Fatalf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(l.SSHKey + ".pub")
	if err != nil {
		l.tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "authorized_keys"), pub, 0o600); err != nil {
		l.tb.Fatal(err)
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
		l.tb.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755) // privilege separation directory
	l.Start(l.ServerNS, "sshd", "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	l.Eventually("sshd listening", 5*time.Second, func() bool { return l.CanConnect(Client1, ServerIP, 22) })
}

// StartServer starts (or restarts) the jitgate server in the server
// namespace, with --activation-timeout DefaultActivationTimeout and then
// extraFlags (a flag given again there overrides the default), waits until
// it accepts connections and reads the admin token.
func (l *Lab) StartServer(extraFlags ...string) {
	l.tb.Helper()
	data := filepath.Join(l.Dir, "server")
	args := []string{"server", "--listen", fmt.Sprintf("0.0.0.0:%d", APIPort), "--data-dir", data,
		"--activation-timeout", DefaultActivationTimeout.String()}
	l.Server = l.Start(l.ServerNS, "jitgate server", l.Binary, append(args, extraFlags...)...)
	l.Eventually("server healthy", 10*time.Second, func() bool { return l.CanConnect(Client1, ServerIP, APIPort) })
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		l.tb.Fatalf("reading admin token: %v", err)
	}
	l.Token = strings.TrimSpace(string(tok))
}

// StartAgent starts (or restarts) the agent in the server namespace;
// enrollToken is needed only the first time.
func (l *Lab) StartAgent(enrollToken string) {
	l.tb.Helper()
	server := fmt.Sprintf("http://127.0.0.1:%d", APIPort)
	if l.agentServers != "" {
		server = l.agentServers
	}
	args := []string{"agent", "--server", server, "--state-dir", filepath.Join(l.Dir, "agent")}
	if enrollToken != "" {
		args = append(args, "--enroll-token", enrollToken)
	}
	l.Agent = l.Start(l.ServerNS, "jitgate agent", l.Binary, args...)
}

// CLI runs a jitgate client command in the client namespace and returns
// stdout; it fails the test when the command fails.
func (l *Lab) CLI(args ...string) string {
	l.tb.Helper()
	out, errOut, err := l.CLIResult(args...)
	if err != nil {
		l.tb.Fatalf("jitgate %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// CLIResult runs a jitgate client command in the client namespace and
// returns its output and error, whether it failed or not.
func (l *Lab) CLIResult(args ...string) (stdout, stderr string, err error) {
	cmd := l.ClientNS.Command(context.Background(), l.Binary, args...)
	cmd.Env = append(os.Environ(), "JITGATE_SERVER="+l.ClientServers(), "JITGATE_TOKEN="+l.Token, "HOME="+l.Dir)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// CLIJSON runs a command with --output json and decodes its answer.
func CLIJSON[T any](l *Lab, args ...string) T {
	l.tb.Helper()
	var v T
	out := l.CLI(append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		l.tb.Fatalf("jitgate %s: decoding %q: %v", strings.Join(args, " "), out, err)
	}
	return v
}

// APIClient returns a typed API client with the admin token that connects
// from the client namespace. Each call returns a client with its own
// connections, so take a new one after restarting the server.
func (l *Lab) APIClient() *client.Client {
	l.tb.Helper()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.ClientNS.DialContext(ctx, &net.Dialer{}, network, addr)
		},
		MaxIdleConnsPerHost: 4,
	}
	c, err := client.New(l.ClientServers(), l.Token, client.WithHTTPClient(&http.Client{Transport: tr, Timeout: 60 * time.Second}))
	if err != nil {
		l.tb.Fatal(err)
	}
	l.tb.Cleanup(tr.CloseIdleConnections)
	return c
}

// CanConnect reports whether a new TCP connection from src to dst:port
// completes within 300 ms; a dropped SYN shows as a timeout. It dials from
// the server namespace when src is ServerIP, else from the client namespace.
func (l *Lab) CanConnect(src, dst netip.Addr, port uint16) bool {
	ns := l.ClientNS
	if src == ServerIP {
		ns = l.ServerNS
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

// Eventually polls cond every 10 ms until it holds, or fails the test
// once d passed.
func (l *Lab) Eventually(what string, d time.Duration, cond func() bool) {
	l.tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			l.tb.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitApplied waits until the agent applied the target's latest revision.
func (l *Lab) WaitApplied(target string) {
	l.tb.Helper()
	l.Eventually("agent applied the latest revision", 10*time.Second, func() bool {
		tg := CLIJSON[wire.Target](l, "target", "show", target)
		return tg.Agent.AppliedRevision == tg.Agent.Revision
	})
}

// SSHSession starts an ssh session from src in which the server pushes a
// line every 100 ms; lines arrive on the returned channel. The returned
// function ends the session (it also ends with the test).
func (l *Lab) SSHSession(src, dst netip.Addr) (<-chan string, func()) {
	l.tb.Helper()
	cmd := l.ClientNS.Command(context.Background(), "ssh", l.sshArgs(src, dst, "while date +%s.%N; do sleep 0.1; done")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		l.tb.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		l.tb.Fatal(err)
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
	l.tb.Cleanup(stop)
	return lines, stop
}

func (l *Lab) sshArgs(src, dst netip.Addr, command string) []string {
	return []string{"-i", l.SSHKey, "-b", src.String(), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR",
		"root@" + dst.String(), command}
}

// SSHRun runs one command over ssh from src (in the client namespace) and
// returns its combined output.
func (l *Lab) SSHRun(src, dst netip.Addr, command string) (string, error) {
	out, err := l.ClientNS.Command(context.Background(), "ssh", l.sshArgs(src, dst, command)...).CombinedOutput()
	return string(out), err
}

// Pid is the process id (the program itself: `ip netns exec` execs it).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// RSS is the process's resident set size (VmRSS), in bytes.
func (p *Proc) RSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(rest), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("parsing VmRSS %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.Pid())
}

// DBPath is the server's SQLite database.
func (l *Lab) DBPath() string { return filepath.Join(l.Dir, "server", "jitgate.db") }

// CLIJSONInto runs a client command with --output json and decodes its
// answer into v.
func CLIJSONInto(l *Lab, v any, args ...string) {
	l.tb.Helper()
	out := l.CLI(append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		l.tb.Fatalf("jitgate %s: decoding %q: %v", strings.Join(args, " "), out, err)
	}
}

// ClientServers is the server URL (or comma-separated URLs of the
// replicas) that the CLI and APIClient use from the client namespace.
func (l *Lab) ClientServers() string {
	if l.clientServers != "" {
		return l.clientServers
	}
	return ServerURL
}
