package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync makes f's data durable, and of its metadata only what reading
// the data needs (its size): the WAL's mtime is not worth a journal commit.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
