package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/store"
)

// newMigrateCmd copies an SQLite database into an empty PostgreSQL one: the
// move from one server to several replicas.
func (a *app) newMigrateCmd() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate --from sqlite:PATH --to postgres://...",
		Short: "Copy the SQLite database into an empty PostgreSQL database",
		Long: `Copy every row of the server's SQLite database at PATH into the PostgreSQL
database at the URL (or $JITGATE_DATABASE), which must be empty: no server may
have started on it. Ids, token hashes and the audit chain are kept; the copied
trail is verified (same events, same head) before migrate reports success. The
copy is one transaction: on an error while copying nothing is left in
PostgreSQL. A trail that does not verify on SQLite (altered, or its newest
events removed) is copied as it is, high-water mark included, so PostgreSQL
reports the same problem; migrate then says so and exits 1.

Stop the server first (migrate refuses while it holds the data directory),
then start the servers with --database URL. See docs/operations.md.`,
		Example: `  systemctl stop jitgate
  jitgate migrate --from sqlite:/var/lib/jitgate/jitgate.db --to 'postgres://jitgate@db.example/jitgate?sslmode=verify-full'
  jitgate server --data-dir /var/lib/jitgate --database 'postgres://jitgate@db.example/jitgate?sslmode=verify-full'`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&from, "from", "", "sqlite:PATH of the database to copy (required)")
	cmd.Flags().StringVar(&to, "to", "", "postgres:// URL of the empty database to fill (default $JITGATE_DATABASE)")
	_ = cmd.MarkFlagRequired("from")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		path, ok := strings.CutPrefix(from, "sqlite:")
		if !ok || path == "" {
			return usagef("--from %q: want sqlite:PATH", from)
		}
		if to == "" {
			to = a.env("JITGATE_DATABASE")
		}
		if !store.IsPostgresURL(to) {
			return usagef("--to: want a postgres:// or postgresql:// URL")
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("reading the SQLite database: %w", err)
		}
		// The server's lock: what a running server commits after the copy
		// would be lost.
		release, err := server.LockDataDir(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer release()
		src, err := store.OpenSQLite(ctx, path, store.DefaultConfig())
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := store.OpenPostgres(ctx, to, store.DefaultConfig())
		if err != nil {
			return err
		}
		defer dst.Close()
		rep, err := store.CopySQLiteToPostgres(ctx, src, dst)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"rows": rep.Rows, "audit_events": rep.Audit.Events, "audit_head": rep.Audit.Head})
		}
		var total int64
		tables := make([]string, 0, len(rep.Rows))
		for t, n := range rep.Rows {
			total += n
			if n > 0 {
				tables = append(tables, fmt.Sprintf("%s %d", t, n))
			}
		}
		sort.Strings(tables)
		fmt.Fprintf(a.stdout, "copied %d rows (%s) into PostgreSQL; audit chain verified: %d events, head %s\n",
			total, strings.Join(tables, ", "), rep.Audit.Events, rep.Audit.Head)
		return nil
	})
	return cmd
}
