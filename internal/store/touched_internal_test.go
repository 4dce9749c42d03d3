package store

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionBumpsTouch: every statement of the store that moves a request's
// version names the request (touchRequest, or touchRequestRow with its row) within the lines after it, or a
// precise hub (api.Hub) would never wake the client waiting on that request.
func TestVersionBumpsTouch(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	bumps := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			if !strings.Contains(l, "version = version + 1") {
				continue
			}
			bumps++
			after := strings.Join(lines[i:min(len(lines), i+25)], "\n")
			if !strings.Contains(after, "touchRequest(") && !strings.Contains(after, "touchRequestRow(") {
				t.Errorf("%s:%d moves a request's version without touchRequest after it", f, i+1)
			}
		}
	}
	if bumps < 4 {
		t.Errorf("found %d version bumps, want at least 4 (the scan is broken)", bumps)
	}
}
