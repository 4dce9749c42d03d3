package testenv

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/jitgate/jitgate/internal/store"
)

// Postgres returns the URL of a new PostgreSQL database that only tb uses,
// with the store's schema in place (every migration applied, no rows), on a
// real server that this test binary started itself: Debian's initdb into a
// temporary directory, postgres listening on a unix socket in that directory
// only (no TCP port), owned by an unprivileged user because PostgreSQL
// refuses to run as root. The database is dropped when tb ends.
//
// The schema comes from a template: the first call migrates a database
// (jitgate_template) with the store's own code, once per test binary, and
// every database is a copy of it (CREATE DATABASE ... TEMPLATE), which costs
// about what an empty database does. Running every migration for every test
// made the PostgreSQL store suite spend most of its time migrating. A test
// of the migrations themselves wants PostgresEmpty.
//
// One server serves every test of the binary (initdb costs a second or two,
// a database a few tens of milliseconds). A package that uses Postgres stops
// it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunWithPostgres(m)) }
//
// Without that, the server ends with the test process anyway (it gets
// SIGQUIT when its parent dies) and only its temporary directory is left.
//
// When the PostgreSQL binaries are missing the test is skipped, or fails
// under CI (scripts/test.sh installs Debian's postgresql package). The
// binaries are looked up in $JITGATE_PG_BINDIR, then under
// /usr/lib/postgresql/*/bin (newest version first), then on PATH.
func Postgres(tb testing.TB) string {
	tb.Helper()
	return newPostgres(tb, true)
}

// PostgresEmpty is Postgres with an empty database (no schema), for tests
// of the migrations themselves and of replicas migrating one database
// together.
func PostgresEmpty(tb testing.TB) string {
	tb.Helper()
	return newPostgres(tb, false)
}

func newPostgres(tb testing.TB, migrated bool) string {
	tb.Helper()
	srv, err := sharedPostgres()
	if err != nil {
		unavailable(tb, "%v", err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), pgDatabases.Add(1))
	create := `CREATE DATABASE ` + name
	if migrated {
		if err := srv.template(); err != nil {
			tb.Fatalf("%v", err)
		}
		create += ` TEMPLATE ` + pgTemplate
	}
	if _, err := srv.admin.Exec(create); err != nil {
		tb.Fatalf("creating database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		// FORCE ends the connections a store left open (PostgreSQL 13+).
		if _, err := srv.admin.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`); err != nil {
			tb.Errorf("dropping database %s: %v", name, err)
		}
	})
	return srv.url(name)
}

// RunWithPostgres runs the tests of m and then stops the PostgreSQL server
// that Postgres started, if any, removing its directory; it returns m.Run's
// exit code.
func RunWithPostgres(m *testing.M) int {
	code := m.Run()
	StopPostgres()
	return code
}

// StopPostgres stops the shared server (fast shutdown) and removes its
// directory. Tests must not call Postgres afterwards.
func StopPostgres() {
	pgMu.Lock()
	defer pgMu.Unlock()
	if pgServer == nil {
		return
	}
	pgServer.stop()
	pgServer = nil
}

var (
	pgMu        sync.Mutex
	pgServer    *pgCluster
	pgErr       error
	pgDatabases atomic.Int64
)

func sharedPostgres() (*pgCluster, error) {
	pgMu.Lock()
	defer pgMu.Unlock()
	if pgServer == nil && pgErr == nil {
		pgServer, pgErr = startPostgres()
	}
	return pgServer, pgErr
}

// pgCluster is a running postmaster with its data directory and socket.
type pgCluster struct {
	dir   string // holds data/ and the socket
	cmd   *exec.Cmd
	done  chan struct{}
	log   *Buffer
	admin *sql.DB // connected to the "postgres" database

	tmplOnce sync.Once
	tmplErr  error
}

// pgTemplate is the database that Postgres copies: migrated once per server.
const pgTemplate = "jitgate_template"

// template makes pgTemplate on the first call and returns the error of
// that first call ever after.
func (c *pgCluster) template() error {
	c.tmplOnce.Do(func() { c.tmplErr = c.makeTemplate() })
	return c.tmplErr
}

// makeTemplate creates pgTemplate and migrates it by opening a store on it,
// as a server does (so the schema is exactly the store's, migrations table
// included), then closes every connection to it: PostgreSQL copies a
// template only while nobody is connected to it (CREATE DATABASE waits 5 s
// for stragglers, then fails with "source database is being accessed by
// other users"). The store's Close ends its connections on the client side;
// the server processes behind them may linger a moment, so connections to
// the template are then forbidden and any left are terminated.
func (c *pgCluster) makeTemplate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := c.admin.ExecContext(ctx, `CREATE DATABASE `+pgTemplate); err != nil {
		return fmt.Errorf("creating the template database: %w", err)
	}
	s, err := store.OpenPostgres(ctx, c.url(pgTemplate), store.DefaultConfig())
	if err != nil {
		return fmt.Errorf("migrating the template database: %w", err)
	}
	if err := s.Close(); err != nil {
		return fmt.Errorf("closing the template database: %w", err)
	}
	if _, err := c.admin.ExecContext(ctx, `ALTER DATABASE `+pgTemplate+` WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`); err != nil {
		return fmt.Errorf("closing the template database to connections: %w", err)
	}
	if _, err := c.admin.ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, pgTemplate); err != nil {
		return fmt.Errorf("ending connections to the template database: %w", err)
	}
	return nil
}

const pgSuperuser = "postgres"

func (c *pgCluster) url(db string) string {
	q := url.Values{"host": {c.dir}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(pgSuperuser), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// pgBinDir finds the directory that holds initdb and postgres.
func pgBinDir() (string, error) {
	if d := os.Getenv("JITGATE_PG_BINDIR"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	sort.Slice(matches, func(i, j int) bool { return pgMajor(matches[i]) > pgMajor(matches[j]) })
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("test needs PostgreSQL's initdb and postgres (Debian package postgresql): none in $JITGATE_PG_BINDIR, /usr/lib/postgresql/*/bin or PATH")
}

// pgMajor reads the version from /usr/lib/postgresql/<major>/bin/postgres.
func pgMajor(p string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
	return n
}

// pgCredential returns the identity to run PostgreSQL as: the current one
// unless it is root, else the "postgres" system user of Debian's package, or
// "nobody".
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
}

func startPostgres() (_ *pgCluster, err error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	for _, tool := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(bin, tool)); err != nil {
			return nil, fmt.Errorf("test needs PostgreSQL's %s: %v", tool, err)
		}
	}
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	// A short path: the socket's name (dir + "/.s.PGSQL.5432") must fit in
	// the 107 bytes of sockaddr_un.
	dir, err := os.MkdirTemp("", "jitgate-pg-")
	if err != nil {
		return nil, fmt.Errorf("creating PostgreSQL directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("handing %s to uid %d: %w", dir, cred.Uid, err)
		}
	}
	data := filepath.Join(dir, "data")
	var out bytes.Buffer
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", pgSuperuser,
		"--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.Stdout, initdb.Stderr = &out, &out
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := initdb.Run(); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out.String())
	}

	c := &pgCluster{dir: dir, done: make(chan struct{}), log: &Buffer{}}
	// Durability settings are off: the cluster lives for one test run and
	// is thrown away with its directory, so what fsync, synchronous commit
	// and full-page writes protect (commits surviving a crash of the
	// machine or of postgres) has nothing to protect; the store's own
	// durability promise ("done" only after COMMIT returns) does not depend
	// on them, and no test kills this server to check what survives. The
	// socket is the only way in (listen_addresses empty: no TCP port).
	c.cmd = exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB")
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	// Pdeathsig: a test binary that exits without StopPostgres (a panic, a
	// timeout) takes the server with it; SIGQUIT is an immediate shutdown.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	// Pdeathsig fires when the *thread* that forked the child exits, and Go
	// ends threads: one that a goroutine locked (Netns.Do) and left locked
	// dies with it, and it may be the thread that forked postgres. So the
	// fork happens on a thread of its own, locked and kept until postgres
	// ends; otherwise a test in a network namespace killed the server
	// under the other tests ("connecting to PostgreSQL: ... no such file").
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := c.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting postgres: %w", err)
	}

	c.admin, err = sql.Open("pgx", c.url("postgres"))
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("opening the admin connection: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.admin.PingContext(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-c.done:
			log := c.log.String()
			c.stop()
			return nil, fmt.Errorf("postgres exited at start: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			log := c.log.String()
			c.stop()
			return nil, fmt.Errorf("postgres not ready after 30s: %v: %s", err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.admin.SetMaxOpenConns(2)
	return c, nil
}

// stop ends the server (SIGINT: fast shutdown, SIGKILL after 10 s) and
// removes its directory.
func (c *pgCluster) stop() {
	if c.admin != nil {
		c.admin.Close()
	}
	c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	os.RemoveAll(c.dir)
}
