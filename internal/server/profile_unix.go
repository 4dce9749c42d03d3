//go:build !windows

package server

import (
	"os"
	"syscall"
)

// profileSignals toggle the CPU profile (profile.go).
var profileSignals = []os.Signal{syscall.SIGUSR1}
