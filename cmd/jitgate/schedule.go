package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newScheduleCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "schedule",
		Short: "Recurring access: schedules whose occurrences become ordinary requests (policy-admin)",
		Long: `A schedule gives a principal (user:NAME or service:NAME) ports of a target from
a source, for a duration, at every occurrence of a cron expression (minute hour
day-of-month month day-of-week) in an IANA time zone. Each occurrence becomes an
ordinary, audited request of the principal, created 15 minutes before its start:
the rule's approvals apply (approvers may approve ahead), and the principal's
roles and the policy are checked again at the start. An occurrence whose window
passed while the server was down is not replayed; one still in its window is
made late, for what remains. On the zone's wall clock, a time skipped by a
daylight-saving change has no occurrence that day, and a repeated one fires once.
Adding or removing a schedule takes policy-admin on the target; a schedule's own
principal may remove it.`,
	})
	a.addConnFlags(cmd)
	var (
		ports    []string
		source   string
		cronSpec string
		zone     string
		duration time.Duration
		reason   string
	)
	add := &cobra.Command{
		Use:   "add PRINCIPAL TARGET --port PORT ... --source ADDR --cron EXPR --timezone ZONE --duration D --reason TEXT",
		Short: "Add a schedule",
		Example: `  jitgate schedule add user:alice db-01 --port 5432 --source 198.51.100.7 --cron "0 22 * * 1-5" \
      --timezone Europe/Berlin --duration 2h --reason "CHG-42 nightly maintenance"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("expected PRINCIPAL TARGET (such as user:alice web-01), got %d arguments", len(args))
			}
			return nil
		},
	}
	f := add.Flags()
	f.StringArrayVarP(&ports, "port", "p", nil, "port: 22, 22/tcp or 53/udp (repeatable)")
	f.StringVar(&source, "source", "", "source: an address or a CIDR prefix (required)")
	f.StringVar(&cronSpec, "cron", "", `when: minute hour day-of-month month day-of-week, such as "0 22 * * 1-5" (required)`)
	f.StringVar(&zone, "timezone", "UTC", "IANA time zone of the cron expression, such as Europe/Berlin")
	f.Var(newDuration(&duration, 0), "duration", "how long each occurrence lasts, such as 2h (required)")
	f.StringVar(&reason, "reason", "", "why: one line, recorded with every occurrence's request")
	add.RunE = a.runE(func(ctx context.Context, args []string) error {
		switch {
		case len(ports) == 0:
			return usagef("name at least one --port")
		case source == "":
			return usagef("--source is required: an address or a CIDR prefix")
		case cronSpec == "":
			return usagef(`--cron is required, such as --cron "0 22 * * 1-5"`)
		case duration == 0:
			return usagef("--duration is required, such as --duration 2h")
		}
		if err := policy.CheckReason(strings.TrimSpace(reason)); err != nil {
			return usagef("--reason: %s", strings.TrimPrefix(err.Error(), "reason: "))
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		sc, err := c.CreateSchedule(ctx, wire.ScheduleCreate{Principal: args[0], Target: args[1], Ports: ports, Source: source,
			Cron: cronSpec, TimeZone: zone, Duration: wire.Duration(duration), Reason: reason})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(sc)
		}
		next := "never"
		if sc.NextAt != nil {
			next = fmtTime(*sc.NextAt)
		}
		fmt.Fprintf(a.stdout, "schedule %s added: %s on %s %s from %s, %q in %s for %s; next occurrence %s\n", esc(sc.ID), esc(sc.Principal),
			esc(sc.Target), esc(strings.Join(sc.Ports, ",")), esc(sc.Source), esc(sc.Cron), esc(sc.TimeZone), fmtDuration(time.Duration(sc.Duration)), next)
		return nil
	})
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List the schedules you may see", Args: noArgs}
	list.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		scs, err := c.Schedules(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(scs))
		}
		tw := a.table("ID", "PRINCIPAL", "TARGET", "PORTS", "SOURCE", "CRON", "TIMEZONE", "DURATION", "NEXT", "LAST REQUEST")
		for _, sc := range scs {
			next := "never"
			if sc.NextAt != nil {
				next = fmtTime(*sc.NextAt)
			}
			row(tw, sc.ID, sc.Principal, sc.Target, strings.Join(sc.Ports, ","), sc.Source, sc.Cron, sc.TimeZone,
				fmtDuration(time.Duration(sc.Duration)), next, sc.LastRequest)
		}
		return tw.Flush()
	})
	remove := &cobra.Command{Use: "remove ID [--yes] [--dry-run]", Aliases: []string{"rm"}, Short: "Remove a schedule (the requests it made stay)", Args: oneArg("schedule ID")}
	var cf confirmFlags
	addConfirmFlags(remove, &cf)
	remove.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if done, err := a.guard(cf, "remove schedule "+args[0]); done || err != nil {
			return err
		}
		if err := c.DeleteSchedule(ctx, args[0]); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"id": args[0], "removed": true})
		}
		fmt.Fprintf(a.stdout, "schedule %s removed\n", esc(args[0]))
		return nil
	})
	cmd.AddCommand(add, list, remove)
	return cmd
}
