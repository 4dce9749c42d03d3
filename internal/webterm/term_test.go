package webterm

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func newSigner(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

// TestHostKeyCallback: only the reported keys pass; another key is a
// *HostKeyError naming both fingerprints.
func TestHostKeyCallback(t *testing.T) {
	good, _ := newSigner(t)
	other, _ := newSigner(t)
	cb := hostKeyCallback([]ssh.PublicKey{good.PublicKey()})
	if err := cb("target", nil, good.PublicKey()); err != nil {
		t.Fatalf("the reported key: %v", err)
	}
	err := cb("target", nil, other.PublicKey())
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Got != ssh.FingerprintSHA256(other.PublicKey()) || len(hk.Known) != 1 ||
		!strings.Contains(err.Error(), ssh.FingerprintSHA256(good.PublicKey())) {
		t.Fatalf("another key: %v", err)
	}
	c1, c2 := net.Pipe()
	defer c2.Close()
	if _, err := Dial(c1, "root", nil, nil); !errors.As(err, &hk) || !strings.Contains(err.Error(), "no trust on first use") {
		t.Fatalf("no reported keys: %v", err)
	}
}

// TestSecretsStayOut: a start printed by mistake shows no secret, and a bad
// key's error does not quote it.
func TestSecretsStayOut(t *testing.T) {
	s := Start{Type: TypeStart, Auth: AuthPassword, Password: "hunter2-secret", PrivateKey: "-----BEGIN key-secret", Passphrase: "pp-secret", Cols: 80, Rows: 24}
	for _, out := range []string{s.String(), fmt.Sprint(s), fmt.Sprintf("%v", s)} {
		if strings.Contains(out, "secret") {
			t.Errorf("printed start %q shows a secret", out)
		}
	}
	_, priv := newSigner(t)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("right-pass"))
	if err != nil {
		t.Fatal(err)
	}
	encrypted := string(pem.EncodeToMemory(block))
	for _, tt := range []struct {
		name string
		s    Start
		want string
	}{
		{"no password", Start{Auth: AuthPassword}, "no password"},
		{"no key", Start{Auth: AuthKey}, "no private key"},
		{"not a key", Start{Auth: AuthKey, PrivateKey: "key-secret-material"}, "not a private key"},
		{"encrypted, no passphrase", Start{Auth: AuthKey, PrivateKey: encrypted}, "give its passphrase"},
		{"wrong passphrase", Start{Auth: AuthKey, PrivateKey: encrypted, Passphrase: "wrong-secret"}, "not a private key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.s.UserAuth()
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "secret") {
				t.Fatalf("%v: want %q and no secret", err, tt.want)
			}
		})
	}
	if m, err := (Start{Auth: AuthKey, PrivateKey: encrypted, Passphrase: "right-pass"}).UserAuth(); err != nil || len(m) != 1 {
		t.Fatalf("the right passphrase: %v", err)
	}
	if m, err := (Start{Auth: AuthPassword, Password: "pw"}).UserAuth(); err != nil || len(m) != 2 {
		t.Fatalf("a password gives password and keyboard-interactive: %d, %v", len(m), err)
	}
}

func TestClampSize(t *testing.T) {
	for _, tt := range []struct{ c, r, wc, wr int }{
		{0, 0, 80, 24}, {-5, 10, 80, 10}, {100, 40, 100, 40}, {5000, 5000, MaxCols, MaxRows},
	} {
		if c, r := clampSize(tt.c, tt.r); c != tt.wc || r != tt.wr {
			t.Errorf("clampSize(%d, %d) = %d, %d; want %d, %d", tt.c, tt.r, c, r, tt.wc, tt.wr)
		}
	}
}
