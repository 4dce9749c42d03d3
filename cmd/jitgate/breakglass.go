package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newBreakGlassCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "breakglass",
		Short: "Emergency access: open without approvers, offline tokens, alerts",
		Long: `Break-glass is access in an emergency.

Online, a principal holding the breakglass role (bound on purpose: no other role
implies it) opens a rule's port at once, without approvers, within the rule's
allowed sources and maximum duration and the server's cap (--breakglass-max,
1h by default), with a mandatory reason. It is audited as breakglass.opened,
sent to every webhook whatever its event filter, and raised as an alert shown
on the console until an auditor or admin reviews it.

Offline, an admin issues a token in advance, signed by the server, bound to
targets, ports and a maximum duration, with an expiry. When the server is
unreachable, an operator on the host runs 'jitgate agent breakglass --token ...'
and the agent verifies and opens it alone; the use is reported as soon as the
server answers again. A token is usable once; a revoked token is refused by
every agent that heard of the revocation while connected.`,
	})
	a.addConnFlags(cmd)

	var (
		ports    []string
		source   string
		reason   string
		duration time.Duration
	)
	open := &cobra.Command{
		Use:     "open TARGET --port PORT --duration D --reason TEXT [--source my-ip|PREFIX]",
		Short:   "Open access now without approvers (breakglass role)",
		Example: `  jitgate breakglass open db-01 --port 5432 --duration 30m --reason "INC-42: primary down"`,
		Args:    oneArg("TARGET"),
	}
	open.Flags().StringArrayVarP(&ports, "port", "p", nil, "port: 22, 22/tcp or 53/udp (repeatable)")
	open.Flags().StringVar(&source, "source", "my-ip", "source: my-ip, an address or a CIDR prefix")
	open.Flags().StringVar(&reason, "reason", "", "why: mandatory, one line, at most 500 characters")
	open.Flags().Var(newDuration(&duration, 0), "duration", "how long, such as 30m (required)")
	open.RunE = a.runE(func(ctx context.Context, args []string) error {
		if len(ports) == 0 || duration == 0 || strings.TrimSpace(reason) == "" {
			return usagef("--port, --duration and --reason are required")
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		out, err := c.BreakGlass(ctx, wire.BreakGlassCreate{Target: args[0], Ports: ports, Source: source, Duration: wire.Duration(duration), Reason: reason})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "break-glass %s on %s: %s from %s until %s (alert %s raised; auditors are notified)\n", esc(out.Request.ID), esc(out.Request.Target),
			esc(strings.Join(out.Request.Ports, ", ")), esc(out.Request.Source), out.Request.ExpiresAt.Local().Format(time.DateTime), esc(out.Alert.ID))
		return nil
	})

	var all bool
	alerts := &cobra.Command{Use: "alerts [--all]", Short: "List break-glass alerts not reviewed yet (auditor, admin)", Args: noArgs}
	alerts.Flags().BoolVar(&all, "all", false, "list reviewed alerts too")
	alerts.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		as, err := c.BreakGlassAlerts(ctx, !all)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(as)
		}
		if len(as) == 0 {
			fmt.Fprintln(a.stdout, "no break-glass alerts")
		}
		for _, x := range as {
			state := "OPEN"
			if x.ReviewedAt != nil {
				state = "reviewed by " + esc(x.ReviewedBy)
			}
			fmt.Fprintf(a.stdout, "%s  %s  %s  %s by %s on %s: %s from %s for %s: %q  [%s]\n", esc(x.ID), x.At.Local().Format(time.DateTime), esc(x.Kind),
				"break-glass", esc(x.Actor), esc(x.Target), esc(strings.Join(x.Ports, ", ")), esc(x.Source), fmtDuration(time.Duration(x.Duration)), esc(x.Reason), state)
		}
		return nil
	})

	var note string
	review := &cobra.Command{Use: "review ALERT [--note TEXT]", Short: "Mark a break-glass alert reviewed (auditor, admin)", Args: oneArg("ALERT")}
	review.Flags().StringVar(&note, "note", "", "what the review found (one line)")
	review.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		x, err := c.ReviewAlert(ctx, args[0], note)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(x)
		}
		fmt.Fprintf(a.stdout, "alert %s reviewed\n", esc(x.ID))
		return nil
	})

	var (
		targets  []string
		tokPorts []string
		maxDur   time.Duration
		expires  time.Duration
	)
	issue := &cobra.Command{
		Use:   "issue --target T --port 22/tcp --max-duration 30m --expires 90d",
		Short: "Issue an offline break-glass token (admin); it is printed once",
		Long: `Issue an offline break-glass token: signed by the server's break-glass key, bound
to the targets and ports named, opening at most --max-duration, valid until
--expires from now. It is printed once: keep it where an operator finds it in an
emergency (a safe, a password manager). It works once, on one of its targets.`,
		Example: `  jitgate breakglass issue --target web-01 --port 22/tcp --max-duration 30m --expires 90d`,
		Args:    noArgs,
	}
	issue.Flags().StringArrayVar(&targets, "target", nil, "an existing target the token opens (repeatable)")
	issue.Flags().StringArrayVar(&tokPorts, "port", nil, "port the token opens: 22/tcp or 53/udp (repeatable)")
	issue.Flags().Var(newDuration(&maxDur, 0), "max-duration", "longest opening, such as 30m (required, at most 24h)")
	issue.Flags().Var(newDuration(&expires, 0), "expires", "validity from now, such as 90d or 72h (required, at most 400d)")
	issue.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if len(targets) == 0 || len(tokPorts) == 0 || maxDur == 0 || expires == 0 {
			return usagef("--target, --port, --max-duration and --expires are required")
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		out, err := c.IssueBreakGlassToken(ctx, wire.BreakGlassTokenCreate{Targets: targets, Ports: tokPorts, MaxDuration: wire.Duration(maxDur), Expires: wire.Duration(expires)})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "break-glass token %s: %s on %s, at most %s, until %s\n\nToken (shown once):\n%s\n", esc(out.Token.ID),
			esc(strings.Join(out.Token.Ports, ", ")), esc(strings.Join(out.Token.Targets, ", ")), fmtDuration(time.Duration(out.Token.MaxDuration)),
			out.Token.ExpiresAt.Local().Format(time.DateTime), out.Text)
		return nil
	})

	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List issued offline tokens (auditor, admin)", Args: noArgs}
	list.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		ts, err := c.BreakGlassTokens(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(ts)
		}
		for _, t := range ts {
			state := "valid"
			switch {
			case t.RevokedAt != nil:
				state = "revoked"
			case t.UsedAt != nil:
				state = "used on " + esc(t.UsedTarget)
			case !time.Now().Before(t.ExpiresAt):
				state = "expired"
			}
			fmt.Fprintf(a.stdout, "%s  %s on %s, at most %s, until %s, issued by %s  [%s]\n", esc(t.ID), esc(strings.Join(t.Ports, ", ")),
				esc(strings.Join(t.Targets, ", ")), fmtDuration(time.Duration(t.MaxDuration)), t.ExpiresAt.Local().Format(time.DateTime), esc(t.IssuedBy), state)
		}
		return nil
	})

	revoke := &cobra.Command{Use: "revoke ID", Short: "Revoke an offline token (admin); agents learn it with their next desired state", Args: oneArg("ID")}
	revoke.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		t, err := c.RevokeBreakGlassToken(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(t)
		}
		fmt.Fprintf(a.stdout, "break-glass token %s revoked\n", esc(t.ID))
		return nil
	})
	cmd.AddCommand(open, alerts, review, issue, list, revoke)
	return cmd
}
