//go:build !windows

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// resizeSignals delivers a value when the terminal window changes size.
func resizeSignals(ctx context.Context) <-chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	go func() { <-ctx.Done(); signal.Stop(ch); close(ch) }()
	return ch
}
