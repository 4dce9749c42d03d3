package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestSSHCertificateLogin proves SSH certificates end to end: the agent
// (--ssh-trusted-ca) installs the server's CA key, a real sshd trusts it
// with TrustedUserCAKeys and has no authorized_keys at all; jitgate ssh logs
// in with a certificate of an ephemeral key; a login the rule does not name
// is refused by the server; after revocation the same certificate no longer
// logs in (and no new one is signed).
func TestSSHCertificateLogin(t *testing.T) {
	b := testlab.NewBastion(t)
	l := &lab{Lab: b.Lab, t: t}
	l.startServer()
	caFile := filepath.Join(b.Dir, "jitgate_user_ca.pub")
	// The sshd trusts the CA file the agent writes (it reads it at each
	// login); the agent reports that sshd's host key.
	hostKey := b.StartCertSSHD(2022, caFile)
	hostKeyFile := filepath.Join(b.Dir, "sshd-cert-2022", "host_ed25519.pub")
	created := cliJSON[wire.TargetCreated](l, "target", "add", "web-01")
	agentArgs := []string{"--ssh-trusted-ca", caFile, "--ssh-host-keys", hostKeyFile}
	b.StartTargetAgent(created.EnrollToken, agentArgs...)
	l.eventually("the agent installed the CA key", 10*time.Second, func() bool {
		_, err := os.Stat(caFile)
		return err == nil
	})
	installed, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	ca := cliJSON[wire.SSHCA](l, "ssh-ca")
	if got, want := strings.Fields(string(installed)), strings.Fields(ca.PublicKey); len(got) < 2 || len(want) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("installed CA key %q, server's %q", installed, ca.PublicKey)
	}
	cliJSON[wire.PolicyResult](l, "policy", "set", "web-01", "--port", "2022/tcp", "--max", "1h", "--access", "bastion", "--login", "root")
	l.waitApplied("web-01")

	l.eventually("the agent reported the sshd's host key", 10*time.Second, func() bool {
		inv := cliJSON[wire.Target](l, "target", "show", "web-01").Inventory
		return inv != nil && len(inv.SSHHostKeys) == 1 && strings.HasPrefix(hostKey, inv.SSHHostKeys[0])
	})
	// No StrictHostKeyChecking or known_hosts options: jitgate ssh checks
	// the host key against what the agent reported, and nothing else.
	opts := []string{"--ssh-option", "BatchMode=yes", "--ssh-option", "LogLevel=ERROR"}
	t.Log("jitgate ssh logs in with a certificate: sshd holds no authorized key")
	var out, errOut string
	l.eventually("jitgate ssh logs in with its certificate", 15*time.Second, func() bool {
		out, errOut, err = l.cliResult(append(append([]string{"ssh", "root@web-01", "--port", "2022", "--duration", "10m", "--reason", "e2e cert"}, opts...),
			"--", "echo", "cert-login-ok")...)
		return err == nil
	})
	if !strings.Contains(out, "cert-login-ok") {
		t.Fatalf("jitgate ssh: stdout %q stderr %q", out, errOut)
	}
	reqs := cliJSON[[]wire.Request](l, "requests", "--active")
	if len(reqs) != 1 {
		t.Fatalf("active requests %+v, want one", reqs)
	}
	id := reqs[0].ID

	sshVia := func(extra ...string) (string, error) {
		args := append([]string{"-o", "ProxyCommand=" + b.Binary + " connect --stdio --port 2022 web-01", "-p", "2022",
			"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
			"-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"}, extra...)
		args = append(args, "root@web-01", "echo via-cert")
		cmd := b.ClientNS.Command(context.Background(), "ssh", args...)
		cmd.Env = append(os.Environ(), b.ClientEnv()...)
		o, err := cmd.CombinedOutput()
		return string(o), err
	}
	t.Log("the user's own key alone is refused by sshd (no authorized_keys): the certificate is what logs in")
	if o, err := sshVia("-i", b.SSHKey); err == nil {
		t.Fatalf("a plain key logged in: %s", o)
	}
	t.Log("a certificate for the user's own key, from jitgate ssh-certificate, logs in")
	key := filepath.Join(b.Dir, "user_ed25519")
	if o, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, o)
	}
	l.cli("ssh-certificate", id, "--key", key+".pub", "--port", "2022", "--login", "root")
	if o, err := sshVia("-i", key, "-o", "CertificateFile="+key+"-cert.pub"); err != nil || !strings.Contains(o, "via-cert") {
		t.Fatalf("login with the certificate: %v %s", err, o)
	}
	t.Log("a login the rule does not name is refused by the server")
	if _, errOut, err := l.cliResult("ssh-certificate", id, "--key", key+".pub", "--port", "2022", "--login", "nobody"); err == nil ||
		!strings.Contains(errOut, `login "nobody" is not one the rule names`) {
		t.Fatalf("certificate for login nobody: err %v, stderr %q", err, errOut)
	}
	if _, errOut, err := l.cliResult(append(append([]string{"ssh", "nobody@web-01", "--port", "2022"}, opts...), "--", "true")...); err == nil ||
		!strings.Contains(errOut, "not one the rule names") {
		t.Fatalf("jitgate ssh nobody@: err %v, stderr %q", err, errOut)
	}

	t.Log("a host key other than the one the agent reports is refused (no trust on first use)")
	other := filepath.Join(b.Dir, "other_host_ed25519")
	if o, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, o)
	}
	otherKey, err := os.ReadFile(other + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	b.Agent.Kill()
	b.StartTargetAgent("", "--ssh-trusted-ca", caFile, "--ssh-host-keys", other+".pub")
	l.eventually("the agent reports the other host key", 10*time.Second, func() bool {
		inv := cliJSON[wire.Target](l, "target", "show", "web-01").Inventory
		return inv != nil && len(inv.SSHHostKeys) == 1 && strings.HasPrefix(string(otherKey), inv.SSHHostKeys[0])
	})
	l.eventually("the agent's relay is back", 10*time.Second, func() bool {
		o, err := sshVia("-i", key, "-o", "CertificateFile="+key+"-cert.pub")
		return err == nil && strings.Contains(o, "via-cert")
	})
	out, errOut, err = l.cliResult(append(append([]string{"ssh", "root@web-01", "--port", "2022"}, opts...), "--", "echo", "must-not-run")...)
	if err == nil || strings.Contains(out, "must-not-run") || !strings.Contains(errOut, "Host key verification failed") {
		t.Fatalf("jitgate ssh with a host key the agent does not report: err %v, stdout %q, stderr %q", err, out, errOut)
	}

	t.Log("after revocation the same certificate no longer logs in, and no new one is signed")
	l.cli("revoke", id, "--yes", "--reason", "e2e revoke")
	if o, err := sshVia("-i", key, "-o", "CertificateFile="+key+"-cert.pub"); err == nil {
		t.Fatalf("the certificate logged in after revocation: %s", o)
	}
	if _, errOut, err := l.cliResult("ssh-certificate", id, "--key", key+".pub", "--port", "2022"); err == nil || !strings.Contains(errOut, "not active") {
		t.Fatalf("certificate after revocation: err %v, stderr %q", err, errOut)
	}
}
