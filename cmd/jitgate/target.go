package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newTargetCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "target",
		Short: "Enroll and manage protected hosts",
	})
	a.addConnFlags(cmd)
	cmd.AddCommand(a.newTargetAddCmd(), a.newTargetListCmd(), a.newTargetShowCmd(), a.newTargetRemoveCmd())
	return cmd
}

// targetCreated is what 'target add --output json' prints: the API answer
// and the command to run on the host.
type targetCreated struct {
	wire.TargetCreated
	AgentCommand string `json:"agent_command"`
}

func (a *app) newTargetAddCmd() *cobra.Command {
	var labels []string
	cmd := &cobra.Command{
		Use:   "add NAME [--label KEY=VALUE ...]",
		Short: "Enroll a host and print its one-time enrollment token",
		Long: `Enroll a host as a target and print its one-time enrollment token, with the
exact command to run on the host. The token is shown only once.`,
		Example: `  jitgate target add web-01 --label env=prod`,
		Args:    oneArg("target NAME"),
	}
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		in := wire.TargetCreate{Name: args[0]}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok || k == "" {
				return usagef("--label %q: use KEY=VALUE", l)
			}
			if in.Labels == nil {
				in.Labels = map[string]string{}
			}
			in.Labels[k] = v
		}
		c, conn, err := a.client()
		if err != nil {
			return err
		}
		out, err := c.CreateTarget(ctx, in)
		if err != nil {
			return err
		}
		agentCmd := "jitgate agent --server " + shellQuote(conn.server) + " --enroll-token " + shellQuote(out.EnrollToken)
		if conn.caFile != "" {
			agentCmd += " --ca-file " + shellQuote(conn.caFile)
		}
		if a.jsonOut() {
			return a.printJSON(targetCreated{out, agentCmd})
		}
		w := a.stdout
		fmt.Fprintf(w, "target %s added\n\n", out.Target.Name)
		fmt.Fprintf(w, "Enrollment token (shown once, valid until %s):\n  %s\n\n", fmtTime(out.EnrollExpiresAt), out.EnrollToken)
		fmt.Fprintf(w, "On %s, run as root:\n  %s\n", out.Target.Name, agentCmd)
		if conn.caFile != "" {
			fmt.Fprintf(w, "(copy %s to the host first)\n", conn.caFile)
		}
		return nil
	})
	return cmd
}

func (a *app) newTargetListCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List targets",
		Args:    noArgs,
	}
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		targets, err := c.Targets(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(targets))
		}
		if len(targets) == 0 {
			fmt.Fprintln(a.stderr, "no targets; add one with 'jitgate target add NAME'")
			return nil
		}
		now := a.now()
		tw := a.table("NAME", "AGENT", "LAST SEEN", "ADDRESSES", "GATED PORTS", "LABELS")
		for _, t := range targets {
			seen := ""
			if t.Agent.LastSeen != nil {
				seen = fmtRelative(*t.Agent.LastSeen, now)
			}
			row(tw, t.Name, agentState(t.Agent), seen, strings.Join(t.Addresses, ","), policyPorts(t.Policy), fmtMap(t.Labels))
		}
		return tw.Flush()
	})
	return cmd
}

func (a *app) newTargetShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a target, its agent and its policy",
		Args:  oneArg("target NAME"),
	}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		t, err := c.Target(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(t)
		}
		now := a.now()
		tw := a.table("Name:", t.Name)
		row(tw, "Labels:", fmtMap(t.Labels))
		row(tw, "Addresses:", strings.Join(t.Addresses, ", "))
		row(tw, "Created:", fmtTime(t.CreatedAt))
		row(tw, "Agent:", agentState(t.Agent))
		if t.Agent.LastSeen != nil {
			row(tw, "Last seen:", fmtTime(*t.Agent.LastSeen)+" ("+fmtRelative(*t.Agent.LastSeen, now)+")")
		}
		if t.Agent.Version != "" {
			row(tw, "Agent version:", t.Agent.Version)
		}
		row(tw, "Revision:", fmt.Sprintf("%d applied of %d", t.Agent.AppliedRevision, t.Agent.Revision))
		if t.Agent.Error != "" {
			row(tw, "Agent error:", t.Agent.Error)
		}
		if t.Policy == nil || len(t.Policy.Rules) == 0 {
			row(tw, "Policy:", "none (no port is gated)")
			return tw.Flush()
		}
		fmt.Fprintln(tw, "Policy:\t")
		if err := tw.Flush(); err != nil {
			return err
		}
		return a.printPolicy(*t.Policy, "  ")
	})
	return cmd
}

func (a *app) newTargetRemoveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a target and revoke its live requests",
		Long: `Remove a target and revoke its live requests. Its agent removes the nftables
table and its credential on its next contact.`,
		Args: oneArg("target NAME"),
	}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if err := c.RemoveTarget(ctx, args[0]); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"target": args[0], "removed": true})
		}
		fmt.Fprintf(a.stdout, "target %s removed\n", args[0])
		return nil
	})
	return cmd
}

// agentState summarises an agent's status in a few words.
func agentState(s wire.AgentStatus) string {
	st := s.State
	switch {
	case st == "never":
		st = "not enrolled"
	case s.Error != "":
		st += ", apply failed"
	case s.State == "connected" && s.AppliedRevision < s.Revision:
		st += ", applying"
	}
	return st
}

// policyPorts lists the ports a policy gates.
func policyPorts(p *wire.Policy) string {
	if p == nil {
		return ""
	}
	var ports []string
	for _, r := range p.Rules {
		ports = append(ports, ruleName(r))
	}
	return strings.Join(ports, ",")
}

// ruleName writes a rule's port as 22/tcp.
func ruleName(r wire.PortRule) string {
	proto := r.Protocol
	if proto == "" {
		proto = "tcp"
	}
	return fmt.Sprintf("%d/%s", r.Port, proto)
}

// nonNil makes a nil slice print as [] in JSON.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
