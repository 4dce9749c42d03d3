package recording_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/recording"
)

var t0 = time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)

// TestAsciicastOutput writes a session with output, input, a resize, a
// character split across writes and bytes that are not UTF-8, and parses
// the file back against the asciicast v2 format: the header's fields, times
// that never decrease (also when the clock steps back), every event code,
// and data that is valid UTF-8 and says what was written.
func TestAsciicastOutput(t *testing.T) {
	var buf bytes.Buffer
	w, err := recording.NewWriter(&buf, recording.Header{Width: 100, Height: 30, Title: "alice@web-01", Env: map[string]string{"TERM": "xterm-256color"}}, t0, true)
	if err != nil {
		t.Fatal(err)
	}
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	w.Output(at(10), []byte("$ "))
	w.Input(at(500), []byte("echo marker\r"))
	w.Output(at(510), []byte("echo marker\r\nmarker \xe2\x82")) // "€" cut after two of its three bytes
	w.Output(at(520), []byte("\xac\r\n"))
	w.Resize(at(700), 120, 40)
	w.Output(at(650), []byte("clock stepped back")) // before the resize: kept at the resize's time
	w.Output(at(800), []byte("bad \xff byte; \x1b[1mbold\x1b[0m"))
	w.Output(at(900), []byte("cut at the end \xf0\x9f"))
	sha, size, err := w.Finish(at(1000))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	if sha != hex.EncodeToString(sum[:]) || size != int64(buf.Len()) {
		t.Errorf("Finish = %s, %d; the bytes written hash to %x, %d", sha, size, sum, buf.Len())
	}

	h, events, err := recording.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, buf.String())
	}
	wantH := recording.Header{Version: 2, Width: 100, Height: 30, Timestamp: t0.Unix(), Title: "alice@web-01", Env: map[string]string{"TERM": "xterm-256color"}}
	if diff := cmp.Diff(wantH, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	want := []recording.Event{
		{0.01, "o", "$ "},
		{0.5, "i", "echo marker\r"},
		{0.51, "o", "echo marker\r\nmarker "},
		{0.52, "o", "€\r\n"},
		{0.7, "r", "120x40"},
		{0.7, "o", "clock stepped back"},
		{0.8, "o", "bad \uFFFD byte; \x1b[1mbold\x1b[0m"},
		{0.9, "o", "cut at the end "},
		{1.0, "o", "\uFFFD\uFFFD"}, // one per byte, as encoding/json writes it
	}
	if diff := cmp.Diff(want, events); diff != "" {
		t.Errorf("events (-want +got):\n%s\nfile:\n%s", diff, buf.String())
	}
	// Each line is one JSON value: the header an object, events arrays.
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 1+len(want) || !strings.HasPrefix(lines[0], "{") || !strings.HasPrefix(lines[1], "[0.010000, \"o\", ") {
		t.Errorf("lines:\n%s", buf.String())
	}
}

// TestInputNotRecordedUnlessAsked: a rule without record_input keeps no
// keystrokes (a password typed at a prompt is input).
func TestInputNotRecordedUnlessAsked(t *testing.T) {
	var buf bytes.Buffer
	w, err := recording.NewWriter(&buf, recording.Header{Width: 80, Height: 24}, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	w.Input(t0.Add(time.Second), []byte("hunter2\r"))
	w.Output(t0.Add(2*time.Second), []byte("ok"))
	if _, _, err := w.Finish(t0.Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	_, events, err := recording.Parse(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Code != "o" || strings.Contains(buf.String(), "hunter2") {
		t.Errorf("events %+v: want only the output", events)
	}
}

// TestParseRejects checks the parser used as the test oracle refuses what
// the format does not allow.
func TestParseRejects(t *testing.T) {
	for _, tt := range []struct{ name, in string }{
		{"no header", ""},
		{"version 1", `{"version":1,"width":80,"height":24}` + "\n"},
		{"no size", `{"version":2}` + "\n"},
		{"time goes back", `{"version":2,"width":80,"height":24}` + "\n[1.0, \"o\", \"a\"]\n[0.5, \"o\", \"b\"]\n"},
		{"bad code", `{"version":2,"width":80,"height":24}` + "\n[1.0, \"x\", \"a\"]\n"},
		{"bad resize", `{"version":2,"width":80,"height":24}` + "\n[1.0, \"r\", \"80 by 24\"]\n"},
		{"not an array", `{"version":2,"width":80,"height":24}` + "\n{\"t\":1}\n"},
	} {
		if _, _, err := recording.Parse(strings.NewReader(tt.in)); err == nil {
			t.Errorf("%s: parsed", tt.name)
		}
	}
}

// TestFiles checks the files: the directory is 0700 (also when it existed
// wider), each recording 0600 and never overwritten, saved with the SHA-256
// of its bytes, and only session ids name files.
func TestFiles(t *testing.T) {
	data := t.TempDir()
	if err := os.Mkdir(filepath.Join(data, recording.DirName), 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := recording.OpenDir(data)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(d.Path()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v (%v), want 0700", fi.Mode(), err)
	}
	rec, err := d.Create("s-abc123", recording.Header{Width: 80, Height: 24}, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	rec.Output(t0.Add(time.Second), []byte("hello"))
	sha, size, err := rec.Close(t0.Add(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(rec.Path())
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != size {
		t.Fatalf("file %v size %d (%v), want 0600 and %d bytes", fi.Mode(), fi.Size(), err, size)
	}
	if got, n, err := d.Sum("s-abc123"); err != nil || got != sha || n != size {
		t.Errorf("Sum = %s, %d, %v; want %s, %d", got, n, err, sha, size)
	}
	if _, err := d.Create("s-abc123", recording.Header{}, t0, false); err == nil {
		t.Error("a second recording of the same session overwrote the first")
	}
	for _, bad := range []string{"../etc/passwd", "s-ABC", "x", "s-a/b", ""} {
		if _, err := d.Create(bad, recording.Header{}, t0, false); err == nil {
			t.Errorf("Create(%q) accepted", bad)
		}
	}
	if err := d.Remove("s-abc123"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Sum("s-abc123"); err == nil {
		t.Error("the removed recording is still there")
	}
	if err := d.Remove("s-abc123"); err != nil {
		t.Errorf("removing twice: %v", err)
	}
}
