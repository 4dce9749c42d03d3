// Command jitgate is the one binary of jitgate: the server, the agent that
// runs on every protected host, and the command-line client.
//
// This package holds flags and wiring only; behaviour lives in internal/.
package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/itchyny/gojq"
	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/text"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version from the build info is used.
var version string

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run executes the command line args and returns the exit status: 0 on
// success, 1 on a runtime error, 2 on a usage error. Errors are printed to
// stderr as one line.
func run(args []string, stdout, stderr io.Writer, env func(string) string) int {
	return runIO(args, os.Stdin, stdout, stderr, env)
}

// runIO is run with the standard input made explicit, for tests.
func runIO(args []string, stdin io.Reader, stdout, stderr io.Writer, env func(string) string) int {
	// Everything printed passes through text.Writer: text from the server
	// (an old row, an audit detail, an agent's report) may hold control
	// characters, and none of them reaches the terminal raw.
	return newApp(stdin, stdout, stderr, env).run(args)
}

// newApp returns the app of one invocation on these streams.
func newApp(stdin io.Reader, stdout, stderr io.Writer, env func(string) string) *app {
	return &app{stdin: stdin, stdout: text.NewWriter(stdout), rawStdout: stdout, stderr: text.NewWriter(stderr), env: env, now: time.Now, progressEvery: 30 * time.Second}
}

// app holds the streams and the flag values of one invocation.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// rawStdout is stdout before escaping: only for colour codes added to
	// text already escaped (paintLines) and to ask whether it is a terminal.
	rawStdout io.Writer
	env       func(string) string
	now       func() time.Time

	// output is the --output flag: text, json, yaml or wide (output.go).
	output string
	// jq is the --jq flag, compiled into jqCode by checkOutput.
	jq     string
	jqCode *gojq.Code
	// conn holds the client flags --server, --token, --ca-file.
	conn connFlags
	// progressEvery is how often --wait says it still waits (30 s).
	progressEvery time.Duration
	// stdinTTY, when set, says whether stdin is a terminal (tests).
	stdinTTY *bool
	// started is set once a command's own code runs: errors before that
	// are usage errors (bad flags, bad arguments).
	started bool
	// ctx is the run's context, cancelled by the first Ctrl-C: --jq
	// evaluates under it (an expression may run for ever).
	ctx context.Context
}

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func (a *app) run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal cancels ctx and lets the command wind down; stopping
	// the relay then makes a second signal end the process at once.
	context.AfterFunc(ctx, stop)
	a.ctx = ctx

	root := a.newRoot()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	var es exitStatus
	if errors.As(err, &es) {
		return int(es) // ssh's own status; ssh printed why
	}
	msg := errorLine(err)
	var ue *usageError
	if !a.started || errors.As(err, &ue) {
		fmt.Fprintf(a.stderr, "error: %s\nsee '%s --help' for usage\n", msg, cmd.CommandPath())
		return exitUsage
	}
	fmt.Fprintf(a.stderr, "error: %s\n", msg)
	return exitError
}

// usageError is a mistake in the command line itself.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// errorLine renders err as one readable line.
func errorLine(err error) string {
	var (
		ue  *url.Error
		uae x509.UnknownAuthorityError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.As(err, &uae):
		return "the server's TLS certificate is signed by an unknown authority: pass its CA with --ca-file"
	case errors.As(err, &ue):
		host := ue.URL
		if u, perr := url.Parse(ue.URL); perr == nil {
			host = u.Scheme + "://" + u.Host
		}
		if errors.Is(ue.Err, context.DeadlineExceeded) || ue.Timeout() {
			return fmt.Sprintf("no answer from %s (timed out)", host)
		}
		return fmt.Sprintf("cannot reach %s: %v", host, ue.Err)
	}
	msg := err.Error()
	// Cobra appends suggestions on new lines: keep them on this one.
	if head, sugg, ok := strings.Cut(msg, "\n\nDid you mean this?\n"); ok {
		var names []string
		for _, s := range strings.Fields(sugg) {
			names = append(names, fmt.Sprintf("%q", s))
		}
		msg = fmt.Sprintf("%s (did you mean %s?)", head, strings.Join(names, " or "))
	}
	lines := strings.FieldsFunc(msg, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return text.Escape(strings.Join(lines, "; "))
}

// newRoot builds the command tree.
func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "jitgate",
		Short: "Just-in-time network access: ports stay closed until someone asks",
		Long: `jitgate keeps the ports of protected hosts closed and opens them, for one source
and a limited time, when someone asks with a reason.

  jitgate server      run the server
  jitgate agent       run the agent on a protected host
  jitgate target ...  enroll and manage protected hosts
  jitgate policy ...  say which ports are gated, for how long, from where
  jitgate request     ask for access; jitgate revoke ends it
  jitgate ssh         log in through the bastion (jitgate connect for other clients)
  jitgate breakglass  emergency access without approvers, and offline tokens

Lists and shows take -o text|json|yaml|wide and --jq EXPR; lists take -l KEY=VALUE.
Destructive changes ask first (--yes in scripts, --dry-run to see). Durations: 90m, 1d,
7d; times: 2026-12-07, 2026-12-07 15:04, 22:00. Shell completion: jitgate completion bash|zsh|fish.

Client commands find the server and token in --server/--token, else in
JITGATE_SERVER/JITGATE_TOKEN, else in $XDG_CONFIG_HOME/jitgate/config.yaml
(default ~/.config/jitgate/config.yaml) with the keys server, token, ca_file.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// No Args validator: cobra's own check of the root's arguments
		// reports unknown commands with suggestions.
	}
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "text", "output format: text, json, yaml or wide (text with every column)")
	root.PersistentFlags().StringVar(&a.jq, "jq", "", "filter the JSON output with a jq expression, such as '.[].id' (strings print raw)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(outputFormats, cobra.ShellCompDirectiveNoFileComp))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	root.AddCommand(
		a.newServerCmd(),
		a.newAgentCmd(),
		a.newTargetCmd(),
		a.newPolicyCmd(),
		a.newApplyCmd(),
		a.newRequestCmd(),
		a.newRequestsCmd(),
		a.newRevokeCmd(),
		a.newAuditCmd(),
		a.newVersionCmd(),
		a.newLoginCmd(), a.newLogoutCmd(),
		a.newDecideCmd(true),
		a.newDecideCmd(false),
		a.newRoleCmd(),
		a.newTokenCmd(),
		a.newWhoamiCmd(),
		a.newTargetsCmd(),
		a.newWebhookCmd(),
		a.newScheduleCmd(),
		a.newBreakGlassCmd(),
		a.newBackupCmd(), a.newRestoreCmd(), a.newMigrateCmd(),
		a.newConnectCmd(), a.newSSHCmd(), a.newSSHCertCmd(), a.newSSHCACmd(), a.newRDPCmd(), a.newSessionsCmd(),
	)
	return root
}

// runE wraps a command's code: it checks the global flags, marks the start
// of runtime (so later errors are not usage errors) and passes the context.
func (a *app) runE(f func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := a.checkOutput(); err != nil {
			return err
		}
		a.started = true
		return f(cmd.Context(), args)
	}
}

// group makes cmd a parent of subcommands that prints its help when called
// alone and refuses unknown subcommands in one line.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		var names []string
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				names = append(names, s.Name())
			}
		}
		return usagef("unknown command %q for %q (use one of: %s)", args[0], c.CommandPath(), strings.Join(names, ", "))
	}
	return cmd
}

// Argument validators that fail with usage errors naming what is missing.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return usagef("%q takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

func oneArg(what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) == 0:
			return usagef("missing %s", what)
		case len(args) > 1:
			return usagef("expected one %s, got %d arguments: %s", what, len(args), strings.Join(args, " "))
		}
		return nil
	}
}
