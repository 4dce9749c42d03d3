// Package recording writes, keeps and checks the recordings of terminal
// sessions that a rule requires to be recorded (policy.Rule.Record).
//
// A recording is an asciicast v2 file
// (https://docs.asciinema.org/manual/asciicast/v2/): one JSON header line,
// then one JSON array per event, [seconds, code, data], with code "o" for
// what the target printed, "i" for what the person typed (only when the
// rule records input) and "r" for a terminal resize ("COLSxROWS"). The
// files live under DATA_DIR/recordings (0700), one per session (0600),
// synced to disk before the recording's SHA-256 and size are audited: the
// audit chain then proves the file was not altered afterwards.
package recording

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Header is the first line of an asciicast v2 file.
type Header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// Event codes of asciicast v2.
const (
	CodeOutput = "o"
	CodeInput  = "i"
	CodeResize = "r"
)

// Writer writes one asciicast v2 stream. Its methods are safe for
// concurrent use (output and input come from different goroutines). Event
// times are seconds since the start, never decreasing even if the clock
// steps back. Data is written as valid UTF-8: a multi-byte character split
// across two writes is held until its end arrives, and bytes that are not
// UTF-8 become U+FFFD (as asciinema itself records them).
type Writer struct {
	mu      sync.Mutex
	w       *bufio.Writer
	sum     hash.Hash
	n       int64
	start   time.Time
	last    float64
	input   bool
	pending map[string][]byte // an incomplete UTF-8 sequence per stream
	err     error
	closed  bool
}

// countWriter hashes and counts what goes to the file.
type countWriter struct {
	w   io.Writer
	sum hash.Hash
	n   *int64
}

func (c countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.sum.Write(p[:n])
	*c.n += int64(n)
	return n, err
}

// NewWriter writes the header to w and returns the writer of the events.
// Times count from start; recordInput says whether Input is kept (when it
// is not, Input is dropped).
func NewWriter(w io.Writer, h Header, start time.Time, recordInput bool) (*Writer, error) {
	if h.Width <= 0 || h.Height <= 0 {
		h.Width, h.Height = 80, 24
	}
	h.Version = 2
	if h.Timestamp == 0 {
		h.Timestamp = start.Unix()
	}
	cw := &Writer{sum: sha256.New(), start: start, input: recordInput, pending: map[string][]byte{}}
	cw.w = bufio.NewWriterSize(countWriter{w: w, sum: cw.sum, n: &cw.n}, 32<<10)
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encoding the asciicast header: %w", err)
	}
	if _, err := cw.w.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("writing the asciicast header: %w", err)
	}
	return cw, nil
}

// Output records what the target printed.
func (w *Writer) Output(at time.Time, p []byte) { w.data(at, CodeOutput, p) }

// Input records what the person typed, when input is recorded.
func (w *Writer) Input(at time.Time, p []byte) {
	if w.input {
		w.data(at, CodeInput, p)
	}
}

// Resize records a new terminal size.
func (w *Writer) Resize(at time.Time, cols, rows int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.event(at, CodeResize, strconv.Itoa(cols)+"x"+strconv.Itoa(rows))
}

func (w *Writer) data(at time.Time, code string, p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || len(p) == 0 {
		return
	}
	buf := append(w.pending[code], p...)
	cut := completeUTF8(buf)
	w.pending[code] = append([]byte(nil), buf[cut:]...)
	if cut > 0 {
		w.event(at, code, string(buf[:cut]))
	}
}

// completeUTF8 returns the length of the longest prefix of b that does not
// end inside a multi-byte UTF-8 sequence that may still be completed.
func completeUTF8(b []byte) int {
	// A sequence is at most 4 bytes: look at the last 3 for its start.
	for i := len(b) - 1; i >= 0 && i >= len(b)-3; i-- {
		c := b[i]
		if c < utf8.RuneSelf {
			return len(b) // ASCII: nothing pending
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[i:]) {
				return i // a start byte whose sequence is not complete yet
			}
			return len(b)
		}
	}
	return len(b)
}

// event writes one line; the caller holds mu.
func (w *Writer) event(at time.Time, code, data string) {
	if w.closed || w.err != nil {
		return
	}
	t := at.Sub(w.start).Seconds()
	if t < w.last {
		t = w.last
	}
	w.last = t
	// json.Marshal of a string replaces invalid UTF-8 with U+FFFD and
	// escapes control characters, as the format needs.
	d, _ := json.Marshal(data)
	line := make([]byte, 0, len(d)+24)
	line = append(line, '[')
	line = strconv.AppendFloat(line, t, 'f', 6, 64)
	line = append(line, ", \""...)
	line = append(line, code...)
	line = append(line, "\", "...)
	line = append(line, d...)
	line = append(line, "]\n"...)
	if _, err := w.w.Write(line); err != nil {
		w.err = fmt.Errorf("writing the recording: %w", err)
	}
}

// Err is the first error writing the recording met (nil: none). After it,
// events are dropped: whoever records a session that must be recorded ends
// the session instead of letting it run on unrecorded.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Finish writes what is still held (an incomplete character becomes
// U+FFFD), flushes, and returns the SHA-256 and size of everything written.
// Later events are dropped. It does not close or sync the underlying file.
func (w *Writer) Finish(at time.Time) (sha string, size int64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		for _, code := range []string{CodeOutput, CodeInput} {
			if p := w.pending[code]; len(p) > 0 {
				w.event(at, code, string(p))
				w.pending[code] = nil
			}
		}
		w.closed = true
		if err := w.w.Flush(); err != nil && w.err == nil {
			w.err = fmt.Errorf("writing the recording: %w", err)
		}
	}
	return hex.EncodeToString(w.sum.Sum(nil)), w.n, w.err
}

// Event is one parsed asciicast event.
type Event struct {
	Time float64
	Code string
	Data string
}

// Parse reads an asciicast v2 stream and checks it against the format: a
// version 2 header with a positive width and height, then events that are
// three-element arrays [time, code, data] with times that never decrease,
// a known code, and for "r" a "COLSxROWS" size.
func Parse(r io.Reader) (Header, []Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var h Header
	if !sc.Scan() {
		return h, nil, errors.New("no asciicast header")
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return h, nil, fmt.Errorf("asciicast header: %w", err)
	}
	if h.Version != 2 || h.Width <= 0 || h.Height <= 0 {
		return h, nil, fmt.Errorf("asciicast header %+v: want version 2 and a positive width and height", h)
	}
	var out []Event
	last := 0.0
	for line := 2; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if !utf8.Valid(sc.Bytes()) {
			return h, out, fmt.Errorf("line %d: not valid UTF-8", line)
		}
		var raw []json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil || len(raw) != 3 {
			return h, out, fmt.Errorf("line %d: not an event [time, code, data]", line)
		}
		var e Event
		if json.Unmarshal(raw[0], &e.Time) != nil || json.Unmarshal(raw[1], &e.Code) != nil || json.Unmarshal(raw[2], &e.Data) != nil {
			return h, out, fmt.Errorf("line %d: not an event [time, code, data]", line)
		}
		if e.Time < last {
			return h, out, fmt.Errorf("line %d: time %f before %f", line, e.Time, last)
		}
		last = e.Time
		switch e.Code {
		case CodeOutput, CodeInput, "m":
		case CodeResize:
			var c, rr int
			if n, err := fmt.Sscanf(e.Data, "%dx%d", &c, &rr); n != 2 || err != nil || c <= 0 || rr <= 0 {
				return h, out, fmt.Errorf("line %d: resize %q is not COLSxROWS", line, e.Data)
			}
		default:
			return h, out, fmt.Errorf("line %d: unknown event code %q", line, e.Code)
		}
		out = append(out, e)
	}
	return h, out, sc.Err()
}
