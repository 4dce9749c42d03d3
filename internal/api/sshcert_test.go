package api_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

func newCASigner(tb testing.TB) ssh.Signer {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// userKeyLine is a fresh public key in authorized_keys form.
func userKeyLine(tb testing.TB) string {
	tb.Helper()
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newCASigner(tb).PublicKey())))
}

// TestSSHCertificate: the CA signs for the requester's own active grant on
// a port whose rule names the login, until the grant's deadline, with the
// request id in the key id; anything else is refused with a reason, and a
// revoked grant gets no more certificates.
func TestSSHCertificate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{
		{Port: 22, MaxDuration: wire.Duration(time.Hour), Access: "both", Logins: []string{"ubuntu", "deploy"}},
		{Port: 2222, MaxDuration: wire.Duration(time.Hour), Access: "both"},
	}})
	alice := e.requester(t, "alice2")
	r, err := alice.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22", "2222"}, Bastion: true,
		Duration: wire.Duration(30 * time.Minute), Reason: "x"})
	if err != nil {
		t.Fatal(err)
	}
	applyDesired(t, agent)
	if r, err = alice.Request(ctx, r.ID); err != nil || r.State != "active" {
		t.Fatalf("request: %v %s", err, r.State)
	}
	ca, err := alice.SSHCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	caKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ca.PublicKey))
	if err != nil {
		t.Fatalf("CA key %q: %v", ca.PublicKey, err)
	}
	if agentCA, err := agent.AgentSSHCA(ctx); err != nil || agentCA != ca {
		t.Errorf("the agent's CA key %v, %v; want %v", agentCA, err, ca)
	}

	key := userKeyLine(t)
	got, err := alice.SSHCertificate(ctx, r.ID, wire.SSHCertificateRequest{PublicKey: key, Login: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(got.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pk.(*ssh.Certificate)
	if !ok {
		t.Fatalf("answer is a %T, want a certificate", pk)
	}
	if string(cert.SignatureKey.Marshal()) != string(caKey.Marshal()) {
		t.Error("not signed by the CA the server shows")
	}
	if want := "jitgate:req=" + r.ID + ":principal=alice2"; cert.KeyId != want || got.KeyID != want {
		t.Errorf("key id %q, want %q", cert.KeyId, want)
	}
	if len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "deploy" {
		t.Errorf("principals %q, want [deploy]", cert.ValidPrincipals)
	}
	if before := time.Unix(int64(cert.ValidBefore), 0); !before.Equal(r.ExpiresAt.Truncate(time.Second)) {
		t.Errorf("valid before %v, want the grant's deadline %v", before, r.ExpiresAt)
	}
	if _, ok := cert.Extensions["permit-port-forwarding"]; ok {
		t.Error("port forwarding permitted")
	}
	// No login named: the rule's first.
	if got, err := alice.SSHCertificate(ctx, r.ID, wire.SSHCertificateRequest{PublicKey: key}); err != nil || len(got.Principals) != 1 || got.Principals[0] != "ubuntu" {
		t.Errorf("default login: %v %v, want [ubuntu]", got.Principals, err)
	}
	evs, err := e.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.SSHCertificateIssued)})
	if err != nil || len(evs) != 2 || evs[0].RequestID != r.ID || evs[0].Actor != "alice2" {
		t.Errorf("audit: %v %+v, want two %s events for %s", err, evs, audit.SSHCertificateIssued, r.ID)
	}

	certLine := got.Certificate
	bob := e.requester(t, "bob2")
	for _, tt := range []struct {
		name   string
		c      *client.Client
		in     wire.SSHCertificateRequest
		status int
		want   string
	}{
		{"login not in the rule", alice, wire.SSHCertificateRequest{PublicKey: key, Login: "root"}, http.StatusForbidden, `login "root" is not one the rule names`},
		{"bad login", alice, wire.SSHCertificateRequest{PublicKey: key, Login: "a b"}, http.StatusForbidden, "not one the rule names"},
		{"rule names no logins", alice, wire.SSHCertificateRequest{PublicKey: key, Port: 2222}, http.StatusConflict, "names no logins"},
		{"port not requested", alice, wire.SSHCertificateRequest{PublicKey: key, Port: 23}, http.StatusUnprocessableEntity, "does not grant 23/tcp"},
		{"someone else's request", bob, wire.SSHCertificateRequest{PublicKey: key}, http.StatusForbidden, "not bob2's own"},
		{"no key", alice, wire.SSHCertificateRequest{}, http.StatusUnprocessableEntity, "public_key: required"},
		{"garbage key", alice, wire.SSHCertificateRequest{PublicKey: "ssh-ed25519 !!!"}, http.StatusUnprocessableEntity, "not a public key"},
		{"certificate as key", alice, wire.SSHCertificateRequest{PublicKey: certLine}, http.StatusUnprocessableEntity, "certificate is not a key"},
		{"two keys", alice, wire.SSHCertificateRequest{PublicKey: key + "\n" + key}, http.StatusUnprocessableEntity, "one key only"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.c.SSHCertificate(ctx, r.ID, tt.in)
			if client.StatusOf(err) != tt.status || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v (status %d), want %d saying %q", err, client.StatusOf(err), tt.status, tt.want)
			}
		})
	}
	if _, err := alice.Revoke(ctx, r.ID, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SSHCertificate(ctx, r.ID, wire.SSHCertificateRequest{PublicKey: key}); client.StatusOf(err) != http.StatusConflict {
		t.Errorf("after revocation: %v, want 409", err)
	}
}

// TestAgentReportsHostKeys: the server stores the SSH host keys an agent
// reports per target, keeping only plain public keys (re-encoded, no
// comment), and shows them with the target's inventory.
func TestAgentReportsHostKeys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agent := e.addTarget(t, "web-01")
	good := userKeyLine(t)
	err := agent.Report(ctx, wire.AgentReport{Inventory: &wire.Inventory{SSHHostKeys: []string{
		good + " root@web-01", `command="sh" ` + good, "\x1b]0;owned\x07", "@cert-authority * " + good}}})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := e.c.Target(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if tg.Inventory == nil || len(tg.Inventory.SSHHostKeys) != 1 || tg.Inventory.SSHHostKeys[0] != good {
		t.Fatalf("stored host keys %+v, want only %q", tg.Inventory, good)
	}
}
