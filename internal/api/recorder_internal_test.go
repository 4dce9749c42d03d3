package api

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/recording"
	"github.com/jitgate/jitgate/internal/session"
)

// failAfter is a file that takes n bytes, then fails every write (a full
// or broken disk).
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, errors.New("no space left on device")
	}
	f.n -= len(p)
	return len(p), nil
}

// fakeRecording is a recording.Writer over failAfter.
type fakeRecording struct{ *recording.Writer }

func (fakeRecording) Close(time.Time, string) {}
func (fakeRecording) Path() string            { return "" }

// TestRecorderWriteErrorEndsSession: when writing a terminal's recording
// fails, the recorder ends the session (through SessionInfo.End, wired to
// the live session) saying the recording failed, instead of dropping the
// events and letting the session run on unrecorded.
func TestRecorderWriteErrorEndsSession(t *testing.T) {
	w, err := recording.NewWriter(&failAfter{n: 1000}, recording.Header{Width: 80, Height: 24}, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	ls := &liveSession{stop: make(chan struct{}), done: make(chan struct{})}
	a := &api{Deps: Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
	r := &recorder{a: a, id: "s1", rec: fakeRecording{w}, end: ls.endFunc()}
	chunk := []byte(strings.Repeat("x", 4096))
	for i := 0; i < 64; i++ { // 256 KiB: well past the writer's buffer
		r.Output(time.Now(), chunk)
	}
	select {
	case <-ls.stop:
	default:
		t.Fatal("the session still runs after its recording failed")
	}
	if ls.why.reason != session.Closed || !strings.Contains(ls.why.msg, "recording failed") {
		t.Errorf("session ended %q %q, want closed saying the recording failed", ls.why.reason, ls.why.msg)
	}
}
