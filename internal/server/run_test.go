package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "jitgate test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, key
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRunTLSAndFirstToken starts the real server with TLS and checks the
// first-start admin token: a 0600 file whose path, never the token, is
// logged, that authenticates over TLS, and that is not recreated on restart.
func TestRunTLSAndFirstToken(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	data := filepath.Join(dir, "data")
	var logs lockedBuffer
	start := func() (string, context.CancelFunc, <-chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Config{Listen: "127.0.0.1:0", DataDir: data, TLSCert: cert, TLSKey: key,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)), Ready: func(a string) { ready <- a }})
		}()
		select {
		case addr := <-ready:
			return addr, cancel, done
		case err := <-done:
			cancel()
			t.Fatalf("server stopped at start: %v", err)
		case <-time.After(10 * time.Second):
			cancel()
			t.Fatal("server did not start")
		}
		return "", cancel, done
	}
	addr, stop, done := start()
	tokenPath := filepath.Join(data, AdminTokenFile)
	fi, err := os.Stat(tokenPath)
	if err != nil {
		t.Fatalf("admin token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(tokenPath)
	token := strings.TrimSpace(string(raw))
	if !strings.Contains(logs.String(), tokenPath) {
		t.Errorf("the log does not name the token file %s:\n%s", tokenPath, logs.String())
	}
	if strings.Contains(logs.String(), token) {
		t.Fatal("the admin token appears in the log")
	}

	c, err := client.New("https://"+addr, token, client.WithCAFile(cert))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"}); err != nil {
		t.Fatalf("creating a target over TLS: %v", err)
	}
	plain, _ := client.New("https://"+addr, token)
	if err := plain.Health(ctx); err == nil {
		t.Fatal("a client that does not trust the certificate connected")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("server stopped with %v", err)
	}

	// Restart: same token file, state kept, no second admin token.
	addr, stop, done = start()
	defer func() { stop(); <-done }()
	raw2, _ := os.ReadFile(tokenPath)
	if string(raw2) != string(raw) {
		t.Fatal("the admin token file changed on restart")
	}
	c, _ = client.New("https://"+addr, token, client.WithCAFile(cert))
	ts, err := c.Targets(ctx)
	if err != nil || len(ts) != 1 || ts[0].Name != "web-01" {
		t.Fatalf("after restart: targets %v, %v; want web-01", ts, err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no data dir", Config{}, "data-dir"},
		{"cert without key", Config{DataDir: "x", TLSCert: "c"}, "tls-cert and tls-key"},
		{"activation too short", Config{DataDir: "x", ActivationTimeout: time.Millisecond}, "activation-timeout"},
		{"poll wait too long", Config{DataDir: "x", AgentPollWait: time.Minute}, "agent-poll-wait"},
		{"gather delay too long", Config{DataDir: "x", WriteGatherDelay: 11 * time.Millisecond}, "write-gather-delay"},
		{"gather delay negative", Config{DataDir: "x", WriteGatherDelay: -time.Millisecond}, "write-gather-delay"},
		{"database not PostgreSQL", Config{DataDir: "x", Database: "/var/lib/jitgate/jitgate.db"}, "database: not a postgres://"},
		{"contact a script URL", Config{DataDir: "x", Contact: "javascript:alert(1)"}, "contact: \"javascript:alert(1)\": a URL must be"},
		{"contact a data URL", Config{DataDir: "x", Contact: "data:text/html,x"}, "contact:"},
		{"contact with a bidi override", Config{DataDir: "x", Contact: "ops\u202e@example.com"}, "contact: holds the control or formatting character U+202E"},
		{"contact with a newline", Config{DataDir: "x", Contact: "ops\nsecond line"}, "contact: holds the control"},
		{"contact too long", Config{DataDir: "x", Contact: strings.Repeat("a", 201)}, "contact: 201 characters; at most 200"},
		{"contact URL without host", Config{DataDir: "x", Contact: "https:///help"}, "contact: \"https:///help\" has no host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// withDefaults fills only zero fields, so the bad ones survive.
			cfg := tc.cfg.withDefaults()
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}
