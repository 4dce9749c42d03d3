package main

import (
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

// TestDrawCharts draws every chart from small fixture results and checks
// each is a PNG of a readable size.
func TestDrawCharts(t *testing.T) {
	out := t.TempDir()
	drawCharts("testdata/results", out)
	for _, name := range []string{"latency.png", "expiry.png", "connrate.png", "throughput.png"} {
		f, err := os.Open(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 150 {
			t.Errorf("%s: %dx%d, too small to read", name, b.Dx(), b.Dy())
		}
	}
}
