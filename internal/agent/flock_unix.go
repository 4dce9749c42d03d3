//go:build unix

package agent

import (
	"os"
	"syscall"
)

// tryLock takes an exclusive advisory lock on f without waiting; it fails
// with EWOULDBLOCK when another process holds it.
func tryLock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) }

// waitLock takes an exclusive advisory lock on f, waiting for it.
func waitLock(f *os.File) error { return syscall.Flock(int(f.Fd()), syscall.LOCK_EX) }
