package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testenv"
	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestBastionGatewayRDP reaches, through the bastion, a real RDP server
// (Debian's xrdp) on a target behind a gateway that runs no agent, from a
// client that has no route to the target: `jitgate rdp` asks for the grant
// and opens the local tunnel, the gateway's agent dials the target's
// address from its policy, and an RDP client completes the X.224
// negotiation (RDP_NEG_RSP selecting TLS) and the TLS handshake with
// xrdp's own certificate. The session is listed with bytes both ways. A
// tunnel to a port the policy does not name, or to one without a grant, is
// refused; revoking the grant closes a live RDP connection.
func TestBastionGatewayRDP(t *testing.T) {
	for _, tool := range []string{"xrdp", "xfreerdp", "Xvfb"} {
		testenv.RequireTool(t, tool)
	}
	t.Parallel()
	g := testlab.NewGateway(t)
	server := fmt.Sprintf("http://%s:%d", gwPublic, testlab.APIPort)
	data := filepath.Join(g.Dir, "server")
	g.Start(g.Gateway, "jitgate server", g.Binary, "server", "--listen", fmt.Sprintf("0.0.0.0:%d", testlab.APIPort),
		"--data-dir", data, "--activation-timeout", "5s")
	g.Eventually("server healthy", 10*time.Second, func() bool { return g.CanDial(client1, gwPublic, testlab.APIPort) })
	tok, err := os.ReadFile(filepath.Join(data, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	g.Token = strings.TrimSpace(string(tok))
	cli := func(args ...string) []string { return append(args, "--server", server) }
	run := func(args ...string) string { t.Helper(); return g.CLI(cli(args...)...) }

	var gw wire.TargetCreated
	testlab.CLIJSONInto(g.Lab, &gw, cli("target", "add", "gw-1", "--public-address", gwPublic.String())...)
	g.Start(g.Gateway, "jitgate agent (gateway)", g.Binary, "agent", "--mode", "gateway", "--resync", "2s",
		"--server", fmt.Sprintf("http://127.0.0.1:%d", testlab.APIPort), "--enroll-token", gw.EnrollToken, "--state-dir", filepath.Join(g.Dir, "agent"))
	g.Eventually("the gateway reports its routes", 10*time.Second, func() bool {
		var tg wire.Target
		testlab.CLIJSONInto(g.Lab, &tg, cli("target", "show", "gw-1")...)
		return tg.Mode == "gateway" && tg.Inventory != nil && len(tg.Inventory.Routes) > 0
	})

	// xrdp on target 1, with its own configuration and certificate.
	certPEM := startXRDP(t, g)
	block, _ := pem.Decode(certPEM)

	run("target", "add", "win-01", "--gateway", "gw-1", "--address", target1.String())
	run("policy", "set", "win-01", "--port", "3389/tcp", "--port", "22/tcp", "--max", "1h", "--access", "bastion")

	// The client has no route to the target: only its own link (where the
	// server is) remains.
	g.ClientNS.Run(t, "ip", "route", "del", "default")
	g.ClientNS.Run(t, "ip", "-6", "route", "del", "default")
	if g.CanDial(client1, target1, 3389) {
		t.Fatal("the client reaches the target's RDP port directly")
	}

	// jitgate rdp asks for the grant, opens the tunnel and prints the line.
	local := "127.0.0.1:33890"
	rdp := g.ClientNS.Command(context.Background(), g.Binary, cli("rdp", "win-01", "--duration", "10m", "--reason", "e2e rdp",
		"--local", local, "--print")...)
	rdp.Env = append(os.Environ(), "JITGATE_TOKEN="+g.Token, "HOME="+g.Dir)
	var rdpErr bytes.Buffer
	rdp.Stderr = &rdpErr
	out, err := rdp.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdp.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdp.Process.Kill(); rdp.Wait() })
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := regexp.MustCompile(`^xfreerdp /v:` + regexp.QuoteMeta(local) + `$`)
	deadline := time.After(30 * time.Second)
	for printed := false; !printed; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("jitgate rdp ended before printing the client's line; stderr: %s", rdpErr.String())
			}
			printed = want.MatchString(l)
		case <-deadline:
			t.Fatalf("jitgate rdp printed no client line; stderr: %s", rdpErr.String())
		}
	}

	// An RDP client through the tunnel: negotiation, then TLS with xrdp.
	tc := rdpTLS(t, g, local, block.Bytes)
	var ss []wire.BastionSession
	testlab.CLIJSONInto(g.Lab, &ss, cli("sessions", "--active")...)
	if len(ss) != 1 || ss[0].Target != "win-01" || ss[0].Port != "3389/tcp" {
		t.Fatalf("live sessions %+v, want one on win-01 3389/tcp", ss)
	}
	tc.Close()
	g.Eventually("the ended session is recorded with bytes both ways", 10*time.Second, func() bool {
		var ss []wire.BastionSession
		testlab.CLIJSONInto(g.Lab, &ss, cli("sessions")...)
		return len(ss) == 1 && ss[0].State != "live" && ss[0].BytesIn > 0 && ss[0].BytesOut > 0
	})

	// The real RDP client, started by jitgate rdp on a tunnel of its own
	// (a free local port, the grant already live): xfreerdp /auth-only
	// with TLS security connects, negotiates and completes TLS with xrdp,
	// then stops. xrdp has no NLA: it checks a password only after the
	// connection, in its login screen (xrdp-sesman, PAM and an X session),
	// so /auth-only cannot prove a login here; the RDP handshake above and
	// this exit status prove the path.
	display := startXvfb(t, g)
	xf := g.ClientNS.Command(context.Background(), g.Binary, cli("rdp", "win-01",
		"--rdp-option", "/auth-only", "--rdp-option", "/sec:tls", "--rdp-option", "/cert:ignore",
		"--rdp-option", "/u:e2e", "--rdp-option", "/p:e2e")...)
	xf.Env = append(os.Environ(), "JITGATE_TOKEN="+g.Token, "HOME="+g.Dir, "DISPLAY="+display)
	xfOut, err := xf.CombinedOutput()
	if err != nil || !strings.Contains(string(xfOut), "Authentication only, exit status 0") {
		t.Fatalf("jitgate rdp with xfreerdp /auth-only: %v\n%s", err, xfOut)
	}
	g.Eventually("xfreerdp's session is recorded", 10*time.Second, func() bool {
		var ss []wire.BastionSession
		testlab.CLIJSONInto(g.Lab, &ss, cli("sessions")...)
		return len(ss) == 2 && ss[0].State != "live" && ss[0].BytesIn > 0 && ss[0].BytesOut > 0
	})

	// A port the policy does not name is refused by the server, and so is
	// one it names but for which the principal holds no grant.
	for _, tc := range []struct{ port, why string }{
		{"445", "does not configure this port"},
		{"22", "holds no active grant"},
	} {
		_, stderr, err := g.CLIResult(cli("connect", "win-01", "--port", tc.port, "--stdio")...)
		if err == nil || !strings.Contains(stderr, tc.why) {
			t.Errorf("tunnel to win-01 port %s: err=%v stderr=%q; want a refusal saying %q", tc.port, err, stderr, tc.why)
		}
	}

	// Revoking the grant ends a live RDP session through the gateway: the
	// client sees its TLS connection close.
	tc = rdpTLS(t, g, local, block.Bytes)
	defer tc.Close()
	var rs []wire.Request
	testlab.CLIJSONInto(g.Lab, &rs, cli("requests", "--target", "win-01", "--active")...)
	if len(rs) != 1 {
		t.Fatalf("active requests on win-01: %+v, want the rdp grant", rs)
	}
	run("revoke", rs[0].ID, "--yes", "--reason", "e2e revoke")
	// xrdp waits for the client's next PDU: a read ends only when the
	// tunnel does (rdpTLS's deadline bounds the wait).
	if _, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the RDP connection is still open after the revocation: %v", err)
	}
	g.Eventually("the session is recorded as revoked", 10*time.Second, func() bool {
		var ss []wire.BastionSession
		testlab.CLIJSONInto(g.Lab, &ss, cli("sessions")...)
		return len(ss) == 3 && ss[0].State != "live" && ss[0].EndReason == "revoked"
	})
	rdp.Process.Kill()
}

// startXvfb runs a virtual X display in the client namespace for xfreerdp
// (which opens one even for /auth-only) and returns its DISPLAY. Xvfb picks
// a free display number and writes it on fd 3.
func startXvfb(t *testing.T, g *testlab.GatewayLab) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	x := g.ClientNS.Command(context.Background(), "Xvfb", "-displayfd", "3", "-nolisten", "tcp", "-screen", "0", "800x600x24")
	x.ExtraFiles = []*os.File{w}
	var xout bytes.Buffer
	x.Stdout, x.Stderr = &xout, &xout
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { x.Process.Kill(); x.Wait() })
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("Xvfb wrote no display number: %v\n%s", err, xout.String())
	}
	return ":" + strings.TrimSpace(line)
}

// rdpTLS connects to addr in the client namespace, negotiates TLS the RDP
// way and completes the TLS handshake, checking that the server presents
// the certificate certDER. The connection's deadline is 15 s away.
func rdpTLS(t *testing.T, g *testlab.GatewayLab, addr string, certDER []byte) *tls.Conn {
	t.Helper()
	c, err := g.ClientNS.DialContext(context.Background(), &net.Dialer{Timeout: 5 * time.Second}, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if err := rdpNegotiateTLS(c); err != nil {
		c.Close()
		t.Fatal(err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.Close()
		t.Fatalf("TLS handshake with the RDP server: %v", err)
	}
	if peer := tc.ConnectionState().PeerCertificates; len(peer) == 0 || !bytes.Equal(peer[0].Raw, certDER) {
		c.Close()
		t.Fatal("the TLS peer is not the target's xrdp (another certificate)")
	}
	return tc
}

// rdpNegotiateTLS sends an X.224 Connection Request carrying an RDP
// Negotiation Request for PROTOCOL_SSL ([MS-RDPBCGR] 2.2.1.1) and checks
// that the answer is a Connection Confirm carrying an RDP Negotiation
// Response that selects it (2.2.1.2).
func rdpNegotiateTLS(c io.ReadWriter) error {
	const protocolSSL = 0x00000001
	negReq := []byte{0x01, 0x00, 0x08, 0x00, 0, 0, 0, 0} // TYPE_RDP_NEG_REQ, flags, length 8
	binary.LittleEndian.PutUint32(negReq[4:], protocolSSL)
	x224 := append([]byte{byte(6 + len(negReq)), 0xE0, 0, 0, 0, 0, 0}, negReq...) // LI, CR, dst-ref, src-ref, class 0
	tpkt := append([]byte{3, 0, 0, 0}, x224...)
	binary.BigEndian.PutUint16(tpkt[2:], uint16(len(tpkt)))
	if _, err := c.Write(tpkt); err != nil {
		return fmt.Errorf("sending the X.224 Connection Request: %w", err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return fmt.Errorf("reading the X.224 Connection Confirm: %w", err)
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if hdr[0] != 3 || n < 4+7+8 || n > 64 {
		return fmt.Errorf("not a TPKT answer: % x", hdr)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(c, body); err != nil {
		return fmt.Errorf("reading the X.224 Connection Confirm: %w", err)
	}
	if body[1]&0xF0 != 0xD0 {
		return fmt.Errorf("X.224 TPDU code %#x, want Connection Confirm (0xd0)", body[1])
	}
	neg := body[7:]
	switch neg[0] {
	case 0x02: // TYPE_RDP_NEG_RSP
		if sel := binary.LittleEndian.Uint32(neg[4:8]); sel != protocolSSL {
			return fmt.Errorf("the server selected protocol %#x, want PROTOCOL_SSL", sel)
		}
		return nil
	case 0x03:
		return fmt.Errorf("the server answered RDP_NEG_FAILURE code %d", binary.LittleEndian.Uint32(neg[4:8]))
	}
	return fmt.Errorf("unexpected negotiation answer type %#x", neg[0])
}

// startXRDP runs xrdp in target 1's namespace, in the foreground, with a
// configuration and a fresh certificate in a temporary directory (TLS
// security only), and waits until it listens on 3389. It returns the
// certificate (PEM).
func startXRDP(t *testing.T, g *testlab.GatewayLab) []byte {
	t.Helper()
	dir := filepath.Join(g.Dir, "xrdp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "win-01"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	certFile, keyFile, ini := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "xrdp.ini")
	for f, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, ini: []byte(fmt.Sprintf(`[Globals]
ini_version=1
fork=false
port=tcp://:3389
use_vsock=false
tcp_nodelay=true
security_layer=tls
crypt_level=high
certificate=%s
key_file=%s
ssl_protocols=TLSv1.2, TLSv1.3
autorun=
allow_channels=true
[Logging]
LogFile=%s
LogLevel=INFO
EnableSyslog=false
EnableConsole=true
ConsoleLevel=INFO
[Xorg]
name=Xorg
lib=libxup.so
username=ask
password=ask
ip=127.0.0.1
port=-1
code=20
`, certFile, keyFile, filepath.Join(dir, "xrdp.log")))} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	g.Start(g.T1, "xrdp", "xrdp", "--nodaemon", "--config", ini)
	g.Eventually("xrdp listening", 10*time.Second, func() bool {
		c, err := g.T1.DialContext(context.Background(), &net.Dialer{Timeout: 300 * time.Millisecond}, "tcp", "127.0.0.1:3389")
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	return certPEM
}
