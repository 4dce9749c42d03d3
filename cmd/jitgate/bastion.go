package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/sshca/sshhost"
	"github.com/jitgate/jitgate/internal/wire"
)

// exitStatus is a command's own exit status (jitgate ssh returns ssh's),
// passed through without an error line.
type exitStatus int

func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

func parseTunnelPort(s string) (uint16, error) {
	p, err := policy.ParsePort(s)
	if err != nil {
		return 0, usagef("--port: %v", err)
	}
	if p.Protocol != policy.TCP {
		return 0, usagef("--port %s: only TCP ports go through the bastion", s)
	}
	return p.Number, nil
}

func (a *app) newConnectCmd() *cobra.Command {
	var (
		portFlag, local string
		stdio           bool
	)
	cmd := &cobra.Command{
		Use:   "connect TARGET --port PORT [--local 127.0.0.1:PORT | --stdio]",
		Short: "Open bastion tunnels to a port of a target for native clients",
		Long: `Open tunnels through the bastion to a port of a target: the connection goes
through the jitgate server and the target's agent, which reaches the service
from inside, so no port opens to your address and the target needs no inbound
path. It needs a live bastion grant of yours for the port (jitgate request
TARGET --port P --bastion, or jitgate ssh, which asks for one).

With --local (default 127.0.0.1:0) the command listens there and opens one
tunnel per accepted connection, until interrupted: point ssh, an RDP client or
psql at the address it prints. With --stdio it carries one tunnel on standard
input and output, for ssh's ProxyCommand.`,
		Example: `  jitgate connect db-01 --port 5432 --local 127.0.0.1:15432
  ssh -o ProxyCommand='jitgate connect --stdio --port 22 web-01' admin@web-01`,
		Args:              oneArg("TARGET"),
		ValidArgsFunction: a.completeTargets,
	}
	cmd.Flags().StringVarP(&portFlag, "port", "p", "", "the target's port (required)")
	_ = cmd.RegisterFlagCompletionFunc("port", a.completePorts)
	cmd.Flags().StringVar(&local, "local", "", "loopback address to listen on (default 127.0.0.1:0: a free port)")
	cmd.Flags().BoolVar(&stdio, "stdio", false, "carry one tunnel on standard input and output (ssh ProxyCommand)")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if portFlag == "" {
			return usagef("--port is required")
		}
		port, err := parseTunnelPort(portFlag)
		if err != nil {
			return err
		}
		if stdio && local != "" {
			return usagef("--stdio and --local exclude each other")
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if stdio {
			return stdioTunnel(ctx, c, args[0], port, os.Stdin, os.Stdout)
		}
		ln, err := a.listenLocal(local, args[0], port)
		if err != nil {
			return err
		}
		defer ln.Close()
		return serveLocal(ctx, c, args[0], port, ln, a.stderr)
	})
	return cmd
}

// listenLocal opens the local listener of a tunnel (local empty: a free
// port on 127.0.0.1) and says where it listens.
//
// Only a loopback address is accepted: every connection the listener takes
// is relayed under your token and grant, so a listener others can reach
// (0.0.0.0, ":PORT", a LAN address) would hand your access to anyone on the
// network, and the trail would show you.
func (a *app) listenLocal(local, target string, port uint16) (net.Listener, error) {
	if local == "" {
		local = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(local)
	if err != nil {
		return nil, usagef("--local %q: want HOST:PORT, such as 127.0.0.1:15432", local)
	}
	if ip, err := netip.ParseAddr(host); host != "localhost" && (err != nil || !ip.IsLoopback() || ip.Zone() != "") {
		return nil, usagef("--local %q: listen on a loopback address (127.0.0.1 or ::1); anyone who reaches the listener uses your grant", local)
	}
	ln, err := net.Listen("tcp", local)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", local, err)
	}
	fmt.Fprintf(a.stdout, "listening on %s: connections go to %s port %d through the bastion (interrupt to stop)\n", ln.Addr(), target, port)
	return ln, nil
}

// stdioTunnel carries one tunnel on in and out until either side ends.
func stdioTunnel(ctx context.Context, c *client.Client, target string, port uint16, in io.Reader, out io.Writer) error {
	conn, err := c.Tunnel(ctx, target, port)
	if err != nil {
		return err
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(out, conn); done <- struct{}{} }()
	<-done
	return nil
}

// serveLocal opens one tunnel per connection accepted on ln until ctx ends.
// A tunnel that cannot be opened is reported and its connection closed;
// the listener goes on.
func serveLocal(ctx context.Context, c *client.Client, target string, port uint16, ln net.Listener, errw io.Writer) error {
	go func() { <-ctx.Done(); ln.Close() }()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		lc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lc.Close()
			tc, err := c.Tunnel(ctx, target, port)
			if err != nil {
				fmt.Fprintf(errw, "tunnel for %s: %s\n", lc.RemoteAddr(), errorLine(err))
				return
			}
			defer tc.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(tc, lc); done <- struct{}{} }()
			go func() { _, _ = io.Copy(lc, tc); done <- struct{}{} }()
			select {
			case <-done:
			case <-ctx.Done():
			}
		}()
	}
}

func (a *app) newSSHCmd() *cobra.Command {
	var (
		portFlag, reason string
		duration, waitTO time.Duration
		identity         string
		sshOpts          []string
	)
	cmd := &cobra.Command{
		Use:   "ssh [USER@]TARGET [--duration D --reason TEXT] [-- COMMAND ...]",
		Short: "Log in to a target with the system's ssh, through the bastion",
		Long: `Log in to a target with the system's ssh client through the bastion. Without a
live grant of yours for the port, it asks for a bastion grant first (--duration
and --reason are then required) and follows it through approval until it is
active. Then it runs ssh with a ProxyCommand of 'jitgate connect --stdio'; the
server address and token reach that command through the environment, never its
arguments.

On a port whose rule records sessions (record: true), raw tunnels are
refused: jitgate ssh then opens the server's SSH terminal instead (the server
logs in with a certificate for USER or the rule's first login, and records),
with this terminal in raw mode; no remote command, -i or --ssh-option.

Without -i, when the port's rule names logins, it logs in with a short-lived
certificate of the server's SSH CA for an ephemeral key (for the USER of
USER@TARGET, or the rule's first login), valid until the grant ends; the
target's sshd must trust the CA (see jitgate ssh-ca). When the rule names no
logins, ssh uses your own keys.`,
		Example: `  jitgate ssh admin@web-01 --duration 30m --reason "INC-1234"
  jitgate ssh web-01 -- uptime`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("missing [USER@]TARGET")
			}
			if cmd.ArgsLenAtDash() > 1 || (cmd.ArgsLenAtDash() < 0 && len(args) > 1) {
				return usagef("put the remote command after --: jitgate ssh TARGET -- COMMAND")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&portFlag, "port", "p", "22", "the target's ssh port")
	f.Var(newDuration(&duration, 0), "duration", "how long a new grant lasts, such as 30m (needed when no live grant exists)")
	f.StringVar(&reason, "reason", "", "why you need access (for a new grant)")
	f.Var(newDuration(&waitTO, 2*time.Minute), "wait-timeout", "give up waiting for approval after this long")
	f.StringVarP(&identity, "identity", "i", "", "ssh identity file (passed to ssh -i)")
	f.StringArrayVar(&sshOpts, "ssh-option", nil, "an ssh -o option such as StrictHostKeyChecking=accept-new (repeatable)")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		port, err := parseTunnelPort(portFlag)
		if err != nil {
			return err
		}
		dest := args[0]
		target := dest
		if i := strings.LastIndex(dest, "@"); i >= 0 {
			target = dest[i+1:]
		}
		if err := policy.ValidateTargetName(target); err != nil {
			return usagef("target %q: %v", target, err)
		}
		var command []string
		if n := cmd.ArgsLenAtDash(); n >= 0 {
			command = args[n:]
		}
		c, conn, err := a.client()
		if err != nil {
			return err
		}
		reqID, err := a.ensureGrantRequest(ctx, c, target, port, duration, reason, waitTO)
		if err != nil {
			return err
		}
		// A recorded port takes no raw tunnel: the server's own SSH
		// terminal carries (and records) the session instead.
		if pol, err := c.Policy(ctx, target); err == nil {
			for _, r := range pol.Rules {
				if r.Port != port || (r.Protocol != "" && r.Protocol != "tcp") || !r.Record {
					continue
				}
				if len(command) > 0 || identity != "" || len(sshOpts) > 0 {
					return usagef("port %d/tcp of %s is recorded: sessions go through the server's SSH terminal, which takes no remote command, -i or --ssh-option", port, target)
				}
				user := ""
				if i := strings.LastIndex(dest, "@"); i >= 0 {
					user = dest[:i]
				}
				login, err := recordedLogin(r, user)
				if err != nil {
					return err
				}
				return a.runRecordedTerminal(ctx, c, reqID, port, login)
			}
		}
		// With no identity named, log in with a certificate of jitgate's
		// SSH CA for an ephemeral key; a rule that names no logins leaves
		// the user's own keys to ssh.
		dir, err := os.MkdirTemp("", "jitgate-ssh-")
		if err != nil {
			return fmt.Errorf("making a private directory for ssh's files: %w", err)
		}
		defer os.RemoveAll(dir)
		var certArgs []string
		if identity == "" {
			login := ""
			if i := strings.LastIndex(dest, "@"); i >= 0 {
				login = dest[:i]
			}
			args, err := sshCertificateLogin(ctx, c, dir, reqID, login, port)
			if err != nil {
				return err
			}
			if args == nil {
				fmt.Fprintf(a.stderr, "the rule of %d/tcp on %s names no logins for certificates: ssh uses your own keys\n", port, target)
			}
			certArgs = args
		}
		self, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding the jitgate binary for ssh's ProxyCommand: %w", err)
		}
		proxy := proxyCommand(self, target, port)
		sshArgs := []string{"-o", "ProxyCommand=" + proxy, "-p", strconv.Itoa(int(port))}
		if identity != "" {
			sshArgs = append(sshArgs, "-i", identity)
		}
		sshArgs = append(sshArgs, certArgs...)
		hostArgs, err := a.knownHostsArgs(ctx, c, dir, target, port)
		if err != nil {
			return err
		}
		for _, o := range sshOpts {
			sshArgs = append(sshArgs, "-o", o)
		}
		// After the user's options: ssh takes the first value of each, so
		// an explicit --ssh-option StrictHostKeyChecking=... still decides.
		sshArgs = append(sshArgs, hostArgs...)
		sshArgs = append(sshArgs, dest)
		sshArgs = append(sshArgs, command...)
		run := exec.CommandContext(ctx, "ssh", sshArgs...)
		run.Stdin, run.Stdout, run.Stderr = os.Stdin, os.Stdout, os.Stderr
		// The token goes through the environment: arguments are visible to
		// every user of the machine (ps), the environment is not.
		run.Env = append(os.Environ(), "JITGATE_SERVER="+conn.server, "JITGATE_TOKEN="+conn.token)
		if conn.caFile != "" {
			run.Env = append(run.Env, "JITGATE_CA_FILE="+conn.caFile)
		}
		if err := run.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return exitStatus(ee.ExitCode())
			}
			return fmt.Errorf("running ssh: %w", err)
		}
		return nil
	})
	return cmd
}

// proxyCommand is the ProxyCommand line that runs this binary's connect
// --stdio. ssh runs it through the user's shell on Unix (so the path is
// shell-quoted) and directly on Windows.
// sshCertificateLogin makes an ephemeral ed25519 key in a new private
// temporary directory (0700; the key 0600), has the server's SSH CA sign it
// for login on request id's grant and returns the directory (the caller
// removes it) and ssh's arguments that log in with it and nothing else. No
// arguments and no error: the rule names no logins (the user's own keys
// are left to ssh). An empty login takes the rule's first, passed as -l.
func sshCertificateLogin(ctx context.Context, c *client.Client, dir, id, login string, port uint16) ([]string, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making an SSH key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("making an SSH key: %w", err)
	}
	cert, err := c.SSHCertificate(ctx, id, wire.SSHCertificateRequest{
		PublicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))), Login: login, Port: port})
	var ae *client.APIError
	if errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Body.Field == "login" {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting an SSH certificate: %w", err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "jitgate "+cert.KeyID)
	if err != nil {
		return nil, fmt.Errorf("encoding the SSH key: %w", err)
	}
	key := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(key, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, fmt.Errorf("writing the SSH key: %w", err)
	}
	if err := os.WriteFile(key+"-cert.pub", []byte(cert.Certificate+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing the SSH certificate: %w", err)
	}
	args := []string{"-i", key, "-o", "CertificateFile=" + key + "-cert.pub", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"}
	if login == "" && len(cert.Principals) > 0 {
		args = append(args, "-l", cert.Principals[0])
	}
	return args, nil
}

// knownHostsArgs writes a known_hosts file in dir holding the host keys the
// target's agent reported and returns ssh's options that accept those keys
// only (StrictHostKeyChecking=yes, no other known_hosts file): no trust on
// first use, a key that differs is refused by ssh. A target whose agent
// reported no host keys (none readable, a target behind a gateway, an older
// agent) is left to ssh's own known_hosts, with a note.
func (a *app) knownHostsArgs(ctx context.Context, c *client.Client, dir, target string, port uint16) ([]string, error) {
	t, err := c.Target(ctx, target)
	if err != nil {
		return nil, err
	}
	var keys []string
	if t.Inventory != nil {
		keys = sshhost.Clean(t.Inventory.SSHHostKeys)
	}
	if len(keys) == 0 {
		fmt.Fprintf(a.stderr, "the agent of %s reported no SSH host keys: ssh checks the host key against your own known_hosts\n", target)
		return nil, nil
	}
	// The alias names the target and port, so that these lines never meet
	// the user's own known_hosts entries.
	alias := fmt.Sprintf("jitgate.%s.%d", target, port)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %s\n", alias, k)
	}
	file := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("writing the known_hosts file: %w", err)
	}
	return []string{"-o", "HostKeyAlias=" + alias, "-o", "UserKnownHostsFile=" + file, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no", "-o", "CheckHostIP=no"}, nil
}

func proxyCommand(self, target string, port uint16) string {
	quoted := shellQuote(self)
	if runtime.GOOS == "windows" {
		quoted = `"` + self + `"`
	}
	return fmt.Sprintf("%s connect --stdio --port %d %s", quoted, port, target)
}

// ensureBastionGrant finds the caller's active request holding port on
// target or asks for a bastion grant and follows it until it is active.
func (a *app) ensureBastionGrant(ctx context.Context, c *client.Client, target string, port uint16, duration time.Duration, reason string, waitTO time.Duration) error {
	_, err := a.ensureGrantRequest(ctx, c, target, port, duration, reason, waitTO)
	return err
}

// ensureGrantRequest is ensureBastionGrant that also returns the id of the
// active request holding the grant (for an SSH certificate).
func (a *app) ensureGrantRequest(ctx context.Context, c *client.Client, target string, port uint16, duration time.Duration, reason string, waitTO time.Duration) (string, error) {
	me, err := c.Whoami(ctx)
	if err != nil {
		return "", err
	}
	rs, err := c.Requests(ctx, client.RequestFilter{Target: target, Active: true})
	if err != nil {
		return "", err
	}
	want := fmt.Sprintf("%d/tcp", port)
	for _, r := range rs {
		if r.Requester == me.Subject && r.State == "active" && slices.Contains(r.Ports, want) {
			return r.ID, nil
		}
	}
	if duration == 0 {
		return "", usagef("you hold no live grant for %s on %s: give --duration (and --reason) to ask for one", want, target)
	}
	started := a.now()
	req, err := a.createWaiting(ctx, c, wire.RequestCreate{Target: target, Ports: []string{want}, Bastion: true,
		Duration: wire.Duration(duration), Reason: reason}, waitTO)
	if err != nil {
		return "", err
	}
	if req, err = a.follow(ctx, c, req, started, waitTO); err != nil {
		return "", err
	}
	if req.State != "active" {
		return "", fmt.Errorf("request %s is %s: %s", req.ID, req.State, orDefault(req.Message, "not active"))
	}
	return req.ID, nil
}

func (a *app) newSessionsCmd() *cobra.Command {
	var q client.SessionQuery
	cmd := &cobra.Command{
		Use:   "sessions [--active] [--id ID] [--target NAME] [--principal NAME] | sessions kill|play|verify ID",
		Short: "List bastion sessions, end one, play or verify a recording",
		Long: `List bastion sessions, newest first: yours, and those on targets where your
roles read others' requests (all of them: the server answers a page at a time
and this follows the pages). 'sessions kill' ends a live session at once
(approvers and admins in the target's scope); the grant stays live.
'sessions play' plays a recorded session in this terminal; 'sessions verify'
checks a recording against its audit event and the audit chain.`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&q.ID, "id", "", "only the session with this id")
	cmd.Flags().BoolVar(&q.Active, "active", false, "only live sessions")
	cmd.Flags().StringVar(&q.Target, "target", "", "only this target's sessions")
	cmd.Flags().StringVar(&q.Principal, "principal", "", "only this principal's sessions (a user name, or service:NAME)")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		ss, err := c.ListSessions(ctx, q)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(ss))
		}
		if len(ss) == 0 {
			fmt.Fprintln(a.stderr, "no sessions")
			return nil
		}
		now := a.now()
		tw := a.table("ID", "TARGET", "PRINCIPAL", "PORT", "FROM", "STATE", "STARTED", "IN", "OUT", "ENDED", "RECORDING")
		for _, s := range ss {
			state, ended := s.State, ""
			if s.State == "live" {
				ended = "closes " + fmtRelative(s.Deadline, now)
			} else {
				state = s.EndReason
				if s.EndedBy != "" {
					state += " by " + s.EndedBy
				}
				if s.EndedAt != nil {
					ended = fmtRelative(*s.EndedAt, now)
				}
			}
			rec := ""
			if s.Recording != nil {
				rec = s.Recording.State // recording, saved (jitgate sessions play ID) or deleted
			}
			row(tw, s.ID, s.Target, s.Principal, s.Port, s.ClientAddr, state, fmtRelative(s.StartedAt, now),
				strconv.FormatInt(s.BytesIn, 10), strconv.FormatInt(s.BytesOut, 10), ended, rec)
		}
		return tw.Flush()
	})
	var reason string
	kill := &cobra.Command{
		Use:   "kill ID --reason TEXT [--yes] [--dry-run]",
		Short: "End a live bastion session at once (asks first; --yes in scripts)",
		Args:  oneArg("session ID"),
	}
	kill.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	var cf confirmFlags
	addConfirmFlags(kill, &cf)
	kill.RunE = a.runE(func(ctx context.Context, args []string) error {
		if strings.TrimSpace(reason) == "" {
			return usagef("--reason is required")
		}
		if err := policy.CheckReason(strings.TrimSpace(reason)); err != nil {
			return usagef("--reason: %s", strings.TrimPrefix(err.Error(), "reason: "))
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if done, err := a.guard(cf, "end bastion session "+args[0]+" at once"); done || err != nil {
			return err
		}
		s, err := c.KillSession(ctx, args[0], reason)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(s)
		}
		fmt.Fprintf(a.stdout, "session %s ended (%s by %s)\n", s.ID, s.EndReason, s.EndedBy)
		return nil
	})
	cmd.AddCommand(kill, a.newSessionsPlayCmd(), a.newSessionsVerifyCmd())
	return cmd
}
