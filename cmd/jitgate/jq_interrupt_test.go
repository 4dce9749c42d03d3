package main

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// TestJQStopsOnInterrupt: an expensive --jq expression ends at the first
// Ctrl-C (the command's context cancelled) with the context's error, as
// every other wait of the CLI does. Before, gojq ran without the context:
// '[range(1e12)] | length' went on growing memory until a second Ctrl-C
// killed the process (or the machine ran out of memory).
func TestJQStopsOnInterrupt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Ctrl-C, already pressed
	a := &app{stdout: io.Discard, stderr: io.Discard, output: "json", jq: "last(range(1e12))", ctx: ctx}
	if err := a.checkOutput(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.printJSON(map[string]any{"a": 1}) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("--jq after Ctrl-C: %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("--jq 'last(range(1e12))' still runs a minute after Ctrl-C")
	}
}
