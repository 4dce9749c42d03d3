package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate/internal/smallfile"
	"github.com/jitgate/jitgate/internal/store"
)

// GenerationFile is the name, in the data directory, of the restore guard's
// mark: the highest database generation this data directory has served. It
// lives outside the database so that putting back an older database file
// does not put back the mark with it.
const GenerationFile = "jitgate.db.generation"

// lockFile is the name, in the data directory, of the file a running server
// holds locked (flock); `jitgate restore` takes the same lock.
const lockFile = "server.lock"

// restoredReason is the message of requests ended because the database was
// put back from an older copy.
const restoredReason = "database restored: grant ended (the database was put back from an older copy, " +
	"in which it may still have been live after being revoked or expiring); request access again"

// genMark is the content of GenerationFile: the highest generation served.
type genMark struct {
	Generation int64
}

// markFormat is the file's one line, fixed-width so that every update is one
// in-place write of the same length: replacing the file by a rename would
// make ext4 flush it on every change (~0.5 ms measured), an in-place write
// costs about a microsecond. A write of one small record is not torn by a
// crash of the process; a line that does not parse counts as a restore.
const markFormat = "jitgate generation %020d\n"

// restoreGuard keeps GenerationFile at the database's generation after
// every desired-state change, and never lets it go back.
type restoreGuard struct {
	st  *store.Store
	log *slog.Logger
	f   *os.File

	mu      sync.Mutex
	written int64 // last generation written (-1: none yet)
	sized   bool  // the file was cut to the line's length
	// ending is set while note ends what a database that went back under
	// the running server brought back: the change feed tells note of that
	// change on the same goroutine, and it must not wait for itself.
	ending atomic.Bool
}

// guardRestore runs at start, before anything is served: when the database
// is older than the data directory's mark (its generation is lower: an older
// file was copied back), or is a copy marked by `jitgate backup`/`jitgate
// restore`, every live request in it is revoked, and every target's revision
// moves above any revision served since the copy, so nothing the copy brings
// back is shown active or sent to an agent. It returns the guard that keeps
// the mark current.
func guardRestore(ctx context.Context, st *store.Store, dir string, log *slog.Logger, now time.Time) (*restoreGuard, error) {
	path := filepath.Join(dir, GenerationFile)
	gen, err := st.Generation(ctx)
	if err != nil {
		return nil, err
	}
	markedAt, marked, err := st.RestoreMarked(ctx)
	if err != nil {
		return nil, err
	}
	mark, found, readErr := readMark(path)
	var why string
	switch {
	case readErr != nil:
		// Cannot tell how old the database is: assume the worst.
		why = fmt.Sprintf("the restore mark %s is unreadable (%v)", path, readErr)
	case found && gen < mark.Generation:
		why = fmt.Sprintf("the database is older than this data directory's mark (generation %d < %d): an older copy was put back", gen, mark.Generation)
	case marked:
		why = fmt.Sprintf("the database is a copy made at %s by jitgate backup or restore", markedAt.Format(time.RFC3339))
	}
	if why != "" {
		lift := max(mark.Generation-gen, 0) + 1
		n, err := st.EndRestored(ctx, lift, restoredReason, now)
		if err != nil {
			return nil, err
		}
		log.Warn("database restored: every grant live in it was ended before serving; agents get revisions above any served since the copy",
			"why", why, "ended_requests", n, "revision_lift", lift)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the restore mark: %w", err)
	}
	g := &restoreGuard{st: st, log: log, f: f, written: -1}
	if err := g.note(ctx); err != nil {
		f.Close()
		return nil, err
	}
	return g, nil
}

// close closes the mark file; the server calls it when it stops.
func (g *restoreGuard) close() error { return g.f.Close() }

// note writes the database's current generation to the mark when it is
// higher than the last one written. It runs after every commit that changed
// a desired state, before the agents are woken. It is not fsynced: a crash of
// the process keeps it (page cache); a power loss may lose the last writes,
// which only lets a copy taken in the last moments before it pass unnoticed
// here (the agents' check and the server's known revisions remain).
//
// The generation only grows, so one below a generation already noted means
// the database went back under the running server (an older copy put back
// through SQLite, `sqlite3 jitgate.db ".restore copy.db"`, or a PostgreSQL
// failover to a standby that missed the last commits); on SQLite the store
// also sees a database whose generation is not the one its own last commit
// left (Store.Replaced), which the generation alone misses once the changes
// made on the copy brought it back up to the mark (and then the start's
// check misses it too). note ends what the copy brought back there and then
// (EndRestored, as at start), before the agents are woken for the change it
// was told of.
func (g *restoreGuard) note(ctx context.Context) error {
	if g.ending.Load() {
		// EndRestored's own change, told by the feed on the goroutine
		// that ends (below); the mark is written once it returns.
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	gen, err := g.st.Generation(ctx)
	if err != nil {
		return err
	}
	from, replaced := g.st.Replaced()
	if gen < g.written || replaced {
		if !replaced || gen < from {
			from = gen
		}
		lift := max(g.written-from, 0) + 1
		g.ending.Store(true)
		n, err := g.st.EndRestored(ctx, lift, restoredReason, time.Now())
		g.ending.Store(false)
		if err != nil {
			return fmt.Errorf("ending the grants of a database that went back under the running server: %w", err)
		}
		g.log.Warn("database restored: the database went back under the running server; every grant live in it was ended, agents get revisions above any served",
			"generation", gen, "copy_generation", from, "noted", g.written, "ended_requests", n, "revision_lift", lift)
		if gen, err = g.st.Generation(ctx); err != nil {
			return err
		}
	}
	if gen <= g.written {
		return nil
	}
	line := fmt.Sprintf(markFormat, gen)
	if n, err := g.f.WriteAt([]byte(line), 0); err != nil || n != len(line) {
		return fmt.Errorf("writing the restore mark: %d bytes, %w", n, err)
	}
	if !g.sized {
		// The first write after opening drops whatever longer content an
		// older format left; later writes have the same length.
		if err := g.f.Truncate(int64(len(line))); err != nil {
			return fmt.Errorf("writing the restore mark: %w", err)
		}
		g.sized = true
	}
	g.written = gen
	return nil
}

// readMark reads GenerationFile; found is false when there is none (or it
// is empty: created, never written).
func readMark(path string) (m genMark, found bool, err error) {
	b, err := smallfile.Read(path, 4096)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && len(b) == 0) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if _, err := fmt.Sscanf(string(b), markFormat, &m.Generation); err != nil || m.Generation < 0 {
		return m, false, fmt.Errorf("not a generation mark: %q", strings.TrimSpace(string(b)))
	}
	return m, true, nil
}

// LockDataDir takes the data directory's lock, which a running server
// holds: two servers on one database, or a restore under a running server,
// are refused with the holder's pid. The returned function releases it
// (the kernel also releases it when the process ends).
func LockDataDir(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		b, _ := smallfile.Read(path, 64)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("data directory %s is in use by a running jitgate server (pid %s): stop it first", dir, holder)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}
