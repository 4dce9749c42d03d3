package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/coder/websocket"
	"golang.org/x/term"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/webterm"
	"github.com/jitgate/jitgate/internal/wire"
)

// recordedLogin picks the login of a recorded port's terminal: USER of
// USER@TARGET, else the rule's first; it must be one the rule names, since
// the server logs in with a certificate of its CA.
func recordedLogin(rule wire.PortRule, user string) (string, error) {
	if len(rule.Logins) == 0 {
		return "", fmt.Errorf("port %d/tcp is recorded and its rule names no logins for the server's SSH certificates: use the console's terminal (password or key) instead", rule.Port)
	}
	if user == "" {
		return rule.Logins[0], nil
	}
	for _, l := range rule.Logins {
		if l == user {
			return user, nil
		}
	}
	return "", usagef("login %q: the rule of port %d/tcp names %v", user, rule.Port, rule.Logins)
}

// runRecordedTerminal is jitgate ssh on a recorded port: the server runs
// the SSH client (and records), this process is the terminal. The local
// tty goes raw for the session; its size follows the window (SIGWINCH).
func (a *app) runRecordedTerminal(ctx context.Context, c *client.Client, reqID string, port uint16, login string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ws, err := c.Terminal(ctx, reqID, port, login)
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	in, out := os.Stdin, os.Stdout
	cols, rows := 80, 24
	isTTY := term.IsTerminal(int(in.Fd()))
	if w, h, err := term.GetSize(int(out.Fd())); err == nil {
		cols, rows = w, h
	}
	b, _ := json.Marshal(webterm.Start{Type: webterm.TypeStart, Cols: cols, Rows: rows, Auth: webterm.AuthCertificate})
	if err := ws.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("starting the terminal: %w", err)
	}
	fmt.Fprintf(a.stderr, "port %d/tcp is recorded: this session goes through the server's SSH terminal as %s\n", port, login)
	nl := "\n"
	if isTTY {
		old, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return fmt.Errorf("putting the terminal in raw mode: %w", err)
		}
		defer func() { _ = term.Restore(int(in.Fd()), old) }()
		nl = "\r\n" // raw output does not turn \n into \r\n
	}
	// Keystrokes go as binary frames; a closed stdin ends nothing (the
	// remote shell decides).
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := in.Read(buf)
			if n > 0 {
				if ws.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for range resizeSignals(ctx) {
			if w, h, err := term.GetSize(int(out.Fd())); err == nil {
				b, _ := json.Marshal(webterm.Control{Type: webterm.TypeResize, Cols: w, Rows: h})
				_ = ws.Write(ctx, websocket.MessageText, b)
			}
		}
	}()
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) || websocket.CloseStatus(err) != -1 {
				return nil
			}
			return fmt.Errorf("the terminal's connection: %w", err)
		}
		if typ == websocket.MessageBinary {
			_, _ = out.Write(data)
			continue
		}
		var ctl webterm.Control
		if json.Unmarshal(data, &ctl) != nil {
			continue
		}
		switch ctl.Type {
		case webterm.TypeNotice, webterm.TypeStatus:
			fmt.Fprintf(a.stderr, "%s[jitgate] %s%s", nl, ctl.Text, nl)
		case webterm.TypeEnd:
			fmt.Fprintf(a.stderr, "%s[jitgate] session ended (%s): %s%s", nl, ctl.Reason, ctl.Message, nl)
			switch ctl.Reason {
			case "closed", "":
				return nil
			default:
				return exitStatus(1)
			}
		}
	}
}
