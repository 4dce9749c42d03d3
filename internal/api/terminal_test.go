package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/webterm"
	"github.com/jitgate/jitgate/internal/wire"
)

// sshTarget is an SSH server (x/crypto/ssh, in process: the e2e test uses
// OpenSSH) that trusts user certificates of ca and passwords "pw", and whose
// shell echoes each line it reads as "echo: LINE".
func sshTarget(t *testing.T, ca ssh.PublicKey, hostKey ssh.Signer) uint16 {
	t.Helper()
	checker := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), ca.Marshal()) }}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: checker.Authenticate,
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if string(pw) == "pw" {
				return nil, nil
			}
			return nil, fmt.Errorf("wrong password")
		},
	}
	cfg.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					c.Close()
					return
				}
				go ssh.DiscardRequests(reqs)
				for nc := range chans {
					ch, chReqs, err := nc.Accept()
					if err != nil {
						continue
					}
					go func() {
						for r := range chReqs {
							r.Reply(r.Type == "pty-req" || r.Type == "shell" || r.Type == "window-change", nil)
						}
					}()
					go func() {
						defer ch.Close()
						var line []byte
						b := make([]byte, 1)
						for {
							if _, err := ch.Read(b); err != nil {
								return
							}
							if b[0] == '\r' || b[0] == '\n' {
								fmt.Fprintf(ch, "\r\necho: %s\r\n", line)
								line = line[:0]
								continue
							}
							line = append(line, b[0])
						}
					}()
				}
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// termEnv is a server with an SSH CA, web-01 whose agent relays to an SSH
// target on port (rule logins ubuntu, deploy) and reports hostKeys, and
// alice2 holding an active bastion grant for it.
type termEnv struct {
	*env
	port  uint16
	alice string // alice2's token
	req   wire.Request
}

func newTermEnv(t *testing.T, reported ssh.PublicKey) *termEnv {
	t.Helper()
	ca := newCASigner(t)
	return termEnvOn(t, newEnvWith(t, func(d *api.Deps) { d.SSHCA = ca }), ca, newCASigner(t), reported)
}

// termEnvOn sets up termEnv's target and grant on e, whose SSH CA is ca; the
// target's host key is host.
func termEnvOn(t *testing.T, e *env, ca, host ssh.Signer, reported ssh.PublicKey) *termEnv {
	t.Helper()
	port := sshTarget(t, ca.PublicKey(), host)
	agent := bastionTarget(t, e, port, func(r *wire.PortRule) { r.Logins = []string{"ubuntu", "deploy"} })
	if reported == nil {
		reported = host.PublicKey()
	}
	inv := &wire.Inventory{SSHHostKeys: []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(reported)))}}
	if err := agent.Report(context.Background(), wire.AgentReport{Inventory: inv}); err != nil {
		t.Fatal(err)
	}
	relayAgent(t, e, agent)
	ctx := context.Background()
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:alice2", Role: authz.Requester, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	secret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice2", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req := grantBastion(t, e.c.WithToken(secret), port)
	applyDesired(t, agent)
	return &termEnv{env: e, port: port, alice: secret, req: req}
}

func (te *termEnv) path(login string) string {
	return fmt.Sprintf("/api/v1/requests/%s/terminal?port=%d&login=%s", te.req.ID, te.port, login)
}

// termConn is a terminal's WebSocket as a test drives it.
type termConn struct {
	ws      *websocket.Conn
	mu      sync.Mutex
	out     bytes.Buffer
	notices []string // the texts of notice controls
	end     chan webterm.Control
}

// dialTerm opens a terminal as token (bearer), sends start and collects
// what comes back.
func dialTerm(t *testing.T, te *termEnv, login string, start webterm.Start) *termConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(te.srv.URL, "http")+te.path(login),
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + te.alice}}})
	if err != nil {
		t.Fatalf("dial terminal: %v", err)
	}
	start.Type = webterm.TypeStart
	b, _ := json.Marshal(start)
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	tc := &termConn{ws: ws, end: make(chan webterm.Control, 1)}
	go func() {
		for {
			typ, b, err := ws.Read(context.Background())
			if err != nil {
				close(tc.end)
				return
			}
			if typ == websocket.MessageBinary {
				tc.mu.Lock()
				tc.out.Write(b)
				tc.mu.Unlock()
				continue
			}
			var c webterm.Control
			json.Unmarshal(b, &c)
			if c.Type == webterm.TypeNotice {
				tc.mu.Lock()
				tc.notices = append(tc.notices, c.Text)
				tc.mu.Unlock()
			}
			if c.Type == webterm.TypeEnd {
				tc.end <- c
			}
		}
	}()
	t.Cleanup(func() { ws.CloseNow() })
	return tc
}

func (tc *termConn) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tc.mu.Lock()
		ok := strings.Contains(tc.out.String(), want)
		tc.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("terminal output %q never showed %q", tc.out.String(), want)
}

func (tc *termConn) waitEnd(t *testing.T) webterm.Control {
	t.Helper()
	select {
	case c, ok := <-tc.end:
		if !ok {
			t.Fatal("the terminal closed without an end message")
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the terminal did not end")
	}
	return webterm.Control{}
}

// TestTerminalCertificateLogin: the server logs in with a certificate for the
// chosen login, the shell's output comes back, the session is listed as a
// terminal, and a kill ends it with a message naming the killer.
func TestTerminalCertificateLogin(t *testing.T) {
	te := newTermEnv(t, nil)
	tc := dialTerm(t, te, "ubuntu", webterm.Start{Auth: webterm.AuthCertificate, Cols: 100, Rows: 30})
	tc.waitOutput(t, "") // the connection is up
	if err := tc.ws.Write(context.Background(), websocket.MessageBinary, []byte("marker-42\r")); err != nil {
		t.Fatal(err)
	}
	tc.waitOutput(t, "echo: marker-42")
	xs, err := te.c.Sessions(context.Background(), true)
	if err != nil || len(xs) != 1 || xs[0].Via != "terminal" || xs[0].Login != "ubuntu" {
		t.Fatalf("live sessions %+v, %v: want one terminal session as ubuntu", xs, err)
	}
	if _, err := te.c.KillSession(context.Background(), xs[0].ID, "test over"); err != nil {
		t.Fatal(err)
	}
	end := tc.waitEnd(t)
	if end.Reason != "killed" || !strings.Contains(end.Message, "alice") || !strings.Contains(end.Message, "test over") {
		t.Fatalf("end %+v: want killed by alice, with the reason", end)
	}
	evs, err := te.st.ListAudit(context.Background(), store.AuditFilter{Action: string(audit.SSHCertificateIssued)})
	if err != nil || len(evs) != 1 || evs[0].Details["login"] != "ubuntu" || evs[0].Details["via"] != "terminal" {
		t.Fatalf("certificate audit %+v, %v", evs, err)
	}
}

// TestTerminalPassword: a password typed in the browser logs in; a wrong one
// ends the terminal with a login failure.
func TestTerminalPassword(t *testing.T) {
	te := newTermEnv(t, nil)
	tc := dialTerm(t, te, "deploy", webterm.Start{Auth: webterm.AuthPassword, Password: "nope"})
	if end := tc.waitEnd(t); end.Reason != "login_failed" || strings.Contains(end.Message, "nope") {
		t.Fatalf("wrong password: end %+v", end)
	}
	tc = dialTerm(t, te, "deploy", webterm.Start{Auth: webterm.AuthPassword, Password: "pw"})
	tc.ws.Write(context.Background(), websocket.MessageBinary, []byte("hello\r"))
	tc.waitOutput(t, "echo: hello")
}

// TestTerminalHostKeyMismatch: a target showing a host key its agent did not
// report is refused (no trust on first use) and audited.
func TestTerminalHostKeyMismatch(t *testing.T) {
	te := newTermEnv(t, newCASigner(t).PublicKey())
	tc := dialTerm(t, te, "ubuntu", webterm.Start{Auth: webterm.AuthCertificate})
	end := tc.waitEnd(t)
	if end.Reason != "host_key_mismatch" || !strings.Contains(end.Message, "not one its agent reported") {
		t.Fatalf("end %+v: want host_key_mismatch", end)
	}
	evs, err := te.st.ListAudit(context.Background(), store.AuditFilter{Action: string(audit.SessionHostKeyMismatch)})
	if err != nil || len(evs) != 1 || evs[0].Actor != "alice2" {
		t.Fatalf("host key audit %+v, %v", evs, err)
	}
	if xs, _ := te.c.Sessions(context.Background(), false); len(xs) != 0 {
		t.Fatalf("sessions %+v: a refused login starts none", xs)
	}
}

// TestTerminalRefusals: what is refused before the WebSocket opens.
func TestTerminalRefusals(t *testing.T) {
	te := newTermEnv(t, nil)
	ctx := context.Background()
	// A console session of alice2 (what the browser holds as a cookie).
	sess, _, err := te.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindSession, Subject: "alice2", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cookie := httpedge.SessionCookie + "=" + sess + "; " + httpedge.CSRFCookie + "=c"
	host := strings.TrimPrefix(te.srv.URL, "http://")
	upgrade := []string{"Connection", "Upgrade", "Upgrade", "websocket", "Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}
	for _, tt := range []struct {
		name, path, token string
		hdr               []string
		want              int
		says              string
	}{
		{"cookie WebSocket from another site", te.path("ubuntu"), "", append([]string{"Cookie", cookie, "Origin", "https://evil.example"}, upgrade...), http.StatusForbidden, "Origin"},
		{"cookie WebSocket without Origin", te.path("ubuntu"), "", append([]string{"Cookie", cookie}, upgrade...), http.StatusForbidden, "Origin"},
		{"cookie from the console", te.path("ubuntu"), "", []string{"Cookie", cookie, "Origin", "http://" + host}, http.StatusUpgradeRequired, "WebSocket"},
		// The console's page asks why an upgrade failed with a plain
		// same-origin GET, which carries no Origin and opens nothing.
		{"cookie, no upgrade, no Origin", te.path("root"), "", []string{"Cookie", cookie}, http.StatusForbidden, "not one the rule names"},
		{"bearer", te.path("ubuntu"), te.alice, nil, http.StatusUpgradeRequired, "WebSocket"},
		{"login not in the rule's logins", te.path("root"), te.alice, nil, http.StatusForbidden, "not one the rule names"},
		{"no login", te.path(""), te.alice, nil, http.StatusUnprocessableEntity, "login"},
		{"someone else's request", te.path("ubuntu"), te.admin, nil, http.StatusForbidden, "not alice's own"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := te.raw(t, "GET", tt.path, tt.token, "", nil, tt.hdr...)
			if status != tt.want || !strings.Contains(string(body), tt.says) {
				t.Fatalf("%d %s: want %d saying %q", status, body, tt.want, tt.says)
			}
		})
	}
}

// TestTerminalNoHostKeys: a target whose agent reported no host keys gets
// no terminal (the server cannot check whom it talks to), and that is
// audited.
func TestTerminalNoHostKeys(t *testing.T) {
	te := newTermEnv(t, nil)
	ctx := context.Background()
	agent := te.c.WithToken(te.creds["web-01"])
	if err := agent.Report(ctx, wire.AgentReport{Inventory: &wire.Inventory{}}); err != nil {
		t.Fatal(err)
	}
	status, body := te.raw(t, "GET", te.path("ubuntu"), te.alice, "", nil)
	if status != http.StatusConflict || !strings.Contains(string(body), "no SSH host keys") {
		t.Fatalf("%d %s: want 409 saying no host keys", status, body)
	}
	evs, err := te.st.ListAudit(ctx, store.AuditFilter{Action: string(audit.SessionHostKeyMismatch)})
	if err != nil || len(evs) != 1 {
		t.Fatalf("host key audit %+v, %v", evs, err)
	}
}

// recObserver records what a terminal's Observer sees.
type recObserver struct {
	mu      sync.Mutex
	out, in bytes.Buffer
	sizes   [][2]int
	closed  string
}

func (o *recObserver) Output(_ time.Time, p []byte) { o.mu.Lock(); o.out.Write(p); o.mu.Unlock() }
func (o *recObserver) Input(_ time.Time, p []byte)  { o.mu.Lock(); o.in.Write(p); o.mu.Unlock() }
func (o *recObserver) Resize(_ time.Time, c, r int) {
	o.mu.Lock()
	o.sizes = append(o.sizes, [2]int{c, r})
	o.mu.Unlock()
}
func (o *recObserver) Close(_ time.Time, reason string) {
	o.mu.Lock()
	o.closed = reason
	o.mu.Unlock()
}

// TestTerminalObserver: the configured observer gets the session's facts,
// sees input, output, resizes and the end, and its Notice reaches the
// browser as a control message (not in the terminal stream). An observer
// that cannot start refuses the session.
func TestTerminalObserver(t *testing.T) {
	obs := &recObserver{}
	infos := make(chan webterm.SessionInfo, 1)
	var fail atomic.Bool
	ca := newCASigner(t)
	host := newCASigner(t)
	e := newEnvWith(t, func(d *api.Deps) {
		d.SSHCA = ca
		d.TerminalObserver = func(si webterm.SessionInfo) (webterm.Observer, error) {
			if fail.Load() {
				return nil, fmt.Errorf("disk full")
			}
			infos <- si
			return obs, nil
		}
	})
	te := termEnvOn(t, e, ca, host, nil)
	tc := dialTerm(t, te, "deploy", webterm.Start{Auth: webterm.AuthCertificate, Cols: 120, Rows: 40})
	si := <-infos
	if si.Login != "deploy" || si.Principal != "alice2" || si.RequestID != te.req.ID || si.Target != "web-01" || si.Port != te.port ||
		si.Cols != 120 || si.Rows != 40 || si.SessionID == "" || len(si.Rule.Logins) != 2 || si.Notice == nil {
		t.Fatalf("SessionInfo %+v", si)
	}
	si.Notice("bob is watching")
	deadline := time.Now().Add(5 * time.Second)
	for {
		tc.mu.Lock()
		got := slices.Contains(tc.notices, "bob is watching")
		tc.mu.Unlock()
		if got {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the notice never reached the browser")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, _ := json.Marshal(webterm.Control{Type: webterm.TypeResize, Cols: 90, Rows: 20})
	tc.ws.Write(context.Background(), websocket.MessageText, b)
	tc.ws.Write(context.Background(), websocket.MessageBinary, []byte("watched\r"))
	tc.waitOutput(t, "echo: watched")
	if _, err := te.c.KillSession(context.Background(), si.SessionID, "over"); err != nil {
		t.Fatal(err)
	}
	tc.waitEnd(t)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !strings.Contains(obs.out.String(), "echo: watched") || obs.in.String() != "watched\r" || len(obs.sizes) != 1 || obs.sizes[0] != [2]int{90, 20} || obs.closed != "killed" {
		t.Fatalf("observer saw out %q, in %q, sizes %v, closed %q", obs.out.String(), obs.in.String(), obs.sizes, obs.closed)
	}
	if strings.Contains(tc.out.String(), "bob is watching") {
		t.Error("the notice went into the terminal stream")
	}
	obs.mu.Unlock()
	fail.Store(true)
	tc = dialTerm(t, te, "deploy", webterm.Start{Auth: webterm.AuthCertificate})
	if end := tc.waitEnd(t); !strings.Contains(end.Message, "recording could not start") {
		t.Fatalf("end %+v: an observer that cannot start refuses the session", end)
	}
	obs.mu.Lock()
}
