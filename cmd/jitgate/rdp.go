package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/policy"
)

func (a *app) newRDPCmd() *cobra.Command {
	var (
		portFlag, reason, local string
		duration, waitTO        time.Duration
		printOnly               bool
		rdpOpts                 []string
	)
	cmd := &cobra.Command{
		Use:   "rdp TARGET [--port 3389] [--duration D --reason TEXT] [--print]",
		Short: "Open a remote desktop on a target with the platform's RDP client, through the bastion",
		Long: `Open a local bastion tunnel to a target's RDP port (as 'jitgate connect
--local' does) and start the platform's RDP client on it: xfreerdp or
wlfreerdp on Linux, the rdp:// handler (Microsoft Remote Desktop) on macOS,
mstsc on Windows. Without a live grant of yours for the port, it asks for a
bastion grant first (--duration and --reason are then required) and follows
it until it is active, as 'jitgate ssh' does.

With --print, or when no RDP client is found, it prints the command to run
and keeps the tunnel open until interrupted. Otherwise the tunnel closes when
the client exits, and the command exits with the client's status.`,
		Example: `  jitgate rdp win-01 --duration 1h --reason "INC-1234"
  jitgate rdp win-01 --print
  jitgate rdp win-01 --rdp-option /u:Administrator --rdp-option /sec:tls`,
		Args:              oneArg("TARGET"),
		ValidArgsFunction: a.completeTargets,
	}
	f := cmd.Flags()
	f.StringVarP(&portFlag, "port", "p", "3389", "the target's RDP port")
	f.StringVar(&local, "local", "", "loopback address of the tunnel (default 127.0.0.1:0: a free port)")
	f.BoolVar(&printOnly, "print", false, "print the RDP client's command line instead of starting it")
	f.Var(newDuration(&duration, 0), "duration", "how long a new grant lasts, such as 1h (needed when no live grant exists)")
	f.StringVar(&reason, "reason", "", "why you need access (for a new grant)")
	f.Var(newDuration(&waitTO, 2*time.Minute), "wait-timeout", "give up waiting for approval after this long")
	f.StringArrayVar(&rdpOpts, "rdp-option", nil, "an argument for the RDP client, such as /u:USER for xfreerdp (repeatable)")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		target := args[0]
		port, err := parseTunnelPort(portFlag)
		if err != nil {
			return err
		}
		if err := policy.ValidateTargetName(target); err != nil {
			return usagef("target %q: %v", target, err)
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if err := a.ensureBastionGrant(ctx, c, target, port, duration, reason, waitTO); err != nil {
			return err
		}
		ln, err := a.listenLocal(local, target, port)
		if err != nil {
			return err
		}
		defer ln.Close()
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		served := make(chan error, 1)
		go func() { served <- serveLocal(sctx, c, target, port, ln, a.stderr) }()

		addr := ln.Addr().String()
		client, found := rdpClient(runtime.GOOS, exec.LookPath)
		line := rdpCommand(runtime.GOOS, client, addr, rdpOpts)
		// macOS's open returns at once: the tunnel must outlive it.
		detached := runtime.GOOS == "darwin"
		if printOnly || !found {
			if !found {
				fmt.Fprintf(a.stderr, "no RDP client found (%s); run it yourself:\n", rdpClientHint(runtime.GOOS))
			}
			fmt.Fprintln(a.stdout, commandLine(line))
		} else {
			run := exec.CommandContext(ctx, line[0], line[1:]...)
			run.Stdin, run.Stdout, run.Stderr = os.Stdin, os.Stdout, os.Stderr
			err := run.Run()
			if !detached {
				stop()
				<-served //nolint:errcheck // the RDP client's outcome is the answer, the tunnel only ends with it
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return exitStatus(ee.ExitCode())
				}
				if err != nil {
					return fmt.Errorf("running %s: %w", line[0], err)
				}
				return nil
			}
			if err != nil {
				return fmt.Errorf("running %s: %w", commandLine(line), err)
			}
		}
		return <-served
	})
	return cmd
}

// rdpClient finds the platform's RDP client: on Windows and macOS the one
// the system ships (mstsc, open with the rdp:// handler); elsewhere the
// first of xfreerdp, wlfreerdp on PATH. found is false when none is.
func rdpClient(goos string, lookPath func(string) (string, error)) (name string, found bool) {
	switch goos {
	case "windows":
		_, err := lookPath("mstsc")
		return "mstsc", err == nil
	case "darwin":
		_, err := lookPath("open")
		return "open", err == nil
	}
	for _, n := range []string{"xfreerdp", "wlfreerdp"} {
		if _, err := lookPath(n); err == nil {
			return n, true
		}
	}
	return "xfreerdp", false
}

func rdpClientHint(goos string) string {
	switch goos {
	case "windows":
		return "mstsc"
	case "darwin":
		return "open with an rdp:// handler such as Microsoft Remote Desktop"
	}
	return "xfreerdp or wlfreerdp, from FreeRDP"
}

// rdpCommand is the command line that points client at the tunnel's local
// address addr (host:port), with the user's extra options.
func rdpCommand(goos, client, addr string, opts []string) []string {
	switch {
	case goos == "darwin" && client == "open":
		// Microsoft Remote Desktop's URI scheme: rdp://full%20address=s:HOST:PORT.
		return append([]string{"open"}, append(opts, "rdp://full%20address=s:"+addr)...)
	case client == "mstsc":
		return append([]string{"mstsc", "/v:" + addr}, opts...)
	}
	return append([]string{client, "/v:" + addr}, opts...)
}

// commandLine renders argv for the user to copy: shell-quoted.
func commandLine(argv []string) string {
	q := make([]string, len(argv))
	for i, s := range argv {
		q[i] = shellQuote(s)
	}
	return strings.Join(q, " ")
}
