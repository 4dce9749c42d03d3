package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newLoginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "login [--server URL]",
		Short: "Sign in with single sign-on and save the session for later commands",
		Long: `Sign in through the server's identity provider (OpenID Connect device
authorization): open the address shown, enter the code, and approve. The
session token (valid for the server's --session-ttl, 12h by default) is then
saved with the server in the config file (mode 0600), where later commands
find it. jitgate logout forgets it.

With --with-token, no browser: the token (an API token from 'jitgate token
create', or a service token) is read from standard input, checked with the
server, and saved the same way, as 'gh auth login --with-token' does. It
keeps the token out of the shell history and the process list.`,
		Example: `  jitgate login --server https://jitgate.example.com
  jitgate login --server https://jitgate.example.com --with-token < token.txt`,
		Args: noArgs,
	}
	var withToken bool
	cmd.Flags().BoolVar(&withToken, "with-token", false, "read an API token from standard input instead of signing in with single sign-on")
	cmd.Flags().StringVar(&a.conn.server, "server", "", "server URL (default $JITGATE_SERVER, else the config file)")
	cmd.Flags().StringVar(&a.conn.caFile, "ca-file", "", "PEM CA bundle to trust for the server's TLS (default $JITGATE_CA_FILE, else the config file)")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		path := a.configPath()
		cfg, err := a.loadConfig(path)
		if err != nil {
			return err
		}
		server := firstOf(a.conn.server, a.env("JITGATE_SERVER"), cfg.Server)
		caFile := firstOf(a.conn.caFile, a.env("JITGATE_CA_FILE"), cfg.CAFile)
		if server == "" {
			return usagef("no server given: use --server or JITGATE_SERVER")
		}
		var opts []client.Option
		if caFile != "" {
			opts = append(opts, client.WithCAFile(caFile))
		}
		if withToken {
			return a.loginWithToken(ctx, path, cfg, server, caFile, opts)
		}
		c, err := client.New(server, "", opts...)
		if err != nil {
			return err
		}
		s, err := a.deviceLogin(ctx, c)
		if err != nil {
			return err
		}
		cfg.Server, cfg.CAFile = server, caFile
		cfg.Token, cfg.TokenID, cfg.TokenExpires = s.Token, s.TokenID, &s.ExpiresAt
		if err := saveConfig(path, cfg); err != nil {
			return err
		}
		if a.env("JITGATE_TOKEN") != "" {
			fmt.Fprintln(a.stderr, "note: JITGATE_TOKEN is set and takes precedence over the saved session")
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"user": s.User, "groups": s.Groups, "expires_at": s.ExpiresAt, "server": server, "config_file": path})
		}
		groups := "none"
		if len(s.Groups) > 0 {
			groups = strings.Join(s.Groups, ", ")
		}
		fmt.Fprintf(a.stdout, "Logged in as %s (groups: %s) until %s; session saved in %s\n",
			esc(s.User), esc(groups), s.ExpiresAt.Local().Format(time.DateTime), path)
		return nil
	})
	return cmd
}

// loginWithToken reads a token from standard input (its first line),
// checks it with the server (whoami) and saves it with the server.
func (a *app) loginWithToken(ctx context.Context, path string, cfg fileConfig, server, caFile string, opts []client.Option) error {
	line, err := bufio.NewReader(io.LimitReader(a.stdin, 64<<10)).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the token from standard input: %w", err)
	}
	token := strings.TrimSpace(line)
	if token == "" {
		return usagef("--with-token: no token on standard input (pipe it in: jitgate login --with-token < token.txt)")
	}
	c, err := client.New(server, token, opts...)
	if err != nil {
		return err
	}
	w, err := c.Whoami(ctx)
	if err != nil {
		if st := client.StatusOf(err); st == 401 {
			return fmt.Errorf("the server refused the token from standard input (401): it is wrong, expired or revoked; nothing was saved")
		}
		return err
	}
	cfg.Server, cfg.CAFile = server, caFile
	cfg.Token, cfg.TokenID, cfg.TokenExpires = token, "", nil
	if err := saveConfig(path, cfg); err != nil {
		return err
	}
	if a.env("JITGATE_TOKEN") != "" {
		fmt.Fprintln(a.stderr, "note: JITGATE_TOKEN is set and takes precedence over the saved token")
	}
	if a.jsonOut() {
		return a.printJSON(map[string]any{"user": w.Subject, "kind": w.Kind, "server": server, "config_file": path})
	}
	fmt.Fprintf(a.stdout, "Logged in to %s as %s (%s token); token saved in %s\n", esc(server), esc(w.Subject), esc(w.Kind), path)
	return nil
}

// deviceLogin runs the device flow through the server: it shows the code,
// then polls at the interval the server names until the person approved,
// refused, or the code expired.
func (a *app) deviceLogin(ctx context.Context, c *client.Client) (wire.Session, error) {
	dl, err := c.StartDeviceLogin(ctx)
	if err != nil {
		return wire.Session{}, err
	}
	fmt.Fprintf(a.stderr, "Open %s and enter code %s\n", esc(dl.VerificationURI), esc(dl.UserCode))
	if dl.VerificationURIComplete != "" {
		fmt.Fprintf(a.stderr, "(or open %s)\n", esc(dl.VerificationURIComplete))
	}
	interval := time.Duration(max(dl.Interval, 1)) * time.Second
	for {
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return wire.Session{}, ctx.Err()
		case <-t.C:
		}
		s, err := c.PollDeviceLogin(ctx, dl.DeviceCode)
		var ae *client.APIError
		if err == nil || !errors.As(err, &ae) {
			return s, err
		}
		switch ae.Body.Error {
		case wire.AuthorizationPending:
		case "slow_down":
			interval += 5 * time.Second
		case wire.AccessDenied:
			return wire.Session{}, errors.New("the login was refused at the identity provider")
		case wire.ExpiredToken:
			return wire.Session{}, errors.New("the code expired before the login was approved: run jitgate login again")
		default:
			return wire.Session{}, err
		}
	}
}

func (a *app) newLogoutCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "Forget the session saved by jitgate login, and revoke it at the server",
		Args:  noArgs,
	}
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		path := a.configPath()
		cfg, err := a.loadConfig(path)
		if err != nil {
			return err
		}
		if cfg.Token == "" {
			fmt.Fprintln(a.stdout, "Not logged in: no token in "+path)
			return nil
		}
		if cfg.TokenID != "" && cfg.Server != "" {
			// Best effort: the session ends by itself at its expiry anyway.
			var opts []client.Option
			if cfg.CAFile != "" {
				opts = append(opts, client.WithCAFile(cfg.CAFile))
			}
			if c, err := client.New(cfg.Server, cfg.Token, opts...); err == nil {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err = c.RevokeToken(rctx, cfg.TokenID)
				cancel()
				if st := client.StatusOf(err); err != nil && st != 401 && st != 404 {
					fmt.Fprintf(a.stderr, "warning: could not revoke the session at the server (it expires by itself): %s\n", errorLine(err))
				}
			}
		}
		cfg.Token, cfg.TokenID, cfg.TokenExpires = "", "", nil
		if err := saveConfig(path, cfg); err != nil {
			return err
		}
		fmt.Fprintln(a.stdout, "Logged out; removed the session from "+path)
		return nil
	})
	return cmd
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
