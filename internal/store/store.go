// Package store persists jitgate's state in SQL: targets and their policies,
// access requests and the live grants they hold, tokens (hashed) and the
// audit trail. Every operation that changes state runs in one transaction
// together with its audit events, and is committed and fsynced (WAL; the
// writer commits and a syncer beside it fsyncs, syncer.go, or with
// Config.InlineSync synchronous=FULL in the COMMIT) before the caller
// reports it.
package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"modernc.org/sqlite" // pure-Go SQLite driver: no cgo, one static binary
)

// Sentinel errors; the API maps them to HTTP status codes.
var (
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("conflict")
	ErrUnauthorized = errors.New("invalid or expired token")
)

//go:embed migrations/*.sql migrations_postgres/*.sql
var migrations embed.FS

// Store is a jitgate database.
type Store struct {
	db *sql.DB
	// queries counts the statements run (SQLite; Queries).
	queries *atomic.Int64
	// dialect holds what differs between SQLite and PostgreSQL (dialect.go).
	dialect dialect
	// feed tells subscribers about committed changes (feed.go); on
	// PostgreSQL, listener hears those of the other replicas
	// (feed_postgres.go).
	feed    feed
	reqFeed requestFeed
	// early tells subscribers which enforcers' revisions a commit moved
	// as soon as it is committed, before it is durable (SubscribeCommitted).
	early    feed
	listener *pgListener
	// cfg is the configuration the store was opened with (validated).
	cfg Config
	// onWriteError is told of write transactions that failed for a storage
	// reason (storage.go).
	onWriteError func(cause string, err error)
	// w is the group-commit writer every write transaction goes through
	// (groupcommit.go).
	w writer
	// sqlitePath is the SQLite database file ("" on PostgreSQL): migrate
	// copies it aside before changing its schema.
	sqlitePath string
	// wconn is the SQLite connection the group-commit writer keeps for its
	// transactions (beginWrite; nil until the first, and on PostgreSQL).
	// Only the writer goroutine touches it.
	wconn *sql.Conn
}

// DefaultBruteForceThreshold is the default Config.BruteForceThreshold.
const DefaultBruteForceThreshold = 20

// DefaultApprovalTimeout is the default Config.ApprovalTimeout.
const DefaultApprovalTimeout = time.Hour

// Config is what a store is told at construction and keeps for its life:
// the parameters of the rules the domain packages decide (approval timeout,
// expiry warnings, brute-force alerting). The store decides nothing with
// them itself; it passes them to those rules inside its transactions.
type Config struct {
	// ApprovalTimeout is how long a request awaits its approvers before it
	// expires (access.ApproveBy). Must be positive.
	ApprovalTimeout time.Duration
	// ExpiryWarning is how long before its deadline Sweep announces that an
	// active request expires soon (audit event request.expiring); requests
	// active for no longer than that in all are not announced, the warning
	// would come with the access. Zero turns the warnings off; negative is
	// invalid.
	ExpiryWarning time.Duration
	// BruteForceThreshold is how many blocked attempts from one source
	// within an hour raise a "possible brute force" event. Zero: never;
	// negative is invalid.
	BruteForceThreshold int
	// GatherDelay is how long, under load, the group-commit writer holds a
	// batch for more writes (groupcommit.go). Zero: never (the default);
	// at most MaxGatherDelay.
	GatherDelay time.Duration
	// InlineSync makes an SQLite store's writer fsync inside each COMMIT
	// (synchronous=FULL) instead of handing the fsync to the syncer beside
	// it (pipelined durability, syncer.go, the default). Either way nothing
	// is reported before it is durable. PostgreSQL: no effect.
	InlineSync bool
}

// MaxGatherDelay bounds Config.GatherDelay: every write of a gathered
// batch waits up to that long.
const MaxGatherDelay = 10 * time.Millisecond

// DefaultConfig is the configuration of a store nobody configured: the
// default approval timeout and brute-force threshold, and no expiry
// warnings (the server asks for DefaultExpiryWarning).
func DefaultConfig() Config {
	return Config{ApprovalTimeout: DefaultApprovalTimeout, BruteForceThreshold: DefaultBruteForceThreshold}
}

// Validate checks c and names the bad field.
func (c Config) Validate() error {
	if c.ApprovalTimeout <= 0 {
		return fmt.Errorf("store config: approval timeout %s must be positive", c.ApprovalTimeout)
	}
	if c.ExpiryWarning < 0 {
		return fmt.Errorf("store config: expiry warning %s must not be negative (0: none)", c.ExpiryWarning)
	}
	if c.BruteForceThreshold < 0 {
		return fmt.Errorf("store config: brute-force threshold %d must not be negative (0: never)", c.BruteForceThreshold)
	}
	if c.GatherDelay < 0 || c.GatherDelay > MaxGatherDelay {
		return fmt.Errorf("store config: write gather delay %s must lie between 0 (never) and %s", c.GatherDelay, MaxGatherDelay)
	}
	return nil
}

// sqliteConns is the size of an SQLite store's connection pool: the
// writer's and the readers'.
const sqliteConns = 8

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date. An invalid cfg is an error, before anything
// is created.
func OpenSQLite(ctx context.Context, path string, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating database directory: %w", err)
	}
	// SQLite gives the -wal and -shm files the mode of the database file, so
	// the file must be owner-only before SQLite first opens it; a chmod
	// afterwards would leave them world-readable until the next restart.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	f.Close()
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("restricting %s: %w", p, err)
		}
	}
	// temp_store(MEMORY) keeps the statement journal in memory: every
	// operation of a group commit runs under a savepoint (groupcommit.go),
	// and each page it changes first is copied to that journal, which on
	// SQLite's default spills to a temporary file: one pwrite per page, 7 %
	// of the server's CPU under the open-loop load. The journal only undoes
	// a savepoint; durability is the WAL's, unchanged.
	dsn := SQLiteDSN(path, "_pragma=journal_mode(WAL)", "_pragma=synchronous(FULL)",
		"_pragma=busy_timeout(10000)", "_pragma=foreign_keys(1)", "_pragma=temp_store(MEMORY)", "_txlock=immediate")
	queries := new(atomic.Int64)
	db := sql.OpenDB(cachingConnector{dsn: dsn, drv: &sqlite.Driver{}, queries: queries})
	// One writer at a time is SQLite's model; a small pool lets readers
	// proceed while a write transaction runs (WAL). Every connection is
	// kept open (idle as many as open): a connection closed for being idle
	// beyond database/sql's default of 2 loses its prepared statements, and
	// under load the pool churned, re-parsing the hot statements on each
	// new connection (11 % of the server's CPU under the open-loop load).
	db.SetMaxOpenConns(sqliteConns)
	db.SetMaxIdleConns(sqliteConns)
	db.SetConnMaxIdleTime(0)
	s, err := open(ctx, db, sqliteDialect, cfg, path)
	if err != nil {
		return nil, err
	}
	s.queries = queries
	return s, nil
}

// writerCacheKiB is the page cache of the SQLite writer's own connection
// (PRAGMA cache_size, in KiB; SQLite's default is 2,000). See beginWrite.
const writerCacheKiB = 32 << 10

// writerCheckpointPages is the WAL's size, in pages, at which the writer's
// commit checkpoints it (PRAGMA wal_autocheckpoint). See beginWrite.
const writerCheckpointPages = 8000

// beginWrite begins the group-commit writer's transaction. On SQLite it
// runs on one connection kept for the writer: in WAL mode a connection
// drops its whole page cache when it begins a transaction after another
// connection committed, so a writer that took whichever connection a
// reader had just released (database/sql hands out the last one freed)
// found its cache emptied by its own previous commit, and read every page
// it touched again (pread, 3 % of the server's CPU at 1,000 requests/s,
// and the page lookups around it). Kept, the writer's connection sees only
// its own commits, and its cache (writerCacheKiB, larger than the default:
// the indexes a request's insert walks) stays warm. Only the writer
// goroutine calls it.
func (s *Store) beginWrite() (*sql.Tx, error) {
	ctx := context.Background()
	if s.dialect.name != sqliteDialect.name {
		return s.db.BeginTx(ctx, s.dialect.writeTx)
	}
	if s.wconn == nil {
		c, err := s.db.Conn(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := c.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = -%d`, writerCacheKiB)); err != nil {
			discardConn(c)
			return nil, fmt.Errorf("sizing the writer's page cache: %w", err)
		}
		// The writer checkpoints the WAL into the database every
		// writerCheckpointPages pages (SQLite's default: 1,000): a
		// checkpoint copies the newest copy of each page the WAL holds, and
		// the pages a request writes (index roots, the targets' rows, the
		// change log's end) are the same few thousand over and over, so a
		// longer interval copies each of them less often. The WAL stays
		// below ~32 MiB; durability is the WAL's, fsynced at every commit.
		if _, err := c.ExecContext(ctx, fmt.Sprintf(`PRAGMA wal_autocheckpoint = %d`, writerCheckpointPages)); err != nil {
			discardConn(c)
			return nil, fmt.Errorf("setting the writer's checkpoint interval: %w", err)
		}
		// The writer's commits are made durable by the syncer, beside it
		// (syncer.go): its COMMIT writes the WAL without fsync. Every
		// other connection keeps the DSN's synchronous=FULL.
		if s.w.syncer != nil {
			if _, err := c.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err != nil {
				discardConn(c)
				return nil, fmt.Errorf("setting the writer's synchronous mode: %w", err)
			}
		}
		s.wconn = c
	}
	tx, err := s.wconn.BeginTx(ctx, s.dialect.writeTx)
	if err != nil {
		// A connection that failed (another process held the write lock
		// beyond the busy timeout) is closed; the next batch opens another.
		s.dropWriterConn()
	}
	return tx, err
}

// dropWriterConn closes the writer's connection. sql.Conn.Close would give
// it back to the pool, where a reader would take it with the writer's page
// cache and checkpoint interval, one more such connection at every failure
// (TestWriterConnectionNotGivenBack); a Raw call that answers
// driver.ErrBadConn makes database/sql close it instead.
func (s *Store) dropWriterConn() {
	if s.wconn != nil {
		discardConn(s.wconn)
		s.wconn = nil
	}
}

// discardConn closes c's connection rather than giving it back to the pool.
func discardConn(c *sql.Conn) {
	// Raw's error is the ErrBadConn asked for; Close's is ErrConnDone
	// (closed by Raw already).
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	_ = c.Close()
}

// Queries is how many statements (reads and writes) s has run on SQLite
// since it was opened, 0 on PostgreSQL: tests count the reads of a hot
// path with it (the agent's long-poll answer).
func (s *Store) Queries() int64 {
	if s.queries == nil {
		return 0
	}
	return s.queries.Load()
}

// open finishes opening a store on db: it brings the schema up to date and
// chains audit events written before the chain existed. cfg is valid.
func open(ctx context.Context, db *sql.DB, d dialect, cfg Config, sqlitePath string) (*Store, error) {
	s := &Store{db: db, dialect: d, cfg: cfg, sqlitePath: sqlitePath}
	if sqlitePath != "" && !cfg.InlineSync && pipelinedDurability.Load() {
		// The syncer fsyncs the files SQLite writes: SQLite resolves
		// symbolic links in the path it is given (a database path that is
		// a link to a file elsewhere has its WAL beside that file), so the
		// name is SQLite's own, not sqlitePath.
		var file string
		if err := db.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
			db.Close()
			return nil, fmt.Errorf("reading the database file's name: %w", err)
		}
		if file == "" {
			db.Close()
			return nil, fmt.Errorf("reading the database file's name: SQLite names none for %s", sqlitePath)
		}
		s.w.syncer = newSyncer(file)
	}
	if cfg.GatherDelay > 0 {
		p := gatherWith(cfg.GatherDelay)
		s.w.gather.Store(&p)
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.chainUnhashed(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// Ping checks that the database answers a query (the server's /readyz).
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT 1`).Scan(&n); err != nil {
		return fmt.Errorf("pinging the database: %w", err)
	}
	if y := s.w.syncer; y != nil {
		// A failed sync leaves the store refusing writes (syncer.go).
		return y.err()
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error {
	if s.listener != nil {
		s.listener.stop()
	}
	s.stopWriter()
	s.dropWriterConn()
	err := s.db.Close()
	if y := s.w.syncer; y != nil && y.db != nil {
		// Only now: closing it drops the process's locks on the file
		// (syncer.go), SQLite's included while a connection is open.
		y.db.Close()
	}
	return err
}

func (s *Store) migrate(ctx context.Context) error {
	// In a transaction of its own: two replicas starting together on one
	// PostgreSQL database take turns (the write lock), and the second finds
	// every migration applied.
	err := s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)`)
		return err
	})
	if err != nil {
		return fmt.Errorf("creating migrations table: %w", err)
	}
	entries, err := migrations.ReadDir(s.dialect.migrations)
	if err != nil {
		return fmt.Errorf("reading migrations: %w", err)
	}
	names := make([]string, 0, len(entries))
	known := map[string]bool{}
	for _, e := range entries {
		names = append(names, e.Name())
		known[strings.TrimSuffix(e.Name(), ".sql")] = true
	}
	sort.Strings(names)
	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	// The downgrade guard: a database a newer jitgate migrated holds
	// columns and rows this binary does not know, and writing to it could
	// break the newer one's invariants (or lose what it recorded). Refuse
	// before touching anything.
	var newer []string
	for _, v := range applied {
		if !known[v] {
			newer = append(newer, v)
		}
	}
	if len(newer) > 0 {
		return fmt.Errorf("%w: it has schema migration(s) %s, which this jitgate (%s) does not know; "+
			"run the jitgate that migrated it, or restore the copy taken before the upgrade (docs/operations.md, \"Upgrade and downgrade\")",
			ErrSchemaNewer, strings.Join(newer, ", "), strings.TrimSuffix(names[len(names)-1], ".sql"))
	}
	if pending := len(known) - len(applied); pending > 0 && len(applied) > 0 && s.sqlitePath != "" {
		if err := s.backupBeforeMigrate(ctx, applied[len(applied)-1]); err != nil {
			return err
		}
	}
	for _, name := range names {
		version := strings.TrimSuffix(name, ".sql")
		err := s.tx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			body, err := migrations.ReadFile(s.dialect.migrations + "/" + name)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`, version, ms(time.Now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %s: %w", name, err)
		}
	}
	return nil
}

// ErrSchemaNewer: the database was migrated by a newer jitgate than this
// one (the downgrade guard).
var ErrSchemaNewer = errors.New("the database is newer than this jitgate")

// appliedMigrations returns the versions recorded in schema_migrations,
// sorted.
func (s *Store) appliedMigrations(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("reading applied migrations: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// MigrationBackupPath is where migrate copies a SQLite database before
// changing its schema: next to it, named with the schema version it had
// (the last migration applied) and the time.
func MigrationBackupPath(dbPath, version string, now time.Time) string {
	return fmt.Sprintf("%s.schema-%s-%s.bak", dbPath, version, now.UTC().Format("20060102T150405Z"))
}

// backupBeforeMigrate copies the SQLite database aside (BackupSQLite: a
// consistent copy, 0600, with a restore mark, so that starting an older
// jitgate on it after a downgrade ends the grants live in it) before a
// migration changes it. An upgrade that goes wrong can then be undone by
// putting the copy back and running the older binary.
func (s *Store) backupBeforeMigrate(ctx context.Context, version string) error {
	now := time.Now()
	to := MigrationBackupPath(s.sqlitePath, version, now)
	if err := BackupSQLite(ctx, s.sqlitePath, to, now); err != nil {
		return fmt.Errorf("copying the database aside before migrating it: %w", err)
	}
	return nil
}

// ms converts a time to the stored form: UTC milliseconds.
func ms(t time.Time) int64 { return t.UnixMilli() }

// fromMS converts the stored form back.
func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func fromNullMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// The kinds of desired_changes rows that are not grant ids (migration 0021).
const (
	// changeFull marks a revision that changed more than grants (a policy,
	// a target's addresses, a mapping): an agent behind it takes a snapshot.
	changeFull int64 = 0
	// changeGrants marks a revision that changed grants only; each grant it
	// touched has its own row.
	changeGrants int64 = -1
	// changeRules marks a revision that changed the rules of a host
	// target (its own enforcer): an agent that takes rule deltas is sent
	// the new protected ports and the grants it logged alongside, those on
	// the ports whose rule now opens them differently (policyBump).
	changeRules int64 = -2
)

// ChangeWindow is how many revisions of an enforcer the change log keeps:
// an agent further behind than that gets a snapshot.
const ChangeWindow = 4096

// bumpRevision advances the desired-state revision of a target's enforcer
// (the target itself, or its gateway) and returns it. The change is logged
// as one that needs a snapshot: use bumpForGrants for grant changes.
func bumpRevision(ctx context.Context, tx *sql.Tx, target string) (int64, error) {
	_, rev, err := bump(ctx, tx, target, changeFull)
	return rev, err
}

// bumpForGrants advances the revision of target's enforcer for a change of
// grants only; the caller logs every grant it adds, extends or deletes with
// logGrant, so that the agent is sent those grants and nothing else.
func bumpForGrants(ctx context.Context, tx *sql.Tx, target string) (enforcer string, rev int64, err error) {
	return bump(ctx, tx, target, changeGrants)
}

// logGrant records that revision rev of enforcer touched grant id (added,
// extended or deleted it), in the transaction of the change.
func logGrant(ctx context.Context, tx *sql.Tx, enforcer string, rev, id int64) error {
	return logChanges(ctx, tx, enforcer, rev, id)
}

// logChanges is logGrant for several rows of one revision (its kind and
// the grants it touched) in one statement.
func logChanges(ctx context.Context, tx *sql.Tx, enforcer string, rev int64, ids ...int64) error {
	if len(ids) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO desired_changes (enforcer, revision, grant_id) VALUES `)
	args := make([]any, 0, 2+len(ids))
	args = append(args, enforcer, rev)
	for i, id := range ids {
		if i > 0 {
			q.WriteString(", ")
		}
		args = append(args, id)
		fmt.Fprintf(&q, "($1, $2, $%d)", len(args))
	}
	q.WriteString(` ON CONFLICT DO NOTHING`)
	if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("logging the changes of revision %d of %s: %w", rev, enforcer, err)
	}
	return nil
}

func bump(ctx context.Context, tx *sql.Tx, target string, kind int64) (string, int64, error) {
	owner, err := revisionOwner(ctx, tx, target)
	if err != nil {
		return "", 0, err
	}
	return bumpOwner(ctx, tx, owner, kind)
}

// bumpOwner is bump with the target whose revision moves (revisionOwner)
// already known from a read in tx.
func bumpOwner(ctx context.Context, tx *sql.Tx, owner string, kind int64) (string, int64, error) {
	rev, err := advanceOwner(ctx, tx, owner)
	if err != nil {
		return "", 0, err
	}
	// The change log, in the same transaction: an agent is sent what changed
	// since its revision only when every revision in between is logged.
	if err := logGrant(ctx, tx, owner, rev, kind); err != nil {
		return "", 0, err
	}
	return owner, rev, nil
}

// pruneEvery is how often (in revisions of an enforcer) its change log
// loses the revisions past ChangeWindow.
const pruneEvery = 64

// advanceOwner is bumpOwner without the change log's row of the revision's
// kind, which the caller writes (with the grants it touches, in one
// statement: grantGrants).
func advanceOwner(ctx context.Context, tx *sql.Tx, owner string) (int64, error) {
	var rev int64
	err := tx.QueryRowContext(ctx, `UPDATE targets SET revision = revision + 1 WHERE name = $1 RETURNING revision`, owner).Scan(&rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("target %q: %w", owner, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("advancing revision of %s: %w", owner, err)
	}
	// The generation counts every desired-state change of the database:
	// the restore guard (restore.go) compares it with a mark kept outside.
	var gen int64
	if err := tx.QueryRowContext(ctx, `UPDATE store_meta SET value = value + 1 WHERE key = 'generation' RETURNING value`).Scan(&gen); err != nil {
		return 0, fmt.Errorf("advancing the database generation: %w", err)
	}
	movedGeneration(tx, gen, 1)
	movedOwner(tx, owner)
	// The log is pruned every pruneEvery revisions, not at each (one
	// statement fewer on every change): it keeps at most ChangeWindow +
	// pruneEvery revisions, and those past the window are never read
	// (DesiredChangesOf answers an agent further behind with a snapshot and
	// reads only revisions after the agent's).
	if rev%pruneEvery == 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM desired_changes WHERE enforcer = $1 AND revision <= $2`, owner, rev-ChangeWindow); err != nil {
			return 0, fmt.Errorf("pruning the change log of %s: %w", owner, err)
		}
	}
	return rev, nil
}
