package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newDecideCmd(approve bool) *cobra.Command {
	var (
		reason  string
		version int64
	)
	use, short := "approve ID [--reason TEXT]", "Approve a request awaiting approval"
	if !approve {
		use, short = "deny ID --reason TEXT", "Deny a request (ends it even if it was approved meanwhile)"
	}
	cmd := &cobra.Command{Use: use, Short: short, Args: oneArg("request ID"), ValidArgsFunction: a.completeRequestIDs}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the audit trail)")
	cmd.Flags().Int64Var(&version, "version", 0, "refuse if the request changed since this version (as shown by 'jitgate requests ID')")
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		var r wire.Request
		if approve {
			r, err = c.Approve(ctx, args[0], reason, version)
		} else {
			r, err = c.Deny(ctx, args[0], reason, version)
		}
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(r)
		}
		fmt.Fprintf(a.stdout, "request %s: %s\n", r.ID, esc(describeState(r)))
		return nil
	})
	return cmd
}

// describeState says where a request is, in words.
func describeState(r wire.Request) string {
	switch r.State {
	case "pending_approval":
		got := 0
		for _, d := range r.Decisions {
			if d.Decision == "approve" {
				got++
			}
		}
		n := r.ApprovalsRequired - got
		plural := "s"
		if n == 1 {
			plural = ""
		}
		if len(r.MissingApprovals) > 0 {
			var parts []string
			for _, m := range r.MissingApprovals {
				parts = append(parts, fmt.Sprintf("%d from %s", m.Count, m.From))
			}
			return fmt.Sprintf("pending approval: waiting for %d more approval%s (%s)", n, plural, strings.Join(parts, ", "))
		}
		return fmt.Sprintf("pending approval: waiting for %d more approval%s", n, plural)
	case "scheduled":
		if r.StartsAt != nil {
			return "scheduled: opens at " + fmtTime(*r.StartsAt) + " if still allowed then"
		}
		return "scheduled"
	case "pending":
		return "pending: waiting for the agent of " + r.Target + " to open " + strings.Join(r.Ports, ", ")
	case "active":
		return "active until " + fmtTime(r.ExpiresAt)
	}
	if r.Message != "" {
		return r.State + ": " + r.Message
	}
	return r.State
}

func (a *app) newRoleCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "role",
		Short: "Bind principals to roles in scopes",
		Long: `Bind a principal (user:NAME, group:NAME or service:NAME) to a role within a scope.

Roles: reader, requester, approver, policy-admin, auditor, admin.
Scopes: * (everything), a target (web-01 or target:web-01), or a label
(group=prod or label:group=prod; matched on the whole value).`,
	})
	a.addConnFlags(cmd)
	bindFlags := func(c *cobra.Command, b *wire.Binding) {
		c.Flags().StringVar(&b.Role, "role", "", "role: reader, requester, approver, policy-admin, auditor or admin")
		c.Flags().StringVar(&b.Scope, "scope", "*", "scope: *, a target name, or KEY=VALUE for a label")
	}
	parse := func(principal string, b *wire.Binding) error {
		p, err := authz.ParsePrincipal(principal)
		if err != nil {
			return usagef("%v", err)
		}
		if _, err := authz.ParseRole(b.Role); err != nil {
			return usagef("--role: %v", err)
		}
		s, err := authz.ParseScope(b.Scope)
		if err != nil {
			return usagef("--scope: %v", err)
		}
		b.Principal, b.Scope = p, string(s)
		return nil
	}
	var bind, unbind wire.Binding
	bindCmd := &cobra.Command{Use: "bind PRINCIPAL --role ROLE [--scope SCOPE]", Short: "Give a principal a role in a scope",
		Example: "  jitgate role bind group:ops --role approver --scope group=prod\n  jitgate role bind user:alice --role requester --scope web-01",
		Args:    oneArg("PRINCIPAL (user:NAME, group:NAME or service:NAME)")}
	bindFlags(bindCmd, &bind)
	bindCmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if err := parse(args[0], &bind); err != nil {
			return err
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		b, err := c.Bind(ctx, bind)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(b)
		}
		fmt.Fprintf(a.stdout, "%s is %s in %s\n", esc(b.Principal), esc(b.Role), esc(b.Scope))
		return nil
	})
	unbindCmd := &cobra.Command{Use: "unbind PRINCIPAL --role ROLE [--scope SCOPE]", Short: "Remove a binding", Args: oneArg("PRINCIPAL")}
	bindFlags(unbindCmd, &unbind)
	unbindCmd.RunE = a.runE(func(ctx context.Context, args []string) error {
		if err := parse(args[0], &unbind); err != nil {
			return err
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if err := c.Unbind(ctx, unbind); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(unbind)
		}
		fmt.Fprintf(a.stdout, "%s is no longer %s in %s\n", esc(unbind.Principal), esc(unbind.Role), esc(unbind.Scope))
		return nil
	})
	listCmd := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List bindings", Args: noArgs}
	listCmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		bs, err := c.Bindings(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(bs))
		}
		tw := a.table("PRINCIPAL", "ROLE", "SCOPE")
		for _, b := range bs {
			row(tw, b.Principal, b.Role, b.Scope)
		}
		return tw.Flush()
	})
	cmd.AddCommand(bindCmd, unbindCmd, listCmd)
	return cmd
}

func (a *app) newTokenCmd() *cobra.Command {
	cmd := group(&cobra.Command{Use: "token", Short: "Create, list and revoke API tokens"})
	a.addConnFlags(cmd)
	var (
		name    string
		ttl     time.Duration
		limits  []string
		service string
		user    string
		all     bool
	)
	create := &cobra.Command{
		Use:   "create --name NAME --ttl DURATION [--limit ROLE@SCOPE ...] [--service NAME]",
		Short: "Create a personal token (or, as admin, a service token); the secret is shown once",
		Long: `Create a personal token (or, as admin, a service token); the secret is shown once.

A personal token is made with the token you use (a single sign-on session,
another personal token): it never outlives that token (a longer --ttl is
capped, and the output says so) and is revoked with it. Service tokens
and --user tokens stand on their own.`,
		Example: `  jitgate token create --name laptop --ttl 720h
  jitgate token create --name ci --ttl 2160h --limit requester@group=ci
  jitgate token create --service deploy --name pipeline --ttl 720h --limit requester@web-01`,
		Args: noArgs,
	}
	create.Flags().StringVar(&name, "name", "", "what the token is for")
	create.Flags().Var(newDurationUntil(&ttl, 0, a.now), "ttl", "how long the token is valid, such as 30d, or until a date such as 2026-12-31 (required)")
	create.Flags().StringArrayVar(&limits, "limit", nil, "narrow the token to ROLE@SCOPE (repeatable); default: all your roles")
	create.Flags().StringVar(&service, "service", "", "create a token of this service account (admin)")
	create.Flags().StringVar(&user, "user", "", "create a personal token for this user (admin; refused with single sign-on; audited as impersonation)")
	create.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if ttl == 0 {
			return usagef("--ttl is required, such as --ttl 720h")
		}
		in := wire.TokenCreate{Name: name, TTL: wire.Duration(ttl), Service: service, User: user}
		for _, l := range limits {
			role, scope, ok := strings.Cut(l, "@")
			if !ok {
				role, scope = l, "*"
			}
			if _, err := authz.ParseRole(role); err != nil {
				return usagef("--limit %q: %v", l, err)
			}
			s, err := authz.ParseScope(scope)
			if err != nil {
				return usagef("--limit %q: %v", l, err)
			}
			in.Limits = append(in.Limits, wire.Grant{Role: role, Scope: string(s)})
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		out, err := c.CreateToken(ctx, in)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "token %s created for %s, valid until %s\n", esc(out.Token.ID), esc(out.Token.Subject), fmtTime(*out.Token.ExpiresAt))
		if out.Note != "" {
			fmt.Fprintf(a.stdout, "note: %s\n", esc(out.Note))
		}
		fmt.Fprintf(a.stdout, "\nSecret (shown once):\n  %s\n", out.Secret)
		return nil
	})
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List your tokens (--all: everyone's, admin)", Args: noArgs}
	list.Flags().BoolVar(&all, "all", false, "everyone's tokens (admin)")
	list.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		ts, err := c.Tokens(ctx, all)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(ts))
		}
		tw := a.table("ID", "KIND", "SUBJECT", "NAME", "LIMITS", "EXPIRES")
		for _, t := range ts {
			var ls []string
			for _, g := range t.Limits {
				ls = append(ls, g.Role+"@"+g.Scope)
			}
			exp := "never"
			if t.ExpiresAt != nil {
				exp = fmtTime(*t.ExpiresAt)
			}
			row(tw, t.ID, t.Kind, t.Subject, t.Name, strings.Join(ls, ","), exp)
		}
		return tw.Flush()
	})
	revoke := &cobra.Command{Use: "revoke ID [--yes] [--dry-run]", Short: "Revoke a token at once, and every token and console session made with it", Args: oneArg("token ID")}
	var cf confirmFlags
	addConfirmFlags(revoke, &cf)
	revoke.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if done, err := a.guard(cf, "revoke token "+args[0]+" and every token and console session made with it"); done || err != nil {
			return err
		}
		if err := c.RevokeToken(ctx, args[0]); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"id": args[0], "revoked": true})
		}
		fmt.Fprintf(a.stdout, "token %s revoked\n", args[0])
		return nil
	})
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func (a *app) newWhoamiCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "whoami", Short: "Show who your token speaks for and its roles", Args: noArgs}
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		w, err := c.Whoami(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(w)
		}
		fmt.Fprintf(a.stdout, "%s (%s token) from %s\n", esc(w.Subject), esc(w.Kind), esc(w.ClientAddr))
		if len(w.Groups) > 0 {
			fmt.Fprintf(a.stdout, "groups: %s\n", esc(strings.Join(w.Groups, ", ")))
		}
		for _, g := range w.Grants {
			fmt.Fprintf(a.stdout, "  %s in %s\n", esc(g.Role), esc(g.Scope))
		}
		return nil
	})
	return cmd
}
