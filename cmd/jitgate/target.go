package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/agent"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newTargetCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "target",
		Short: "Enroll and manage protected hosts",
	})
	a.addConnFlags(cmd)
	cmd.AddCommand(a.newTargetAddCmd(), a.newTargetListCmd(), a.newTargetShowCmd(), a.newTargetRemoveCmd(), a.newTargetEnrollTokenCmd())
	return cmd
}

// targetCreated is what 'target add --output json' prints: the API answer
// and the command to run on the host.
type targetCreated struct {
	wire.TargetCreated
	AgentCommand string `json:"agent_command"`
}

func (a *app) newTargetAddCmd() *cobra.Command {
	var (
		labels, addresses []string
		place             wire.TargetCreate
	)
	cmd := &cobra.Command{
		Use:   "add NAME [--label KEY=VALUE ...]",
		Short: "Enroll a host and print its one-time enrollment token",
		Long: `Enroll a host as a target and print its one-time enrollment token, with the
exact command to run on the host. The token is shown only once.`,
		Example: `  jitgate target add web-01 --label env=prod
  jitgate target add gw-1 --public-address 203.0.113.10      # then: jitgate agent --mode gateway ...
  jitgate target add db-01 --gateway gw-1 --address 10.0.0.5  # behind gw-1: no agent of its own
  jitgate target add db-02 --gateway gw-1 --address 10.0.0.6,2001:db8:10::6   # dual-stack: both gated`,
		Args: oneArg("target NAME"),
	}
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label KEY=VALUE (repeatable)")
	cmd.Flags().StringVar(&place.Gateway, "gateway", "", "the gateway target that enforces for this one (it needs no agent)")
	cmd.Flags().StringSliceVar(&addresses, "address", nil, "with --gateway: the target's address behind the gateway; repeat it or separate with commas for several (IPv4 and IPv6 of a dual-stack host: every one is gated)")
	cmd.Flags().StringVar(&place.PublicAddress, "public-address", "", "for a gateway: the address clients reach its published ports on")
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		in := wire.TargetCreate{Name: args[0], Gateway: place.Gateway, Addresses: addresses, PublicAddress: place.PublicAddress}
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
		if out.EnrollToken == "" {
			if a.jsonOut() {
				return a.printJSON(targetCreated{TargetCreated: out})
			}
			fmt.Fprintf(a.stdout, "target %s added behind gateway %s at %s; its gateway's agent enforces for it\n", esc(out.Target.Name), esc(out.Target.Gateway), esc(strings.Join(behindAddresses(out.Target), ", ")))
			return nil
		}
		return a.printEnrollment(out, conn, "added")
	})
	return cmd
}

// printEnrollment prints a target's new enrollment token and the agent
// command that uses it (or both as JSON).
func (a *app) printEnrollment(out wire.TargetCreated, conn connection, what string) error {
	agentCmd := "jitgate agent --server " + shellQuote(conn.server) + " --enroll-token " + shellQuote(out.EnrollToken)
	if conn.caFile != "" {
		agentCmd += " --ca-file " + shellQuote(conn.caFile)
	}
	if agent.NeedsInsecureHTTP(conn.server) {
		agentCmd += " --insecure-http" // as the CLI itself talks to it; better: serve TLS
	}
	if a.jsonOut() {
		return a.printJSON(targetCreated{out, agentCmd})
	}
	w := a.stdout
	fmt.Fprintf(w, "target %s %s\n\n", esc(out.Target.Name), what)
	fmt.Fprintf(w, "Enrollment token (shown once, valid until %s):\n  %s\n\n", fmtTime(out.EnrollExpiresAt), out.EnrollToken)
	fmt.Fprintf(w, "On %s, run as root:\n  %s\n", esc(out.Target.Name), esc(agentCmd))
	if conn.caFile != "" {
		fmt.Fprintf(w, "(copy %s to the host first)\n", conn.caFile)
	}
	return nil
}

func (a *app) newTargetEnrollTokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll-token NAME",
		Short: "Issue a new one-time enrollment token for an existing target",
		Long: `Issue a new one-time enrollment token for an existing target, to re-enroll its
host (reinstalled, or its agent's state directory lost) without removing the
target, its policy or its grants. Earlier unused enrollment tokens of the target
stop working; the current agent credential works until the new token is used.
Audited as target.enroll_token_issued.`,
		Example:           `  jitgate target enroll-token web-01`,
		Args:              oneArg("target NAME"),
		ValidArgsFunction: a.completeTargets,
	}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, conn, err := a.client()
		if err != nil {
			return err
		}
		out, err := c.ReissueEnrollToken(ctx, args[0])
		if err != nil {
			return err
		}
		return a.printEnrollment(out, conn, "may be re-enrolled")
	})
	return cmd
}

func (a *app) newTargetListCmd() *cobra.Command {
	var (
		state  string
		labels []string
	)
	cmd := &cobra.Command{
		Use:     "list [--state configured|not-configured|unsupported] [-l KEY=VALUE]",
		Aliases: []string{"ls"},
		Short:   "List targets",
		Example: `  jitgate target list -l group=prod
  jitgate targets -o wide
  jitgate targets --jq '.[].name'`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&state, "state", "", "only configured, not-configured or unsupported targets")
	addSelectorFlag(cmd, &labels, "only targets with these labels")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		switch state {
		case "", "configured", "not-configured", "unsupported":
		default:
			return usagef("--state %q: use configured, not-configured or unsupported", state)
		}
		sel, err := selectorOf(labels)
		if err != nil {
			return err
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		targets, err := c.TargetList(ctx, client.TargetFilter{Class: state, Selector: sel})
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
		header := []string{"NAME", "STATE", "AGENT", "LAST SEEN", "ADDRESSES", "GATED PORTS", "ACTIVE", "LAST ACCESS", "LABELS"}
		if a.wide() {
			header = append(header, "MODE", "AGENT VERSION", "REVISION", "CREATED")
		}
		tw := a.table(header...)
		for _, t := range targets {
			seen := ""
			if t.Agent.LastSeen != nil {
				seen = fmtRelative(*t.Agent.LastSeen, now)
			}
			addrs := strings.Join(t.Addresses, ",")
			if t.Gateway != "" {
				addrs = strings.Join(behindAddresses(t), ",") + " via " + t.Gateway
			}
			last := ""
			if t.Stats != nil && t.Stats.LastAccess != nil {
				last = fmtRelative(*t.Stats.LastAccess, now) + " by " + t.Stats.LastUser
			}
			cells := []string{t.Name, t.Class, agentState(t.Agent), seen, addrs, policyPorts(t.Policy), fmt.Sprint(t.ActiveGrants), last, fmtMap(t.Labels)}
			if a.wide() {
				cells = append(cells, t.Mode, t.Agent.Version, fmt.Sprintf("%d/%d", t.Agent.AppliedRevision, t.Agent.Revision), fmtTime(t.CreatedAt))
			}
			row(tw, cells...)
		}
		return tw.Flush()
	})
	return cmd
}

func (a *app) newTargetShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:               "show NAME",
		Short:             "Show a target, its agent and its policy",
		Args:              oneArg("target NAME"),
		ValidArgsFunction: a.completeTargets,
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
		row(tw, "State:", t.Class)
		if t.ClassReason != "" {
			row(tw, "Why:", t.ClassReason)
		}
		if t.Recommendation != "" {
			row(tw, "Recommendation:", t.Recommendation)
		}
		if t.Gateway != "" {
			row(tw, "Behind gateway:", t.Gateway+" at "+strings.Join(behindAddresses(t), ", "))
		}
		if t.Mode != "" {
			row(tw, "Mode:", t.Mode)
		}
		if t.PublicAddress != "" {
			row(tw, "Public address:", t.PublicAddress)
		}
		for _, m := range t.Mappings {
			row(tw, "Published:", fmt.Sprintf("%s:%d/%s -> %s:%d", m.PublicAddress, m.MappedPort, m.Protocol, m.Destination, m.Port))
		}
		row(tw, "Active grants:", fmt.Sprint(t.ActiveGrants))
		if t.PolicyRemoval != nil {
			row(tw, "Policy removal:", describePolicyRemoval(t.PolicyRemoval))
		}
		if t.Stats != nil && t.Stats.LastAccess != nil {
			row(tw, "Last access:", fmtTime(*t.Stats.LastAccess)+" by "+t.Stats.LastUser)
		}
		if inv := t.Inventory; inv != nil {
			var ls []string
			for _, l := range inv.Listening {
				ls = append(ls, fmt.Sprintf("%s:%d/%s", l.Address, l.Port, l.Protocol))
			}
			row(tw, "Listening:", strings.Join(ls, " "))
		}
		if b := t.Blocked; b != nil {
			for _, c := range b.Counters {
				row(tw, "Blocked:", fmt.Sprintf("%d/%s: %d packets, %d new connections", c.Port, c.Protocol, c.Packets, c.Connections))
			}
			for i, src := range b.TopSources {
				label := ""
				if i == 0 {
					label = "Top blocked (24h):"
				}
				row(tw, label, fmt.Sprintf("%s -> %d/%s: %d attempts, last %s", src.Source, src.Port, src.Protocol, src.Count, fmtRelative(src.LastSeen, now)))
			}
		}
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
		Long: `Remove a target and revoke its live requests.

A target with its own agent: the agent learns of the removal on its next
contact with the server (at once if it is connected, whenever it comes back
otherwise); it then deletes its nftables table, so the ports the policy
protected are open again, deletes its credential and stops. Until then the
kernel keeps the table as it was: protected ports stay closed, and the grants
of the revoked requests stay open until their deadline at the latest (those
revocations show as unconfirmed: no agent will confirm them). To remove the
table of a host whose agent will never come back, run
'nft delete table inet jitgate' on it. An agent whose host's table was last
programmed by the agent of another target (the host was enrolled again under
another name) leaves that table alone.

A target behind a gateway: the gateway stops gating and mapping it when its
agent applies the next revision, which confirms the revocations.

On a terminal the command asks first; --yes skips the question and is
needed when standard input is not a terminal. --dry-run says what would be
removed and revoked, and changes nothing.`,
		Args:              oneArg("target NAME"),
		ValidArgsFunction: a.completeTargets,
	}
	var cf confirmFlags
	addConfirmFlags(cmd, &cf)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if !cf.yes {
			t, err := c.Target(ctx, args[0])
			if err != nil {
				return err
			}
			what := fmt.Sprintf("remove target %s and revoke its %d active grant(s)", t.Name, t.ActiveGrants)
			if done, err := a.guard(cf, what); done || err != nil {
				return err
			}
		}
		if err := c.RemoveTarget(ctx, args[0]); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"target": args[0], "removed": true})
		}
		fmt.Fprintf(a.stdout, "target %s removed; its live requests are revoked (see 'jitgate target remove --help' for what happens to its firewall)\n", esc(args[0]))
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

// newTargetsCmd is "jitgate targets": the list, as a top-level verb.
func (a *app) newTargetsCmd() *cobra.Command {
	cmd := a.newTargetListCmd()
	cmd.Use = "targets [--state configured|not-configured|unsupported]"
	cmd.Aliases = nil
	a.addConnFlags(cmd)
	return cmd
}

// behindAddresses lists the addresses of a target behind a gateway (a
// server older than multi-address targets sends only Address).
func behindAddresses(t wire.Target) []string {
	if len(t.Addresses) > 0 {
		return t.Addresses
	}
	return []string{t.Address}
}
