//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/agent"
	"github.com/jitgate/jitgate/internal/firewall/nft"
)

// newAgentBreakGlassCmd is `jitgate agent breakglass`: offline break-glass
// on the protected host itself (internal/agent/breakglass.go).
func (a *app) newAgentBreakGlassCmd() *cobra.Command {
	var (
		req      agent.OfflineRequest
		port     string
		duration time.Duration
	)
	cmd := &cobra.Command{
		Use:   "breakglass --token TOKEN --source ADDR --duration D [--port 22/tcp] [--reason TEXT]",
		Short: "Open this host with an offline break-glass token (when the server is unreachable)",
		Long: `Open one port of this host for one source with a break-glass token an admin issued
in advance, without the server: run it as root on the host. The token is checked
here, against the server's key the agent persisted while connected: its
signature, that it names this target and the port, that the duration is within
its maximum, that it has not expired, was not used before on this host and was
not revoked (as far as the agent heard while connected).

The use is written to the state directory's break-glass log (fsync'd) before
anything opens, then exactly (source, protocol, port) is added to the firewall
with a kernel timeout. No socket is involved: whether the agent runs or not, the
command programs the table itself, under the lock the agent takes for every
apply, and the running agent keeps the opening in every apply until its
deadline. The agent reports the use (audit, webhooks, alert) as soon as the
server answers again. Any refusal is one line and exit status 1, and nothing is
recorded or opened.`,
		Example: `  sudo jitgate agent breakglass --token "$(cat /root/bg-web-01.token)" --source 198.51.100.7 --duration 30m --reason "INC-42"`,
		Args:    noArgs,
	}
	f := cmd.Flags()
	f.StringVar(&req.Token, "token", "", "the break-glass token (default $JITGATE_BREAKGLASS_TOKEN)")
	f.StringVar(&req.Source, "source", "", "the address or prefix to open for (required)")
	f.StringVar(&port, "port", "", "the port: 22/tcp or 53/udp (default: the token's only port)")
	f.Var(newDuration(&duration, 0), "duration", "how long, at most the token's maximum (required)")
	f.StringVar(&req.Reason, "reason", "", "why (one line; reported to the server)")
	f.StringVar(&req.StateDir, "state-dir", "/var/lib/jitgate-agent", "the agent's state directory")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if req.Token == "" {
			req.Token = a.env("JITGATE_BREAKGLASS_TOKEN")
		}
		if req.Token == "" || req.Source == "" || duration == 0 {
			return usagef("--token, --source and --duration are required")
		}
		req.Port, req.Duration = port, duration
		req.Operator = operator()
		b, err := nft.New()
		if err != nil {
			return fmt.Errorf("opening nftables (run as root): %w", err)
		}
		defer b.Close()
		out, err := agent.OfflineBreakGlass(ctx, req, b, time.Now())
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "break-glass token %s: %s open for %s on %s until %s (kernel timeout); the server is told when it is reachable\n",
			esc(out.TokenID), esc(out.Port), esc(out.Source), esc(out.Target), out.Deadline.Local().Format(time.DateTime))
		return nil
	})
	return cmd
}

// operator names who ran the command, for the record: the user sudo ran it
// for, else the process's own.
func operator() string {
	if s := os.Getenv("SUDO_USER"); s != "" {
		return s
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}
