package testlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
)

// A gateway lab: a client, a router (the gateway, IP forwarding on) and two
// targets behind it on their own links, each target with a real sshd and its
// default route through the gateway (so DNAT needs no SNAT: the targets see
// the clients' real addresses).
//
//	client                    gateway                        target 1
//	192.0.2.1, .3     ──eth0  192.0.2.254     eth1──         198.51.100.10
//	2001:db8::1, ::3          2001:db8::fe    198.51.100.254 2001:db8:100::10
//	                                          2001:db8:100::fe
//	                                          eth2──         target 2
//	                                          203.0.113.254  203.0.113.20
//	                                          2001:db8:200::fe 2001:db8:200::20
//
// The gateway's client-side addresses are its public addresses for DNAT.
var (
	GwPublic  = netip.MustParseAddr("192.0.2.254")
	GwPublic6 = netip.MustParseAddr("2001:db8::fe")
	Target1   = netip.MustParseAddr("198.51.100.10")
	Target1v6 = netip.MustParseAddr("2001:db8:100::10")
	Target2   = netip.MustParseAddr("203.0.113.20")
	Target2v6 = netip.MustParseAddr("2001:db8:200::20")
)

// GatewayLab is the gateway topology. Its embedded Lab has the client as
// ClientNS and the gateway as ServerNS, so Start, Eventually and SSHSession
// work on it.
type GatewayLab struct {
	*Lab
	Gateway, T1, T2 *testenv.Netns
}

// NewGateway builds the gateway lab and starts sshd on both targets. It
// skips (or under CI fails) tb without root or tools.
func NewGateway(tb testing.TB) *GatewayLab {
	tb.Helper()
	testenv.RequireKernel(tb)
	for _, tool := range []string{"sshd", "ssh", "ssh-keygen"} {
		testenv.RequireTool(tb, tool)
	}
	if binary == "" {
		tb.Fatal("testlab: no jitgate binary; call testlab.Run from TestMain")
	}
	g := &GatewayLab{
		Lab:     &Lab{tb: tb, ClientNS: testenv.NewNetns(tb), Dir: tb.TempDir(), Binary: binary},
		Gateway: testenv.NewNetns(tb), T1: testenv.NewNetns(tb), T2: testenv.NewNetns(tb),
	}
	g.ServerNS = g.Gateway
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	testenv.NewLink(tb,
		testenv.LinkEnd{NS: g.ClientNS, Name: "eth0", Addrs: pfx("192.0.2.1/24", "192.0.2.3/24", "2001:db8::1/64", "2001:db8::3/64")},
		testenv.LinkEnd{NS: g.Gateway, Name: "eth0", Addrs: pfx("192.0.2.254/24", "2001:db8::fe/64")})
	testenv.NewLink(tb,
		testenv.LinkEnd{NS: g.Gateway, Name: "eth1", Addrs: pfx("198.51.100.254/24", "2001:db8:100::fe/64")},
		testenv.LinkEnd{NS: g.T1, Name: "eth0", Addrs: pfx("198.51.100.10/24", "2001:db8:100::10/64")})
	testenv.NewLink(tb,
		testenv.LinkEnd{NS: g.Gateway, Name: "eth2", Addrs: pfx("203.0.113.254/24", "2001:db8:200::fe/64")},
		testenv.LinkEnd{NS: g.T2, Name: "eth0", Addrs: pfx("203.0.113.20/24", "2001:db8:200::20/64")})
	for _, r := range []struct {
		ns      *testenv.Netns
		via, v6 string
	}{{g.ClientNS, "192.0.2.254", "2001:db8::fe"}, {g.T1, "198.51.100.254", "2001:db8:100::fe"}, {g.T2, "203.0.113.254", "2001:db8:200::fe"}} {
		r.ns.Run(tb, "ip", "route", "add", "default", "via", r.via)
		r.ns.Run(tb, "ip", "-6", "route", "add", "default", "via", r.v6)
	}
	err := g.Gateway.Do(func() error {
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, []byte("1"), 0); err != nil {
				return fmt.Errorf("turning forwarding on: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	g.makeSSHKey()
	for i, t := range []struct {
		ns   *testenv.Netns
		addr netip.Addr
	}{{g.T1, Target1}, {g.T2, Target2}} {
		g.startSSHDIn(t.ns, fmt.Sprintf("target%d", i+1))
		g.Eventually("sshd listening", 5*time.Second, func() bool { return g.CanDial(Client1, t.addr, 22) })
	}
	return g
}

func (g *GatewayLab) makeSSHKey() {
	d := filepath.Join(g.Dir, "ssh")
	if err := os.MkdirAll(d, 0o700); err != nil {
		g.tb.Fatal(err)
	}
	g.SSHKey = filepath.Join(d, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", g.SSHKey).CombinedOutput(); err != nil {
		g.tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

// startSSHDIn starts an sshd on port 22 of ns that accepts g.SSHKey for root.
func (g *GatewayLab) startSSHDIn(ns *testenv.Netns, name string) {
	g.tb.Helper()
	d := filepath.Join(g.Dir, "sshd-"+name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		g.tb.Fatal(err)
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(d, "host_ed25519")).CombinedOutput(); err != nil {
		g.tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(g.SSHKey + ".pub")
	if err != nil {
		g.tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "authorized_keys"), pub, 0o600); err != nil {
		g.tb.Fatal(err)
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
		g.tb.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755)
	p := g.Start(ns, "sshd "+name, "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	// Kill the session processes with sshd: a session cut by the gate never
	// hears of it, and would keep sshd's output open (and the test waiting)
	// until TCP gives up. (Cleanups run last-in first-out: this runs first.)
	g.tb.Cleanup(func() {
		for _, pid := range childrenOf(p.Pid()) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		var state string
		var ppid, child int
		if _, err := fmt.Sscan(rest, &state, &ppid); err != nil || ppid != pid {
			continue
		}
		if _, err := fmt.Sscan(filepath.Base(filepath.Dir(f)), &child); err == nil {
			out = append(out, child)
		}
	}
	return out
}

// CanDial reports whether a new TCP connection from src (a client address)
// to dst:port completes within 300 ms; a dropped SYN shows as a timeout, and
// with that timeout the client sends exactly one SYN.
func (g *GatewayLab) CanDial(src, dst netip.Addr, port uint16) bool {
	d := &net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err := g.ClientNS.DialContext(ctx, d, "tcp", netip.AddrPortFrom(dst, port).String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// SSHPort runs one command over ssh from src to dst:port (in the client
// namespace) and returns its combined output.
func (g *GatewayLab) SSHPort(src, dst netip.Addr, port uint16, command string) (string, error) {
	args := append([]string{"-p", fmt.Sprint(port)}, g.sshArgs(src, dst, command)...)
	out, err := g.ClientNS.Command(context.Background(), "ssh", args...).CombinedOutput()
	return string(out), err
}

// NewBare returns a Lab without namespaces, for tests that make their own
// and want Start, Eventually and the binary.
func NewBare(tb testing.TB) *Lab {
	tb.Helper()
	testenv.RequireKernel(tb)
	if binary == "" {
		tb.Fatal("testlab: no jitgate binary; call testlab.Run from TestMain")
	}
	return &Lab{tb: tb, Dir: tb.TempDir(), Binary: binary}
}

// KillSSHSessions kills the per-session processes of the lab's sshd (found
// by its pid file), leaving sshd itself. A session the gate cut never hears
// of it, and would keep sshd's output open, and the test's cleanup waiting,
// until TCP gives up: call it with t.Cleanup after the lab is built.
func (l *Lab) KillSSHSessions() {
	b, err := os.ReadFile(filepath.Join(l.Dir, "ssh", "sshd.pid"))
	if err != nil {
		return
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		return
	}
	for _, child := range childrenOf(pid) {
		syscall.Kill(child, syscall.SIGKILL)
	}
}
