package webterm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"
)

// The browser's messages. Binary frames carry the keyboard's bytes; text
// frames carry a Control. The first text frame is the start (its auth
// method and the terminal's size); nothing else is read before it.
const (
	TypeStart  = "start"  // browser → server, first: Start
	TypeResize = "resize" // browser → server: cols, rows
	TypeStatus = "status" // server → browser: a status line (connecting, connected)
	TypeNotice = "notice" // server → browser: a notice shown beside the terminal
	TypeEnd    = "end"    // server → browser, last: reason and message
)

// Auth methods the browser may choose.
const (
	AuthCertificate = "certificate" // the server signs an ephemeral key with its SSH CA
	AuthPassword    = "password"
	AuthKey         = "key" // a pasted private key (and its passphrase)
)

// Control is one text frame, either way.
type Control struct {
	Type    string `json:"type"`
	Cols    int    `json:"cols,omitempty"`
	Rows    int    `json:"rows,omitempty"`
	Text    string `json:"text,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// Start is the browser's first text frame. The secrets in it (password,
// private key, passphrase) are used for one login and dropped: they are never
// stored, logged or echoed back.
type Start struct {
	Type       string `json:"type"`
	Cols       int    `json:"cols"`
	Rows       int    `json:"rows"`
	Auth       string `json:"auth"`
	Password   string `json:"password,omitempty"`
	PrivateKey string `json:"private_key,omitempty"`
	Passphrase string `json:"passphrase,omitempty"`
	// CSRF repeats the console's CSRF cookie (a browser cannot set headers on
	// a WebSocket); a session that came with a cookie must send it.
	CSRF string `json:"csrf,omitempty"`
}

// String leaves the secrets out, so a Start logged by mistake shows none.
func (s Start) String() string {
	return fmt.Sprintf("start(auth=%s, %dx%d)", s.Auth, s.Cols, s.Rows)
}

// Bounds on what the browser sends.
const (
	MaxFrame = 64 << 10 // a paste of a private key fits; more is refused
	MaxCols  = 1000
	MaxRows  = 1000
)

// clampSize keeps a size inside sane bounds (80x24 when unset).
func clampSize(cols, rows int) (int, int) {
	if cols <= 0 {
		cols = 80
	}
	if rows <= 0 {
		rows = 24
	}
	return min(cols, MaxCols), min(rows, MaxRows)
}

// ReadStart reads the browser's start frame (within ctx).
func ReadStart(ctx context.Context, ws *websocket.Conn) (Start, error) {
	ws.SetReadLimit(MaxFrame)
	typ, b, err := ws.Read(ctx)
	if err != nil {
		return Start{}, fmt.Errorf("reading the terminal's start: %w", err)
	}
	var s Start
	if typ != websocket.MessageText || json.Unmarshal(b, &s) != nil || s.Type != TypeStart {
		return Start{}, errors.New("the terminal's first message is not its start")
	}
	s.Cols, s.Rows = clampSize(s.Cols, s.Rows)
	switch s.Auth {
	case AuthCertificate, AuthPassword, AuthKey:
	default:
		return Start{}, fmt.Errorf("auth %q: must be certificate, password or key", s.Auth)
	}
	return s, nil
}

// UserAuth returns the SSH auth methods of a password or pasted key start
// (a certificate is the caller's: it holds the CA).
func (s Start) UserAuth() ([]ssh.AuthMethod, error) {
	switch s.Auth {
	case AuthPassword:
		if s.Password == "" {
			return nil, errors.New("no password given")
		}
		pw := s.Password
		// Many sshd accept passwords only through keyboard-interactive.
		ki := ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			ans := make([]string, len(qs))
			for i := range qs {
				ans[i] = pw
			}
			return ans, nil
		})
		return []ssh.AuthMethod{ssh.Password(pw), ki}, nil
	case AuthKey:
		if strings.TrimSpace(s.PrivateKey) == "" {
			return nil, errors.New("no private key given")
		}
		var signer ssh.Signer
		var err error
		if s.Passphrase != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(s.PrivateKey), []byte(s.Passphrase))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(s.PrivateKey))
		}
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, errors.New("the private key is encrypted: give its passphrase")
		}
		if err != nil {
			// The parser's message never quotes the key.
			return nil, fmt.Errorf("not a private key this server reads: %v", err)
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil
	}
	return nil, fmt.Errorf("auth %q has no user secret", s.Auth)
}

// HostKeyError refuses a target whose host key is not one its agent
// reported (or whose agent reported none).
type HostKeyError struct {
	// Got is the fingerprint of the key the target presented ("" when the
	// agent reported no keys and none was asked for).
	Got string
	// Known are the fingerprints of the reported keys.
	Known []string
}

func (e *HostKeyError) Error() string {
	if len(e.Known) == 0 {
		return "the target's agent reported no SSH host keys, so the server cannot check whom it talks to: refused (no trust on first use)"
	}
	return fmt.Sprintf("the target presented host key %s, which is not one its agent reported (%s): refused", e.Got, strings.Join(e.Known, ", "))
}

// hostKeyCallback accepts exactly the keys given.
func hostKeyCallback(keys []ssh.PublicKey) ssh.HostKeyCallback {
	known := make([]string, len(keys))
	for i, k := range keys {
		known[i] = ssh.FingerprintSHA256(k)
	}
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		for _, k := range keys {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				return nil
			}
		}
		return &HostKeyError{Got: ssh.FingerprintSHA256(key), Known: known}
	}
}

// hostKeyAlgorithms are the signature algorithms of keys: the target is asked
// for one of the keys its agent reported, not another it also holds.
func hostKeyAlgorithms(keys []ssh.PublicKey) []string {
	var out []string
	for _, k := range keys {
		switch t := k.Type(); t {
		case ssh.KeyAlgoRSA:
			out = append(out, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			out = append(out, t)
		}
	}
	return out
}

// Dial logs in as user over conn (the relay's stream to the target),
// accepting only hostKeys: a *HostKeyError when the target shows another key
// (or hostKeys is empty).
func Dial(conn net.Conn, user string, auth []ssh.AuthMethod, hostKeys []ssh.PublicKey) (*ssh.Client, error) {
	if len(hostKeys) == 0 {
		conn.Close()
		return nil, &HostKeyError{}
	}
	cfg := &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: hostKeyCallback(hostKeys),
		HostKeyAlgorithms: hostKeyAlgorithms(hostKeys), Timeout: 15 * time.Second}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(conn, "target", cfg)
	if err != nil {
		conn.Close()
		var hk *HostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, fmt.Errorf("the target refused the login as %s (wrong password or key, or it does not trust the certificate)", user)
		}
		return nil, fmt.Errorf("ssh handshake with the target: %w", err)
	}
	conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// Terminal is the browser's side of one terminal session.
type Terminal struct {
	ws     *websocket.Conn
	mu     sync.Mutex // guards ended
	ended  bool
	ctx    context.Context
	cancel context.CancelFunc
}

// New wraps an accepted WebSocket.
func New(ws *websocket.Conn) *Terminal {
	ctx, cancel := context.WithCancel(context.Background())
	ws.SetReadLimit(MaxFrame)
	return &Terminal{ws: ws, ctx: ctx, cancel: cancel}
}

func (t *Terminal) send(c Control) {
	t.mu.Lock()
	ended := t.ended
	t.mu.Unlock()
	if ended {
		return
	}
	b, _ := json.Marshal(c)
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	_ = t.ws.Write(ctx, websocket.MessageText, b)
}

// Notice shows text in the terminal's status line. Safe from any goroutine;
// after the end it does nothing.
func (t *Terminal) Notice(text string) { t.send(Control{Type: TypeNotice, Text: text}) }

// Status says where the set-up is (connecting, connected).
func (t *Terminal) Status(text string) { t.send(Control{Type: TypeStatus, Text: text}) }

// End tells the browser why the session ended and closes the WebSocket. The
// first call wins.
func (t *Terminal) End(reason, message string) {
	t.send(Control{Type: TypeEnd, Reason: reason, Message: message})
	t.mu.Lock()
	if t.ended {
		t.mu.Unlock()
		return
	}
	t.ended = true
	t.mu.Unlock()
	t.ws.Close(websocket.StatusNormalClosure, reason)
	t.cancel()
}

// Run runs an interactive shell on client in a pty of cols x rows, relaying
// the browser's keys and resizes to it and its output to the browser, until
// the shell ends, the browser goes away, or client's connection is closed
// (the caller ends the session that way). obs, if not nil, sees everything.
// It returns nil when the shell exited, else what ended it.
func (t *Terminal) Run(client *ssh.Client, cols, rows int, obs Observer) error {
	defer client.Close()
	sess, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("opening a session on the target: %w", err)
	}
	defer sess.Close()
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 14400, ssh.TTY_OP_OSPEED: 14400}
	if err := sess.RequestPty("xterm-256color", rows, cols, modes); err != nil {
		return fmt.Errorf("asking the target for a terminal: %w", err)
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		return err
	}
	out := &outWriter{t: t, obs: obs}
	sess.Stdout = out
	sess.Stderr = out
	if err := sess.Shell(); err != nil {
		return fmt.Errorf("starting a shell on the target: %w", err)
	}
	t.Status("connected")
	go t.readBrowser(sess, stdin, obs)
	waited := make(chan error, 1)
	go func() { waited <- sess.Wait() }()
	select {
	case err := <-waited:
		var exit *ssh.ExitError
		if err == nil || errors.As(err, &exit) {
			return nil
		}
		return err
	case <-t.ctx.Done():
		return errors.New("the browser went away")
	}
}

// readBrowser relays the browser's frames to the shell until the WebSocket
// ends (which cancels the terminal).
func (t *Terminal) readBrowser(sess *ssh.Session, stdin io.Writer, obs Observer) {
	defer t.cancel()
	for {
		typ, b, err := t.ws.Read(t.ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			if obs != nil {
				obs.Input(time.Now(), b)
			}
			if _, err := stdin.Write(b); err != nil {
				return
			}
			continue
		}
		var c Control
		if json.Unmarshal(b, &c) != nil || c.Type != TypeResize {
			continue // unknown controls are ignored (a newer page)
		}
		cols, rows := clampSize(c.Cols, c.Rows)
		if obs != nil {
			obs.Resize(time.Now(), cols, rows)
		}
		sess.WindowChange(rows, cols)
	}
}

// outWriter sends the shell's output to the browser as binary frames.
type outWriter struct {
	t   *Terminal
	obs Observer
}

func (w *outWriter) Write(p []byte) (int, error) {
	if w.obs != nil {
		w.obs.Output(time.Now(), p)
	}
	ctx, cancel := context.WithTimeout(w.t.ctx, 30*time.Second)
	defer cancel()
	if err := w.t.ws.Write(ctx, websocket.MessageBinary, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
