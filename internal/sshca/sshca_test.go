package sshca

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

func newKey(t *testing.T) (ssh.Signer, ssh.PublicKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, s.PublicKey()
}

func TestSign(t *testing.T) {
	ca, caPub := newKey(t)
	_, user := newKey(t)
	now := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	deadline := now.Add(time.Hour)
	base := Request{PublicKey: user, Logins: []string{"ubuntu", "deploy"}, RequestID: "r-42", Principal: "alice", Now: now, NotAfter: deadline}
	tests := []struct {
		name    string
		mod     func(*Request)
		wantErr string
	}{
		{"two logins", func(*Request) {}, ""},
		{"one login", func(r *Request) { r.Logins = []string{"root"} }, ""},
		{"no logins", func(r *Request) { r.Logins = nil }, "no login names"},
		{"comma in login", func(r *Request) { r.Logins = []string{"a,b"} }, "not a POSIX user name"},
		{"control character", func(r *Request) { r.Logins = []string{"a\nb"} }, "not a POSIX user name"},
		{"wildcard", func(r *Request) { r.Logins = []string{"*"} }, "not a POSIX user name"},
		{"leading hyphen", func(r *Request) { r.Logins = []string{"-oProxy"} }, "not a POSIX user name"},
		{"too long", func(r *Request) { r.Logins = []string{strings.Repeat("a", 33)} }, "not a POSIX user name"},
		{"deadline passed", func(r *Request) { r.NotAfter = now }, "deadline has passed"},
		{"no request id", func(r *Request) { r.RequestID = "" }, "no request id"},
		{"no key", func(r *Request) { r.PublicKey = nil }, "no public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := base
			tc.mod(&req)
			cert, err := Sign(ca, req, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Sign = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cert.CertType != ssh.UserCert {
				t.Errorf("type %d, want user certificate", cert.CertType)
			}
			if !slices.Equal(cert.ValidPrincipals, req.Logins) {
				t.Errorf("principals %q, want %q", cert.ValidPrincipals, req.Logins)
			}
			if cert.KeyId != "jitgate:req=r-42:principal=alice" {
				t.Errorf("key id %q", cert.KeyId)
			}
			if got, want := time.Unix(int64(cert.ValidBefore), 0), deadline; !got.Equal(want) {
				t.Errorf("valid before %v, want the grant's deadline %v", got, want)
			}
			if got := time.Unix(int64(cert.ValidAfter), 0); !got.Equal(now.Add(-Backdate)) {
				t.Errorf("valid after %v", got)
			}
			if len(cert.CriticalOptions) != 0 {
				t.Errorf("critical options %v, want none", cert.CriticalOptions)
			}
			want := map[string]string{"permit-pty": "", "permit-user-rc": ""}
			if len(cert.Extensions) != len(want) {
				t.Errorf("extensions %v, want %v", cert.Extensions, want)
			}
			for _, forbidden := range []string{"permit-agent-forwarding", "permit-port-forwarding", "permit-X11-forwarding"} {
				if _, ok := cert.Extensions[forbidden]; ok {
					t.Errorf("extension %s present", forbidden)
				}
			}
			// What sshd does with it: the checker accepts it for a listed
			// login inside the validity, refuses it otherwise.
			checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool {
				return string(k.Marshal()) == string(caPub.Marshal())
			}}
			check := func(login string, at time.Time) error {
				checker.Clock = func() time.Time { return at }
				return checker.CheckCert(login, cert)
			}
			if err := check(req.Logins[0], now); err != nil {
				t.Errorf("valid login refused: %v", err)
			}
			if err := check("nobody", now); err == nil {
				t.Error("a login not in the rule accepted")
			}
			if err := check(req.Logins[0], deadline.Add(time.Second)); err == nil {
				t.Error("accepted after the grant's deadline")
			}
			if err := check(req.Logins[0], now.Add(-2*Backdate)); err == nil {
				t.Error("accepted before it was valid")
			}
		})
	}
}

func TestSignErrors(t *testing.T) {
	ca, _ := newKey(t)
	_, user := newKey(t)
	now := time.Now()
	_, err := Sign(ca, Request{PublicKey: user, RequestID: "r", Now: now, NotAfter: now.Add(time.Hour)}, nil)
	if !errors.Is(err, ErrNoLogins) {
		t.Errorf("no logins: %v, want ErrNoLogins", err)
	}
	_, err = Sign(ca, Request{PublicKey: user, Logins: []string{"u"}, RequestID: "r", Now: now, NotAfter: now.Add(-time.Second)}, nil)
	if !errors.Is(err, ErrExpired) {
		t.Errorf("expired: %v, want ErrExpired", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	s1, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if s1.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type %s, want ed25519", s1.PublicKey().Type())
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	s2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(s1.PublicKey().Marshal()) != string(s2.PublicKey().Marshal()) {
		t.Error("a second start made a new key")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v, want a refusal", err)
	}
}
