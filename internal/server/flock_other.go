//go:build !unix

package server

import (
	"errors"
	"os"
)

// tryLock is not available here: this component runs on Unix only (the
// client commands build everywhere).
func tryLock(f *os.File) error { return errors.ErrUnsupported }
