package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/client"
)

// Label selectors (-l), shell completion and confirmation of destructive
// changes: the conventions every list and every destructive command share.

// addSelectorFlag adds -l/--selector KEY=VALUE (repeatable, or
// comma-separated) to a list command.
func addSelectorFlag(cmd *cobra.Command, labels *[]string, usage string) {
	cmd.Flags().StringArrayVarP(labels, "selector", "l", nil, usage+": KEY=VALUE, repeatable or KEY=VALUE,KEY=VALUE (all must match)")
}

// selectorOf joins -l values into one selector, checked.
func selectorOf(labels []string) (string, error) {
	sel := strings.Join(labels, ",")
	if _, err := client.ParseSelector(sel); err != nil {
		return "", usagef("-l: %v", err)
	}
	return sel, nil
}

// Completion: cobra's own "completion bash|zsh|fish|powershell" command
// writes the script; the script calls the hidden "__complete" command,
// which runs these functions. They ask the server with the usual
// credentials, briefly, and complete nothing when it does not answer: a
// <TAB> never prints an error or hangs.

// completionTimeout bounds one completion's round trip to the server.
const completionTimeout = 3 * time.Second

// completionClient returns a client for the flags and environment of the
// command line being completed, or nil.
func (a *app) completionClient() (*client.Client, context.Context, context.CancelFunc) {
	c, _, err := a.client()
	if err != nil {
		return nil, nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	return c, ctx, cancel
}

// completeTargets completes the first argument with target names.
func (a *app) completeTargets(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, ctx, cancel := a.completionClient()
	if c == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer cancel()
	ts, err := c.Targets(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, t := range ts {
		if strings.HasPrefix(t.Name, prefix) {
			out = append(out, cobra.CompletionWithDesc(t.Name, t.Class))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeRequestIDs completes the first argument with request ids, live
// ones first, described by target, ports and state.
func (a *app) completeRequestIDs(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, ctx, cancel := a.completionClient()
	if c == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer cancel()
	rs, err := c.Requests(ctx, client.RequestFilter{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var live, ended []cobra.Completion
	for _, r := range rs {
		if !strings.HasPrefix(r.ID, prefix) {
			continue
		}
		desc := fmt.Sprintf("%s %s %s", r.Target, strings.Join(r.Ports, ","), r.State)
		if isEnded(r.State) {
			ended = append(ended, cobra.CompletionWithDesc(r.ID, desc))
		} else {
			live = append(live, cobra.CompletionWithDesc(r.ID, desc))
		}
	}
	return append(live, ended...), cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
}

// completePorts completes --port with the ports the target's policy gates
// (the target is the command's first argument).
func (a *app) completePorts(_ *cobra.Command, args []string, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, ctx, cancel := a.completionClient()
	if c == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer cancel()
	p, err := c.Policy(ctx, args[0])
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, r := range p.Rules {
		name := ruleName(r)
		if strings.HasPrefix(name, prefix) && !slices.Contains(out, name) {
			out = append(out, cobra.CompletionWithDesc(name, "max "+fmtDuration(time.Duration(r.MaxDuration))))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// Confirmation: a destructive or bulk change asks "continue? [y/N]" on a
// terminal; --yes skips the question, and without a terminal the command
// refuses unless --yes is given (a script must say it means it). --dry-run
// says what would change and changes nothing.

// confirmFlags are --yes and --dry-run.
type confirmFlags struct {
	yes, dryRun bool
}

func addConfirmFlags(cmd *cobra.Command, cf *confirmFlags) {
	cmd.Flags().BoolVarP(&cf.yes, "yes", "y", false, "do not ask for confirmation (needed when standard input is not a terminal)")
	cmd.Flags().BoolVar(&cf.dryRun, "dry-run", false, "say what would change, change nothing")
}

// errDeclined is returned when the person answered no.
var errDeclined = fmt.Errorf("cancelled: nothing changed")

// confirm asks before what (a sentence such as "revoke request r-1 (web-01
// 22/tcp, alice)"). It returns nil to go on, and an error otherwise.
func (a *app) confirm(cf confirmFlags, what string) error {
	if cf.yes {
		return nil
	}
	if !a.stdinIsTerminal() {
		return usagef("refusing to %s without confirmation: standard input is not a terminal; pass --yes (or --dry-run to see what would change)", what)
	}
	fmt.Fprintf(a.stderr, "%s? [y/N] ", esc(capitalize(what)))
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("reading the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errDeclined
}

// stdinIsTerminal reports whether standard input is a terminal (tests
// stand in for one with stdinTTY).
func (a *app) stdinIsTerminal() bool {
	if a.stdinTTY != nil {
		return *a.stdinTTY
	}
	r, ok := a.stdin.(interface{ Fd() uintptr })
	return ok && isTerminalFd(r.Fd())
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// guard applies the convention before a destructive change described by
// what ("revoke request r-1 (web-01 22/tcp of alice)"): with --dry-run it
// prints what would happen (JSON: {"dry_run": true, "would": what}) and
// returns done; otherwise it asks (or checks --yes) and returns an error
// when the change must not go ahead.
func (a *app) guard(cf confirmFlags, what string) (done bool, err error) {
	if cf.dryRun {
		if a.jsonOut() {
			return true, a.printJSON(map[string]any{"dry_run": true, "would": what})
		}
		fmt.Fprintf(a.stdout, "would %s (dry run: nothing was changed)\n", esc(what))
		return true, nil
	}
	return false, a.confirm(cf, what)
}
