package testlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/wire"
)

// A bastion lab: the client reaches only the jitgate server; the target,
// with a real sshd and the agent, sits on another link of the server's host,
// which does not forward. The client has no route to the target at all: the
// only way in is the bastion relay (the agent dials out to the server).
//
//	client                  server (no forwarding)          target
//	192.0.2.1  ──eth0       192.0.2.2   eth1──              198.51.100.10
//	                        198.51.100.254                  agent, sshd :22
var BastionTarget = netip.MustParseAddr("198.51.100.10")

// BastionServerInside is the server's address on the target's link.
var BastionServerInside = netip.MustParseAddr("198.51.100.254")

// BastionLab is the bastion topology. Its embedded Lab has the client as
// ClientNS and the jitgate server's host as ServerNS, so StartServer, CLI
// and Eventually work on it.
type BastionLab struct {
	*Lab
	Target *testenv.Netns
}

// NewBastion builds the bastion lab and starts sshd on the target. It skips
// (or under CI fails) tb without root or tools.
func NewBastion(tb testing.TB) *BastionLab {
	tb.Helper()
	testenv.RequireKernel(tb)
	for _, tool := range []string{"sshd", "ssh", "ssh-keygen"} {
		testenv.RequireTool(tb, tool)
	}
	if binary == "" {
		tb.Fatal("testlab: no jitgate binary; call testlab.Run from TestMain")
	}
	b := &BastionLab{Lab: &Lab{tb: tb, ClientNS: testenv.NewNetns(tb), ServerNS: testenv.NewNetns(tb), Dir: tb.TempDir(), Binary: binary},
		Target: testenv.NewNetns(tb)}
	testenv.NewLink(tb,
		testenv.LinkEnd{NS: b.ClientNS, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(Client1, 24)}},
		testenv.LinkEnd{NS: b.ServerNS, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(ServerIP, 24)}})
	testenv.NewLink(tb,
		testenv.LinkEnd{NS: b.ServerNS, Name: "eth1", Addrs: []netip.Prefix{netip.PrefixFrom(BastionServerInside, 24)}},
		testenv.LinkEnd{NS: b.Target, Name: "eth0", Addrs: []netip.Prefix{netip.PrefixFrom(BastionTarget, 24)}})
	g := &GatewayLab{Lab: b.Lab}
	g.makeSSHKey()
	g.startSSHDIn(b.Target, "target")
	b.Eventually("sshd listening on the target", 5*time.Second, func() bool {
		d := &net.Dialer{Timeout: 300 * time.Millisecond}
		c, err := b.Target.DialContext(context.Background(), d, "tcp", "127.0.0.1:22")
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return b
}

// StartTargetAgent starts (or restarts) the agent on the target, talking to
// the server over the target's link; enrollToken is needed only the first
// time.
func (b *BastionLab) StartTargetAgent(enrollToken string, extra ...string) {
	b.tb.Helper()
	args := []string{"agent", "--server", fmt.Sprintf("http://%s:%d", BastionServerInside, APIPort), "--insecure-http",
		"--state-dir", filepath.Join(b.Dir, "agent")}
	args = append(args, extra...)
	if enrollToken != "" {
		args = append(args, "--enroll-token", enrollToken)
	}
	b.Agent = b.Start(b.Target, "jitgate agent", b.Binary, args...)
}

// ClientReaches reports whether the client can open a TCP connection to
// addr:port directly (within 300 ms).
func (b *BastionLab) ClientReaches(addr netip.Addr, port uint16) bool {
	d := &net.Dialer{Timeout: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	c, err := b.ClientNS.DialContext(ctx, d, "tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// SSHOptions are the ssh options for the lab's key and throwaway host keys.
func (b *BastionLab) SSHOptions() []string {
	return []string{"-i", b.SSHKey, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"}
}

// ClientEnv is the environment of a client-side process: the server and
// the admin token.
func (b *BastionLab) ClientEnv() []string {
	return []string{"JITGATE_SERVER=" + ServerURL, "JITGATE_TOKEN=" + b.Token, "HOME=" + b.Dir}
}

// StartCertSSHD starts a second sshd on the target, on port, that trusts the
// user certificates of the CA key in file trustedCA (TrustedUserCAKeys) and
// has no authorized_keys at all: only a certificate logs in. Its host key is
// returned (the public key line).
func (b *BastionLab) StartCertSSHD(port uint16, trustedCA string) string {
	b.tb.Helper()
	d := filepath.Join(b.Dir, fmt.Sprintf("sshd-cert-%d", port))
	if err := os.MkdirAll(d, 0o700); err != nil {
		b.tb.Fatal(err)
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(d, "host_ed25519")).CombinedOutput(); err != nil {
		b.tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	conf := fmt.Sprintf(`Port %[2]d
ListenAddress 127.0.0.1
HostKey %[1]s/host_ed25519
AuthorizedKeysFile none
TrustedUserCAKeys %[3]s
PidFile %[1]s/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
LogLevel VERBOSE
`, d, port, trustedCA)
	if err := os.WriteFile(filepath.Join(d, "sshd_config"), []byte(conf), 0o600); err != nil {
		b.tb.Fatal(err)
	}
	os.MkdirAll("/run/sshd", 0o755)
	p := b.Start(b.Target, fmt.Sprintf("sshd :%d", port), "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(d, "sshd_config"))
	b.tb.Cleanup(func() {
		for _, pid := range childrenOf(p.Pid()) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	b.Eventually(fmt.Sprintf("sshd listening on the target's port %d", port), 5*time.Second, func() bool {
		dl := &net.Dialer{Timeout: 300 * time.Millisecond}
		c, err := b.Target.DialContext(context.Background(), dl, "tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	pub, err := os.ReadFile(filepath.Join(d, "host_ed25519.pub"))
	if err != nil {
		b.tb.Fatal(err)
	}
	return string(pub)
}

// CertTarget is a target of the bastion lab whose sshd admits jitgate's
// SSH certificates only (StartCertTarget).
type CertTarget struct {
	// CAFile is where the agent writes the CA's public key, which the
	// sshd trusts (TrustedUserCAKeys).
	CAFile string
	// HostKeyFile is the sshd's host public key, which the agent reports.
	HostKeyFile string
}

// StartCertTarget makes target name (with labels) through c, starts an sshd
// on the target's port that trusts only jitgate's SSH CA (StartCertSSHD),
// starts the target's agent installing the CA key and reporting that
// sshd's host key, sets policy, and waits until the agent did both.
func (b *BastionLab) StartCertTarget(c *client.Client, name string, labels map[string]string, port uint16, policy wire.Policy) CertTarget {
	b.tb.Helper()
	ctx := context.Background()
	ct := CertTarget{CAFile: filepath.Join(b.Dir, "jitgate_user_ca.pub"),
		HostKeyFile: filepath.Join(b.Dir, fmt.Sprintf("sshd-cert-%d", port), "host_ed25519.pub")}
	b.StartCertSSHD(port, ct.CAFile)
	tg, err := c.CreateTarget(ctx, wire.TargetCreate{Name: name, Labels: labels})
	if err != nil {
		b.tb.Fatal(err)
	}
	b.StartTargetAgent(tg.EnrollToken, "--ssh-trusted-ca", ct.CAFile, "--ssh-host-keys", ct.HostKeyFile)
	if _, err := c.SetPolicy(ctx, name, policy); err != nil {
		b.tb.Fatal(err)
	}
	b.Eventually("the agent installed the CA key and reported the host key", 10*time.Second, func() bool {
		_, err := os.Stat(ct.CAFile)
		t, terr := c.Target(ctx, name)
		return err == nil && terr == nil && t.Inventory != nil && len(t.Inventory.SSHHostKeys) == 1
	})
	return ct
}
