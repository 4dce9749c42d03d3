package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/server"
	"github.com/jitgate/jitgate/internal/store"
)

// newBackupCmd copies the server's database while it runs. It works on the
// data directory, not through the API: it needs the server host's files,
// and the copy holds everything (hashed tokens, the audit trail).
func (a *app) newBackupCmd() *cobra.Command {
	var dataDir, to string
	cmd := &cobra.Command{
		Use:   "backup --data-dir DIR --to FILE",
		Short: "Copy the server's database, consistently, while the server runs",
		Long: `Copy the server's SQLite database to FILE (created with mode 0600; it must not
exist) in one consistent snapshot, while the server runs (SQLite VACUUM INTO).
Run it on the server host, as the user that owns the data directory.

The copy is marked as a backup: the first server start on it ends every grant
that is live in it (they may have been revoked or expired since), so restoring
it never reopens access. See docs/operations.md.`,
		Example: `  jitgate backup --data-dir /var/lib/jitgate --to /backup/jitgate-$(date +%F).db`,
		Args:    noArgs,
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the server's data directory (required)")
	cmd.Flags().StringVar(&to, "to", "", "file to write the copy to; must not exist (required)")
	_ = cmd.MarkFlagRequired("data-dir")
	_ = cmd.MarkFlagRequired("to")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if err := store.BackupSQLite(ctx, filepath.Join(dataDir, "jitgate.db"), to, time.Now()); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]string{"backup": to})
		}
		fmt.Fprintf(a.stdout, "backup written to %s (a server started on it ends the grants live in it)\n", to)
		return nil
	})
	return cmd
}

// newRestoreCmd puts a backup in place of the server's database, or marks a
// PostgreSQL database that was put back by PostgreSQL's own tools.
func (a *app) newRestoreCmd() *cobra.Command {
	var dataDir, from, database string
	cmd := &cobra.Command{
		Use:   "restore (--data-dir DIR --from FILE | --database postgres://...)",
		Short: "Put a backup in place of the stopped server's database",
		Long: `Put the database copy FILE in place of the server's database in DIR. The
server must be stopped (restore refuses while it holds the data directory).
The current database is kept beside it as jitgate.db.replaced-TIME.

At its next start the server ends every grant live in the restored copy
(revoked, "database restored"), and moves every target's revision above the
ones its agents applied, so nothing the copy brings back opens a port or shows
active. Agents that notice a revision lower than one they applied remove every
grant until the server moves past it. Requesters ask again.

With --database, the PostgreSQL database was put back with pg_restore (or
from a base backup) while every server was stopped: restore only marks it, so
that the first server start on it does the same. See docs/operations.md.`,
		Example: `  systemctl stop jitgate
  jitgate restore --data-dir /var/lib/jitgate --from /backup/jitgate-2026-01-02.db
  systemctl start jitgate

  pg_restore --clean --dbname jitgate /backup/jitgate.dump
  jitgate restore --database 'postgres://jitgate@db.example/jitgate?sslmode=verify-full'`,
		Args: noArgs,
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the server's data directory (SQLite)")
	cmd.Flags().StringVar(&from, "from", "", "the database copy to restore (SQLite)")
	cmd.Flags().StringVar(&database, "database", "", "PostgreSQL URL of a database put back by PostgreSQL's tools, to mark (default $JITGATE_DATABASE when --from is not given)")
	cmd.RunE = a.runE(func(ctx context.Context, _ []string) error {
		if database == "" && from == "" {
			database = a.env("JITGATE_DATABASE")
		}
		if database != "" {
			if from != "" || dataDir != "" {
				return usagef("--database marks a PostgreSQL database restored with its own tools; --from and --data-dir are for SQLite")
			}
			if !store.IsPostgresURL(database) {
				return usagef("--database: want a postgres:// or postgresql:// URL")
			}
			st, err := store.OpenPostgres(ctx, database, store.DefaultConfig())
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.MarkRestored(ctx, time.Now()); err != nil {
				return err
			}
			if a.jsonOut() {
				return a.printJSON(map[string]string{"marked": "database"})
			}
			fmt.Fprintln(a.stdout, "database marked as restored; its live grants end when the first server starts on it")
			return nil
		}
		if dataDir == "" || from == "" {
			return usagef("restore needs --data-dir and --from (SQLite), or --database (PostgreSQL)")
		}
		release, err := server.LockDataDir(dataDir)
		if err != nil {
			return err
		}
		defer release()
		replaced, err := store.RestoreSQLite(ctx, from, filepath.Join(dataDir, "jitgate.db"), time.Now())
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]string{"restored": from, "replaced": replaced})
		}
		fmt.Fprintf(a.stdout, "restored %s; its live grants end when the server starts", from)
		if replaced != "" {
			fmt.Fprintf(a.stdout, "; the replaced database is kept as %s", replaced)
		}
		fmt.Fprintln(a.stdout)
		return nil
	})
	return cmd
}
