package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/policyfile"
	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newPolicyCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "policy",
		Short: "Set, show or remove a target's JIT policy",
	})
	a.addConnFlags(cmd)
	cmd.AddCommand(a.newPolicySetCmd(), a.newPolicyShowCmd(), a.newPolicyExportCmd(), a.newPolicyRemoveCmd(), a.newPolicyEnableCmd())
	return cmd
}

func (a *app) newPolicySetCmd() *cobra.Command {
	var (
		ports     []string
		sources   []string
		maxDur    time.Duration
		mode      string
		approvals int
		just      wire.Justification
		cut       bool
		publish   bool
		mapped    uint16
		dry       bool
	)
	cmd := &cobra.Command{
		Use:   "set TARGET --port PORT[/PROTO] ... [--max DURATION] [--source PREFIX ...]",
		Short: "Replace a target's JIT policy: its ports close to everyone not granted",
		Long: `Replace a target's JIT policy. Every --port given shares --max and --source.
Without --source the requester names the source per request (one address by
default). Setting the policy the target already has changes nothing.

The output lists every change; a change that weakens the gate is marked
(weaker), and ports of the old policy that the new one leaves out are named:
they are no longer gated. --dry-run shows this and changes nothing.`,
		Example: `  jitgate policy set web-01 --port 22/tcp --max 3h --source 198.51.100.0/24
  jitgate policy set win-01 --port 3389 --port 5986 --max 1h --dry-run
  jitgate policy set db-01 --port 5432 --window "Mon-Fri 08:00-18:00 Europe/Berlin" \
      --approvals-from group:dba=1 --approvals-from group:security=1`,
		Args:              oneArg("TARGET"),
		ValidArgsFunction: a.completeTargets,
	}
	cmd.Flags().StringArrayVar(&ports, "port", nil, "port to gate: 22, 22/tcp or 53/udp (repeatable)")
	cmd.Flags().StringArrayVar(&sources, "source", nil, "allowed source prefix, IPv4 or IPv6 (repeatable)")
	cmd.Flags().Var(newDuration(&maxDur, 0), "max", "longest grant on these ports, 5m to 24h (default 3h)")
	cmd.Flags().StringVar(&mode, "approval", "auto", "auto (approved at once) or manual (approvers must agree)")
	cmd.Flags().IntVar(&approvals, "approvals", 1, "with --approval manual: how many distinct approvers")
	cmd.Flags().BoolVar(&just.Required, "require-reason", false, "requests must give a reason")
	cmd.Flags().IntVar(&just.MinLength, "min-reason", 0, "shortest reason accepted")
	cmd.Flags().BoolVar(&cut, "close-established", false, "expiry and revocation also end established sessions")
	cmd.Flags().BoolVar(&publish, "publish", false, "behind a gateway: publish the port on the gateway's public address (DNAT)")
	cmd.Flags().Uint16Var(&mapped, "mapped-port", 0, "with --publish: the mapped port to use, 20000-29999 (default: allocated there); publishing needs write rights on the gateway too")
	cmd.Flags().StringVar(&just.Pattern, "reason-pattern", "", "regular expression the reason must match, such as '^(INC|CHG)-[0-9]+'")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show what would change, and change nothing")
	var (
		accessFlag string
		idle       time.Duration
		logins     []string
		record     bool
		recordIn   bool
	)
	cmd.Flags().BoolVar(&record, "record", false, "with --access bastion: sessions go through the server's recorded SSH terminal (raw tunnels refused)")
	cmd.Flags().BoolVar(&recordIn, "record-input", false, "with --record: record keystrokes too")
	cmd.Flags().StringArrayVar(&logins, "login", nil, "a user name on the target that jitgate's SSH CA may sign certificates for on these ports (repeat; `jitgate ssh` then logs in without the user's own keys)")
	cmd.Flags().Var(newDuration(&idle, 0), "idle-timeout", "with --access bastion or both: end bastion sessions idle this long (default never)")
	var (
		windows []string
		groups  []string
	)
	cmd.Flags().StringArrayVar(&windows, "window", nil, "a time window in which grants may start, such as \"Mon-Fri 08:00-18:00 Europe/Berlin\" (repeatable; grants end when it closes; default always)")
	cmd.Flags().StringArrayVar(&groups, "approvals-from", nil, "ask for approvals from a group or role, FROM[=N] such as group:dba=1 or role:approver=2 (repeatable; distinct approvers; makes approval manual)")
	cmd.Flags().StringVar(&accessFlag, "access", "direct", "how a grant is used: direct (opens the port to the source address), bastion (only through `jitgate connect`/`jitgate ssh`; opens nothing) or both")
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if len(ports) == 0 {
			return usagef("name at least one --port")
		}
		acc, err := policy.ParseAccess(accessFlag)
		if err != nil {
			return usagef("--access %q: use direct, bastion or both", accessFlag)
		}
		if acc == policy.AccessDirect {
			acc = ""
		}
		for _, l := range logins {
			if err := policy.CheckLogin(l); err != nil {
				return usagef("--login: %v", err)
			}
		}
		var pol wire.Policy
		for _, s := range sources {
			if _, err := policy.ParsePrefix(s); err != nil || !strings.Contains(s, "/") {
				return usagef("--source %q: use a CIDR prefix such as 198.51.100.0/24 or 2001:db8::/48", s)
			}
		}
		for _, w := range windows {
			if _, err := policy.ParseWindow(w); err != nil {
				return usagef("--window %v", err)
			}
		}
		var byGroup []wire.GroupApproval
		for _, g := range groups {
			from, n, hasN := strings.Cut(g, "=")
			count := 1
			if hasN {
				if count, err = strconv.Atoi(n); err != nil || count < 1 || count > policy.MaxApprovals {
					return usagef("--approvals-from %q: the count after = must be a number from 1 to %d", g, policy.MaxApprovals)
				}
			}
			if err := policy.CheckApproverSet(from); err != nil {
				return usagef("--approvals-from %v", err)
			}
			byGroup = append(byGroup, wire.GroupApproval{From: from, Count: count})
		}
		if len(byGroup) > 0 && !cmd.Flags().Changed("approval") {
			mode = policy.Manual
			if !cmd.Flags().Changed("approvals") {
				approvals = 0
			}
		}
		approval := &wire.Approval{Mode: mode}
		switch mode {
		case policy.Auto:
		case policy.Manual:
			approval.Approvals = approvals
		default:
			return usagef("--approval %q: use auto or manual", mode)
		}
		var justification *wire.Justification
		if just != (wire.Justification{}) {
			justification = &just
		}
		for _, s := range ports {
			p, err := policy.ParsePort(s)
			if err != nil {
				return usagef("--port: %v", err)
			}
			pol.Rules = append(pol.Rules, wire.PortRule{Port: p.Number, Protocol: string(p.Protocol),
				AllowedSources: sources, MaxDuration: wire.Duration(maxDur), Approval: approval, Justification: justification,
				CloseEstablished: cut, Publish: publish, MappedPort: mapped, Access: string(acc),
				IdleTimeout: wire.Duration(idle), Logins: logins, Record: record, RecordInput: recordIn,
				Windows: windows, Approvals: byGroup})
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		set := c.SetPolicy
		if dry {
			set = c.PlanPolicy
		}
		res, err := set(ctx, args[0], pol)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(res)
		}
		a.printResult(res)
		return a.printPolicy(res.Policy, "  ")
	})
	return cmd
}

// printResult says what setting a policy did or, in a dry run, would do:
// one line for the target, one per change (weakening ones marked), and the
// ports no longer gated.
func (a *app) printResult(res wire.PolicyResult) {
	state := "unchanged"
	switch {
	case res.DryRun && res.Changed:
		state = "would change (dry run: nothing was changed)"
	case res.DryRun:
		state = "unchanged (dry run)"
	case res.Changed:
		state = "policy set"
	}
	fmt.Fprintf(a.stdout, "%s: %s\n", esc(res.Target), state)
	for _, c := range res.Changes {
		fmt.Fprintf(a.stdout, "  %s\n", esc(c.Summary))
	}
	if len(res.Dropped) > 0 {
		verb := "drops"
		if res.DryRun {
			verb = "would drop"
		}
		fmt.Fprintf(a.stdout, "  %s %s: no longer gated, open to anyone who can reach %s\n", verb, esc(strings.Join(res.Dropped, ", ")), esc(res.Target))
	}
}

// printPolicy writes one line per rule.
func (a *app) printPolicy(p wire.Policy, indent string) error {
	tw := a.table(indent+"PORT", "MAX", "APPROVAL", "REASON", "ALLOWED SOURCES", "OPTIONS")
	for _, r := range p.Rules {
		srcs := "per request"
		if len(r.AllowedSources) > 0 {
			srcs = strings.Join(r.AllowedSources, ", ")
		}
		approval := "auto"
		if r.Approval != nil && r.Approval.Mode == policy.Manual {
			approval = fmt.Sprintf("manual (%d)", r.Approval.Approvals)
		}
		reason := "optional"
		if j := r.Justification; j != nil {
			var parts []string
			if j.Required {
				parts = append(parts, "required")
			}
			if j.MinLength > 0 {
				parts = append(parts, fmt.Sprintf("≥ %d chars", j.MinLength))
			}
			if j.Pattern != "" {
				parts = append(parts, "matches "+j.Pattern)
			}
			reason = strings.Join(parts, ", ")
		}
		var opts []string
		if r.Access != "" && r.Access != string(policy.AccessDirect) {
			opts = append(opts, "access "+r.Access)
		}
		if r.IdleTimeout != 0 {
			opts = append(opts, "idle timeout "+fmtDuration(time.Duration(r.IdleTimeout)))
		}
		if len(r.Logins) > 0 {
			opts = append(opts, "logins "+strings.Join(r.Logins, ","))
		}
		if len(r.Approvals) > 0 {
			var gs []string
			for _, g := range r.Approvals {
				gs = append(gs, fmt.Sprintf("%d from %s", g.Count, g.From))
			}
			opts = append(opts, "approvals "+strings.Join(gs, " + "))
		}
		if len(r.Windows) > 0 {
			opts = append(opts, "windows "+strings.Join(r.Windows, "; "))
		}
		if r.Record {
			opts = append(opts, "recorded")
		}
		if r.RecordInput {
			opts = append(opts, "input recorded")
		}
		if r.CloseEstablished {
			opts = append(opts, "close established")
		}
		if r.Publish {
			if r.MappedPort != 0 {
				opts = append(opts, fmt.Sprintf("published on %d", r.MappedPort))
			} else {
				opts = append(opts, "published")
			}
		}
		row(tw, indent+ruleName(r), fmtDuration(time.Duration(r.MaxDuration)), approval, reason, srcs, strings.Join(opts, ", "))
	}
	return tw.Flush()
}

func (a *app) newPolicyShowCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "show TARGET", Short: "Show a target's JIT policy", Args: oneArg("TARGET"), ValidArgsFunction: a.completeTargets}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		p, err := c.Policy(ctx, args[0])
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(p)
		}
		return a.printPolicy(p, "")
	})
	return cmd
}

func (a *app) newPolicyRemoveCmd() *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{
		Use:     "remove TARGET [--wait D]",
		Aliases: []string{"rm"},
		Short:   "Remove a target's JIT policy: its ports open again once its agent applies that",
		Long: `Remove a target's JIT policy. Its ports open again when the target's agent (or
its gateway's) applies the change, which it confirms as it confirms a grant. The
command waits up to --wait for that confirmation and says whether it came; until
it does, the target shows the policy removal as unconfirmed and the ports may
still be closed.

On a terminal the command asks first; --yes skips the question and is
needed when standard input is not a terminal. --dry-run names the ports
that would stop being gated, and changes nothing.`,
		Args:              oneArg("TARGET"),
		ValidArgsFunction: a.completeTargets,
	}
	var cf confirmFlags
	addConfirmFlags(cmd, &cf)
	cmd.Flags().Var(newWaitDuration(&wait, 5*time.Second), "wait", "how long to wait for the agent to confirm (0: do not wait)")
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		// What the question named is what is removed: the DELETE names the
		// policy shown (If-Match), so one changed meanwhile is refused.
		remove := func() error { return c.RemovePolicy(ctx, args[0]) }
		if !cf.yes {
			p, etag, err := c.PolicyETag(ctx, args[0])
			if err != nil {
				return err
			}
			what := fmt.Sprintf("remove the policy of %s: %s stop being gated (open to everyone)", args[0], orDefault(policyPorts(&p), "no port"))
			if done, err := a.guard(cf, what); done || err != nil {
				return err
			}
			remove = func() error { return c.RemovePolicyIf(ctx, args[0], etag) }
		}
		if err := remove(); err != nil {
			return err
		}
		t, err := c.Target(ctx, args[0])
		if err != nil {
			return err
		}
		// Targets have no long-poll: ask again until confirmed or wait ends.
		for deadline := a.now().Add(wait); t.PolicyRemoval != nil && t.PolicyRemoval.State == "unconfirmed" && a.now().Before(deadline); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			if t, err = c.Target(ctx, args[0]); err != nil {
				return err
			}
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"target": args[0], "removed": true, "policy_removal": t.PolicyRemoval})
		}
		fmt.Fprintf(a.stdout, "%s: policy removed; %s\n", esc(args[0]), esc(describePolicyRemoval(t.PolicyRemoval)))
		return nil
	})
	return cmd
}

// describePolicyRemoval says whether the agent applied a policy removal.
func describePolicyRemoval(rm *wire.Removal) string {
	switch {
	case rm == nil:
		return "its ports are no longer gated"
	case rm.State == "confirmed":
		return fmt.Sprintf("its ports are no longer gated: the agent of %s confirmed it at %s", rm.Agent, fmtTime(derefTime(rm.ConfirmedAt)))
	}
	agent := rm.AgentState
	if rm.AgentLastSeen != nil {
		agent += ", last seen " + fmtTime(*rm.AgentLastSeen)
	}
	return fmt.Sprintf("not yet confirmed by the agent of %s (%s, since %s): its ports stay closed until it applies revision %d",
		rm.Agent, agent, fmtTime(rm.Since), rm.Revision)
}

func (a *app) newApplyCmd() *cobra.Command {
	var (
		file string
		dry  bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Set the policies a YAML file declares (idempotent)",
		Long: `Set the JIT policies a YAML file declares, target by target. Applying the same
file again changes nothing. Unknown keys are refused with their line number.

Each target's policy is replaced by the file's: a key left out means what it
means in a rule created fresh (auto approval, an optional reason, sessions
kept at expiry, not published). The output lists every change and marks the
ones that weaken the gate (weaker); --dry-run shows them and changes nothing.
Every policy in the file is checked by the server before any is set: a file
with one refused policy changes nothing.
"jitgate policy export" writes a file that applies back with no change.

  policies:
    - target: web-01
      rules:
        - port: 22
          protocol: tcp                       # default tcp
          max_duration: 3h                    # default: the server's (3h)
          allowed_sources: [198.51.100.0/24]  # default: per request
          approval: {mode: manual, approvals: 2}   # default: auto
          justification: {required: true, min_length: 10, pattern: "^INC-[0-9]+"}
          close_established: true             # default false
          publish: true                       # behind a gateway; default false
          mapped_port: 20022                  # with publish; default: allocated
          windows: ["Mon-Fri 08:00-18:00 Europe/Berlin"]  # when grants may start; default always
          approvals: [{from: group:dba, count: 1}, {from: group:security, count: 1}]  # by group`,
		Args: noArgs,
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "policy file, or - for standard input")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show what would change, and change nothing")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if file == "" {
			return usagef("name the policy file with -f FILE")
		}
		in := a.stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return fmt.Errorf("opening policy file: %w", err)
			}
			defer f.Close()
			in = f
		}
		pf, err := policyfile.Parse(in)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		// Every policy is checked by the server (a dry run) before any is
		// set, so a file with one bad policy changes nothing.
		var results []wire.PolicyResult
		for _, p := range pf.Policies {
			res, err := c.PlanPolicy(ctx, p.Target, p.Wire())
			if err != nil {
				return fmt.Errorf("%s line %d: target %s: %w (nothing was changed)", file, p.Line, p.Target, err)
			}
			results = append(results, res)
		}
		for i, p := range pf.Policies {
			if !dry {
				// Only the policy the plan was made against is replaced: a
				// change by someone else since then refuses this one (412).
				res, err := c.SetPolicyIf(ctx, p.Target, p.Wire(), results[i].ETag)
				if err != nil {
					return fmt.Errorf("%s line %d: target %s: %w", file, p.Line, p.Target, err)
				}
				results[i] = res
			}
			if !a.jsonOut() {
				a.printResult(results[i])
			}
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(results))
		}
		return nil
	})
	a.addConnFlags(cmd)
	return cmd
}

func (a *app) newPolicyExportCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export [TARGET...]",
		Short: "Write targets' policies as a policy file that apply -f applies back unchanged",
		Long: `Write the JIT policies of the named targets (default: every target that has
one) as a YAML policy file. Every setting is written, so "jitgate apply -f" of
the file changes nothing; edit it and apply it to change policies as code.`,
		Example: `  jitgate policy export > policies.yaml
  jitgate policy export web-01 db-01 > policies.yaml`,
	}
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if a.jsonOut() {
			return usagef("export writes YAML; use policy show TARGET -o json for JSON")
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		var f policyfile.File
		add := func(target string, p wire.Policy) error {
			pp, err := policyfile.FromWire(target, p)
			if err != nil {
				return fmt.Errorf("exporting %s: %w", target, err)
			}
			f.Policies = append(f.Policies, pp)
			return nil
		}
		if len(args) == 0 {
			ts, err := c.Targets(ctx)
			if err != nil {
				return err
			}
			for _, t := range ts {
				if t.Policy != nil {
					if err := add(t.Name, *t.Policy); err != nil {
						return err
					}
				}
			}
			if len(f.Policies) == 0 {
				return errors.New("no target has a policy: nothing to export")
			}
		}
		for _, name := range args {
			p, err := c.Policy(ctx, name)
			if err != nil {
				return err
			}
			if err := add(name, p); err != nil {
				return err
			}
		}
		fmt.Fprintln(a.stdout, "# JIT policies exported by jitgate policy export; apply with: jitgate apply -f FILE")
		return f.Encode(a.stdout)
	})
	return cmd
}

func (a *app) newPolicyEnableCmd() *cobra.Command {
	var (
		selector string
		def      bool
		dry      bool
	)
	cmd := &cobra.Command{
		Use:   "enable --default --selector KEY=VALUE[,KEY=VALUE]",
		Short: "Apply the default policy (22, 3389, 5985, 5986/tcp, 3h) to every matching target without one",
		Long: `Apply the default policy (22, 3389, 5985, 5986/tcp, 3h) to every target the
selector matches. A target that already has a policy keeps it, and a target
whose agent cannot enforce is left alone: each skipped target is named with
the reason. --dry-run shows what would be done and changes nothing.`,
		Example: "  jitgate policy enable --default --selector group=prod --dry-run",
		Args:    noArgs,
	}
	cmd.Flags().StringVar(&selector, "selector", "", "labels every target must carry, KEY=VALUE[,KEY=VALUE]")
	cmd.Flags().BoolVar(&def, "default", false, "apply the default policy (required: the only one applied in bulk)")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show what would be done, and change nothing")
	var yes bool
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation (needed when standard input is not a terminal)")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if !def {
			return usagef("--default is required: only the default policy is applied in bulk")
		}
		if selector == "" {
			return usagef("name the targets with --selector KEY=VALUE")
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if !dry && !yes {
			// A bulk change: say which targets it changes, then ask.
			plan, err := c.EnablePolicy(ctx, selector, true)
			if err != nil {
				return err
			}
			var names []string
			for _, r := range plan.Enabled {
				names = append(names, r.Target)
			}
			if len(names) == 0 {
				names = []string{"no target"}
			}
			if err := a.confirm(confirmFlags{}, fmt.Sprintf("apply the default policy to %d target(s): %s", len(plan.Enabled), strings.Join(names, ", "))); err != nil {
				return err
			}
		}
		res, err := c.EnablePolicy(ctx, selector, dry)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(res)
		}
		for _, r := range res.Enabled {
			state := "default policy set"
			if r.DryRun {
				state = "would get the default policy (dry run: nothing was changed)"
			}
			fmt.Fprintf(a.stdout, "%s: %s\n", esc(r.Target), esc(state))
		}
		for _, s := range res.Skipped {
			fmt.Fprintf(a.stdout, "%s: skipped: %s\n", esc(s.Target), esc(s.Reason))
		}
		return nil
	})
	return cmd
}
