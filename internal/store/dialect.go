package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver for PostgreSQL

	"github.com/jitgate/jitgate/internal/random"
)

// dialect is what differs between the two databases the store runs on. The
// store's SQL is otherwise written once, in the subset both speak: $n
// placeholders, INSERT ... ON CONFLICT, RETURNING, integers for times (UTC
// ms) and flags (0/1), JSON kept as TEXT. The schema differs in its types
// only (INTEGER → BIGINT, AUTOINCREMENT → identity columns), so each
// database has its own migrations, numbered alike (migrations_test.go).
type dialect struct {
	name string
	// migrations is the directory of the embedded migrations.
	migrations string
	// lockWrites is run first in every write transaction. SQLite needs
	// none: every write transaction is BEGIN IMMEDIATE, one writer at a
	// time. On PostgreSQL a transaction-scoped advisory lock gives the same
	// order to every replica's writers, and at READ COMMITTED each later
	// statement reads what the previous writer committed, so the
	// read-decide-write sequences of the store (the live-grant check, the
	// caps on live requests, compare-and-set on request versions, the audit
	// chain head) hold across replicas exactly as they do on one SQLite
	// file. The cost is that writes do not run in parallel, as on SQLite;
	// reads (agents' long polls, listings) do not take the lock.
	lockWrites string
	// writeTx are the options of write transactions. On PostgreSQL READ
	// COMMITTED is asked for explicitly: under a stricter default
	// (default_transaction_isolation set by an operator) the snapshot
	// would be taken by the lock statement, before the lock is granted,
	// and the transaction would not see the writer before it
	// (TestPostgresReplicasStricterDefault).
	writeTx *sql.TxOptions
}

var (
	sqliteDialect = dialect{name: "sqlite", migrations: "migrations"}
	// 0x6a697467 is "jitg": the one advisory lock key of the store.
	postgresDialect = dialect{name: "postgres", migrations: "migrations_postgres",
		lockWrites: `SELECT pg_advisory_xact_lock(1785295975)`,
		writeTx:    &sql.TxOptions{Isolation: sql.LevelReadCommitted}}
)

// IsPostgresURL reports whether database names a PostgreSQL database
// (postgres:// or postgresql://) rather than an SQLite file.
func IsPostgresURL(database string) bool {
	return strings.HasPrefix(database, "postgres://") || strings.HasPrefix(database, "postgresql://")
}

// Open opens the database named by database: a postgres:// (or
// postgresql://) URL opens PostgreSQL (OpenPostgres), anything else is the
// path of an SQLite file (OpenSQLite). An invalid cfg is an error.
func Open(ctx context.Context, database string, cfg Config) (*Store, error) {
	if IsPostgresURL(database) {
		return OpenPostgres(ctx, database, cfg)
	}
	return OpenSQLite(ctx, database, cfg)
}

// OpenPostgres connects to the PostgreSQL database at url (a libpq-style
// URL: postgres://user:password@host:port/db?sslmode=verify-full, or
// ?host=/dir for a unix socket) and brings its schema up to date. Several
// servers may open the same database: migrations and writes are serialized
// between them (dialect.lockWrites). An invalid cfg is an error, before
// anything is connected.
func OpenPostgres(ctx context.Context, url string, config Config) (*Store, error) {
	if err := config.Validate(); err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL: %w", err)
	}
	// Every connection of this handle names it, so that its own commits'
	// notifications are told apart from the other replicas' (feed_postgres.go).
	origin := random.ID("", 10)
	cfg.RuntimeParams[originParam] = origin
	db := stdlib.OpenDB(*cfg)
	// Reads run in parallel; writers queue on the write lock while holding a
	// connection each, so leave room for readers beside them.
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	s, err := open(ctx, db, postgresDialect, config, "")
	if err != nil {
		return nil, err
	}
	s.startListener(ctx, url, origin)
	return s, nil
}

// Dialect names the database the store runs on: "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect.name }
