//go:build windows

package main

import (
	"context"
	"os"
)

// resizeSignals: Windows consoles send no SIGWINCH; the size stays the
// one the session started with.
func resizeSignals(ctx context.Context) <-chan os.Signal {
	ch := make(chan os.Signal)
	go func() { <-ctx.Done(); close(ch) }()
	return ch
}
