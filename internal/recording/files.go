package recording

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// DirName is the recordings' directory inside the data directory.
const DirName = "recordings"

// Dir holds the recording files of one server.
type Dir struct {
	path string
}

// OpenDir creates (or tightens to 0700) dataDir/recordings.
func OpenDir(dataDir string) (*Dir, error) {
	p := filepath.Join(dataDir, DirName)
	if err := os.MkdirAll(p, 0o700); err != nil {
		return nil, fmt.Errorf("creating the recordings directory: %w", err)
	}
	// MkdirAll keeps the mode of a directory that exists: recordings hold
	// what people saw on their targets, so nobody but the server reads them.
	if err := os.Chmod(p, 0o700); err != nil {
		return nil, fmt.Errorf("restricting the recordings directory: %w", err)
	}
	return &Dir{path: p}, nil
}

// Path returns the directory.
func (d *Dir) Path() string { return d.path }

// sessionIDRE is a session id as store.NewSessionID makes them; nothing
// else names a file here (no path separators, no "..").
var sessionIDRE = regexp.MustCompile(`^s-[a-z0-9]{1,64}$`)

// ErrNotFound: no recording file for the session.
var ErrNotFound = errors.New("no recording")

func (d *Dir) file(sessionID string) (string, error) {
	if !sessionIDRE.MatchString(sessionID) {
		return "", fmt.Errorf("%q is not a session id", sessionID)
	}
	return filepath.Join(d.path, sessionID+".cast"), nil
}

// Recording is one recording being written.
type Recording struct {
	*Writer
	f    *os.File
	path string
}

// Create starts the recording of a session: a new file (0600; an existing
// one is an error, never overwritten) with the asciicast header.
func (d *Dir) Create(sessionID string, h Header, start time.Time, recordInput bool) (*Recording, error) {
	p, err := d.file(sessionID)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating the recording of session %s: %w", sessionID, err)
	}
	w, err := NewWriter(f, h, start, recordInput)
	if err != nil {
		f.Close()
		os.Remove(p)
		return nil, err
	}
	return &Recording{Writer: w, f: f, path: p}, nil
}

// Path is the recording's file.
func (r *Recording) Path() string { return r.path }

// Close ends the recording durably: what is held is written, the file is
// synced and closed, and so is the directory entry. Only then are its
// SHA-256 and size returned, to be audited: an audited recording is on disk.
func (r *Recording) Close(at time.Time) (sha string, size int64, err error) {
	sha, size, err = r.Finish(at)
	if err == nil {
		err = r.f.Sync()
	}
	if cerr := r.f.Close(); err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(r.path))
	}
	if err != nil {
		return "", 0, fmt.Errorf("saving the recording %s: %w", r.path, err)
	}
	return sha, size, nil
}

func syncDir(p string) error {
	d, err := os.Open(p)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open opens a session's recording for reading.
func (d *Dir) Open(sessionID string) (*os.File, error) {
	p, err := d.file(sessionID)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("session %s: %w", sessionID, ErrNotFound)
	}
	return f, err
}

// Sum returns the SHA-256 and size of a session's recording as it is on
// disk now.
func (d *Dir) Sum(sessionID string) (sha string, size int64, err error) {
	f, err := d.Open(sessionID)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	return SumReader(f)
}

// SumReader returns the SHA-256 and size of what r holds.
func SumReader(r io.Reader) (sha string, size int64, err error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return "", 0, fmt.Errorf("reading the recording: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Remove deletes a session's recording; one already gone is not an error
// (a removal that crashed after the unlink is finished by the next sweep).
func (d *Dir) Remove(sessionID string) error {
	p, err := d.file(sessionID)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting the recording of session %s: %w", sessionID, err)
	}
	return syncDir(d.path)
}

// Catalog is what the sweeps need of the store (internal/store).
type Catalog interface {
	ExpiredRecordings(ctx context.Context, before time.Time, limit int) ([]store.Recording, error)
	UnsavedRecordings(ctx context.Context) ([]store.Recording, error)
	DeleteRecording(ctx context.Context, sessionID, actor, reason string, now time.Time) error
	SaveRecording(ctx context.Context, sessionID, sha256 string, size int64, incomplete bool, now time.Time) error
}

// SweepExpired deletes the recordings older than retention at now (saved
// before now-retention, or left unsaved and started before it): the file
// first, then the record, audited as recording.deleted. A crash between
// the two leaves the record, and the next sweep finishes (a missing file
// is not an error). It returns how many it deleted.
func (d *Dir) SweepExpired(ctx context.Context, c Catalog, retention time.Duration, now time.Time) (int, error) {
	n := 0
	for {
		xs, err := c.ExpiredRecordings(ctx, now.Add(-retention), 100)
		if err != nil {
			return n, err
		}
		for _, x := range xs {
			if err := d.Remove(x.SessionID); err != nil {
				return n, err
			}
			reason := "retention of " + retention.String() + " ended"
			if err := c.DeleteRecording(ctx, x.SessionID, audit.System, reason, now); err != nil && !errors.Is(err, store.ErrConflict) {
				return n, err
			}
			n++
		}
		if len(xs) < 100 {
			return n, nil
		}
	}
}

// SaveUnfinished saves, at start, the recordings a server that stopped
// (or died) left unsaved: each file as it is on disk, audited as
// session.recorded and marked incomplete. A missing file is saved as empty
// (0 bytes, the SHA-256 of nothing), so the trail says so.
func (d *Dir) SaveUnfinished(ctx context.Context, c Catalog, now time.Time) (int, error) {
	xs, err := c.UnsavedRecordings(ctx)
	if err != nil {
		return 0, err
	}
	for i, x := range xs {
		sha, size, err := d.Sum(x.SessionID)
		if errors.Is(err, ErrNotFound) {
			sha, size, err = SumReader(strings.NewReader(""))
		}
		if err != nil {
			return i, err
		}
		if err := c.SaveRecording(ctx, x.SessionID, sha, size, true, now); err != nil && !errors.Is(err, store.ErrConflict) {
			return i, err
		}
	}
	return len(xs), nil
}
