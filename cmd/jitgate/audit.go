package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jitgate/jitgate/internal/client"
)

// auditFlags are the filters shared by listing and exporting the trail.
type auditFlags struct {
	f            client.AuditFilter
	since, until string
}

func (af *auditFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&af.f.Target, "target", "", "only events of this target")
	fs.StringVar(&af.f.Actor, "actor", "", "only events by this user (or agent)")
	fs.StringVar(&af.f.RequestID, "request", "", "only events of this request")
	fs.StringVar(&af.f.Action, "action", "", "only this action, such as request.created")
	fs.StringVar(&af.since, "since", "", "only events at or after a duration ago (1h, 7d), a date (2026-12-07) or a time (RFC 3339)")
	fs.StringVar(&af.until, "until", "", "only events before a duration ago (1h, 1d), a date (2026-12-07) or a time (RFC 3339)")
}

// filter resolves --since and --until against now.
func (af *auditFlags) filter(now time.Time) (client.AuditFilter, error) {
	f := af.f
	var err error
	if f.Since, err = timeAgo("since", af.since, now); err != nil {
		return f, err
	}
	if f.Until, err = timeAgo("until", af.until, now); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, usagef("--until must be later than --since")
	}
	return f, nil
}

// timeAgo reads a flag holding an instant (parseInstant: a duration ago,
// a date, a time); "" is the zero time.
func timeAgo(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := parseInstant(s, now, true)
	if err != nil {
		return time.Time{}, usagef("--%s %v", flag, err)
	}
	return t, nil
}

// defaultAuditLimit is how many events 'jitgate audit' shows by default.
const defaultAuditLimit = 50

func (a *app) newAuditCmd() *cobra.Command {
	var (
		af      auditFlags
		oldest  bool
		afterID int64
		before  int64
	)
	cmd := &cobra.Command{
		Use:   "audit [--target NAME] [--actor USER] [--action ACTION] [--since 1d|DATE] [--until 1h|DATE] [--limit N] [--after ID] [--before ID]",
		Short: "Show the audit trail, newest first; verify or export it",
		Long: `Show the audit trail, newest first: the newest --limit events (50 by
default) that match, and a notice on standard error when older ones exist,
with the command that shows them (--before ID). --after ID shows only the
events after that one (what happened since you last looked); --oldest-first
turns the order round. Each event carries the hash of the one before it:
'jitgate audit verify' checks the whole chain and names the first event that
was altered, removed or reordered; 'jitgate audit export' writes every
matching event as JSON lines or CSV.`,
		Example: `  jitgate audit --target web-01 --since 1d
  jitgate audit --after 1234          # what happened since event 1234
  jitgate audit verify
  jitgate audit export --format csv --since 30d -f audit.csv`,
		Args: noArgs,
	}
	af.register(cmd.Flags())
	cmd.Flags().IntVar(&af.f.Limit, "limit", defaultAuditLimit, "at most this many events, 1 to 10000")
	cmd.Flags().Int64Var(&afterID, "after", 0, "only events after this event ID (newer)")
	cmd.Flags().Int64Var(&before, "before", 0, "only events before this event ID (older: the next page)")
	cmd.Flags().BoolVar(&oldest, "oldest-first", false, "list the oldest of the selected events first")
	_ = cmd.RegisterFlagCompletionFunc("target", a.completeTargets)
	a.addConnFlags(cmd)
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		f, err := af.filter(a.now())
		if err != nil {
			return err
		}
		if f.Limit < 1 || f.Limit > 10000 {
			return usagef("--limit must be from 1 to 10000")
		}
		if afterID < 0 || before < 0 || (before > 0 && afterID > 0 && before <= afterID+1) {
			return usagef("--after and --before must be event IDs with --after below --before")
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		limit := f.Limit
		f.AfterID, f.BeforeID = afterID, before
		f.Newest = true
		if limit < 10000 {
			f.Limit = limit + 1 // one more says whether more exist
		}
		es, err := c.Audit(ctx, f)
		if err != nil {
			return err
		}
		more := len(es) > limit
		if more {
			es = es[:limit]
		}
		if oldest {
			slices.Reverse(es)
		}
		if more {
			older := es[len(es)-1].ID
			if oldest {
				older = es[0].ID
			}
			defer fmt.Fprintf(a.stderr, "showing the newest %d matching events; older ones exist: add --before %d (or a larger --limit)\n", limit, older)
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(es))
		}
		if len(es) == 0 {
			fmt.Fprintln(a.stderr, "no audit events")
			return nil
		}
		header := []string{"ID", "TIME", "ACTOR", "ACTION", "TARGET", "REQUEST", "FROM", "REASON"}
		if a.wide() {
			header = append(header, "DETAILS")
		}
		tw := a.table(header...)
		for _, e := range es {
			cells := []string{fmt.Sprint(e.ID), fmtTime(e.At), e.Actor, e.Action, e.Target, e.RequestID, e.ClientAddr, e.Reason}
			if a.wide() {
				cells = append(cells, fmtMap(e.Details))
			}
			row(tw, cells...)
		}
		return tw.Flush()
	})
	cmd.AddCommand(a.newAuditVerifyCmd(), a.newAuditExportCmd())
	return cmd
}

func (a *app) newAuditVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the hash chain of the whole audit trail",
		Long: `Check that no audit event was altered, removed or reordered. Exits 0 when the
chain is intact, 1 naming the first bad event otherwise (newest events removed
too: the database keeps the greatest id the trail held). The head hash printed
on success, kept elsewhere, also shows a rewrite by whoever owns the database.`,
		Args: noArgs,
	}
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		res, err := c.VerifyAudit(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			if err := a.printJSON(res); err != nil {
				return err
			}
		} else if res.OK {
			fmt.Fprintf(a.stdout, "audit chain intact: %d events (head hash %s)\n", res.Events, orDefault(res.HeadHash, "none"))
		}
		if !res.OK {
			return fmt.Errorf("audit chain broken: %s", res.Problem)
		}
		return nil
	})
	return cmd
}

func (a *app) newAuditExportCmd() *cobra.Command {
	var (
		af     auditFlags
		format string
		file   string
	)
	cmd := &cobra.Command{
		Use:   "export [--format jsonl|csv] [-f FILE] [--target NAME] [--actor USER] [--action ACTION] [--since T] [--until T]",
		Short: "Write every matching audit event as JSON lines or CSV",
		Long: `Write every matching audit event, oldest first, as JSON lines (one event per
line) or CSV with a header row, to standard output or to a file. A file is
written under a temporary name and renamed when complete, so an interrupted
export never leaves a complete-looking file.`,
		Args: noArgs,
	}
	af.register(cmd.Flags())
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or csv")
	cmd.Flags().StringVarP(&file, "file", "f", "", "write to this file (mode 0600) instead of standard output")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if format != "jsonl" && format != "csv" {
			return usagef("--format %q: must be jsonl or csv", format)
		}
		f, err := af.filter(a.now())
		if err != nil {
			return err
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if file == "" || file == "-" {
			return c.ExportAudit(ctx, f, format, a.stdout)
		}
		return writeFileAtomic(file, func(w io.Writer) error { return c.ExportAudit(ctx, f, format, w) })
	})
	return cmd
}

// writeFileAtomic writes path (mode 0600) through a temporary file in the
// same directory, renamed over path only when write succeeded.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
