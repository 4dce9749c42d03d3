package store

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// ErrStorageFull is a write that failed because the disk (or the
// database's quota) is full: nothing of it was recorded. The API answers
// 503 with this text; the server logs it and counts it
// (jitgate_store_write_errors_total{cause="disk_full"}).
var ErrStorageFull = errors.New("database write failed: disk full")

// Causes of failed writes, as OnWriteError reports them.
const (
	WriteErrDiskFull = "disk_full"
	WriteErrIO       = "io_error"
)

// OnWriteError registers the function told of each write transaction that
// failed for a storage reason (cause is WriteErrDiskFull or WriteErrIO);
// the server logs it and counts it in a metric.
func (s *Store) OnWriteError(f func(cause string, err error)) { s.onWriteError = f }

// storageCause returns why err is a storage failure ("" when it is not one:
// a domain refusal, a conflict, a cancelled context).
func storageCause(err error) string {
	var se *sqlite.Error
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.Code == "53100": // disk_full
		return WriteErrDiskFull
	case errors.As(err, &pe) && pe.Code == "58030": // io_error
		return WriteErrIO
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return WriteErrDiskFull
	case errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_FULL:
		return WriteErrDiskFull
	case errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_IOERR:
		return WriteErrIO
	}
	return ""
}

// writeFailed classifies the error of a write transaction: a full disk is
// wrapped as ErrStorageFull (keeping the driver's error for the log), and
// every storage failure is reported to the OnWriteError function.
func (s *Store) writeFailed(err error) error {
	cause := storageCause(err)
	if cause == "" {
		return err
	}
	if s.onWriteError != nil {
		s.onWriteError(cause, err)
	}
	if cause == WriteErrDiskFull && !errors.Is(err, ErrStorageFull) {
		return fmt.Errorf("%w (%w)", ErrStorageFull, err)
	}
	return err
}
