package server

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"
)

// TestCertReload: a TLS listener serving through certReloader hands out
// the new certificate once the files change, keeps the previous one while a
// change does not load, and takes a later good change.
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir)
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.checkEvery = 0 // look at the files on every handshake
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	served := func() []byte {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Raw
	}
	pemCert := func() []byte {
		b, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := served()
	later := time.Now().Add(time.Minute)
	touch := func() {
		for _, f := range []string{certFile, keyFile} {
			if err := os.Chtimes(f, later, later); err != nil {
				t.Fatal(err)
			}
		}
		later = later.Add(time.Minute)
	}

	// Renewed: a new key pair in the same files.
	firstPEM := pemCert()
	writeCert(t, dir)
	touch()
	second := served()
	if bytes.Equal(first, second) {
		t.Fatal("the old certificate is still served after the files changed")
	}

	// Half written: the certificate of one key, the key of another. The
	// certificate in service stays.
	goodPEM := pemCert()
	if err := os.WriteFile(certFile, firstPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	touch()
	if got := served(); !bytes.Equal(got, second) {
		t.Fatal("a mismatched pair replaced the certificate in service")
	}

	// Fixed: the good pair loads.
	if err := os.WriteFile(certFile, goodPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	writeCert(t, dir)
	touch()
	if got := served(); bytes.Equal(got, second) || bytes.Equal(got, first) {
		t.Fatal("the repaired pair was not loaded")
	}
}
