// Package text decides which untrusted text jitgate accepts and how it prints
// text it cannot trust. It is pure (standard library only) and is the one
// place the rule lives: the API, the policy file and the CLI call it.
//
// The rule: names, labels, principals, token names and reasons are one line
// of printable text. They refuse every C0 and C1 control character
// (U+0000–U+001F, U+007F–U+009F; newline and tab included, in reasons too:
// a reason that kept newlines would need every output — terminal, CSV,
// webhook receivers, chat — to escape them, and a one-line justification
// loses nothing), the bidirectional overrides and isolates
// (U+202A–U+202E, U+2066–U+2069: they make a name display as another), and
// bytes that are not UTF-8, and runs of more than MaxMarks combining marks
// (stacked on one character, they draw over the lines above and below: a
// reason could cover the requester's name or the ports an approver reads).
// Lengths count characters (runes), not bytes.
//
// Output that may still hold such characters (rows written before the rule,
// text an agent reports) is escaped when printed: Escape for one value,
// NewWriter for a whole stream. Text an agent reports is also made inert
// and bounded on its way in (Sanitize), so that what is stored passes Check.
package text

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// MaxMarks bounds a run of combining marks (nonspacing or enclosing) on one
// character. Writing systems need a few (Vietnamese two, Tibetan stacks
// four or five); "Zalgo" text stacks hundreds, which a browser or terminal
// draws far above and below the line.
const MaxMarks = 8

// isMark reports whether r combines with the character before it and is
// drawn over or around it.
func isMark(r rune) bool { return unicode.In(r, unicode.Mn, unicode.Me) }

// Len is the length of s in characters, as the messages that bound it say.
func Len(s string) int { return utf8.RuneCountInString(s) }

// refused reports whether r must not appear in accepted text: a C0 or C1
// control character, DEL, or a bidirectional override or isolate.
func refused(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069
}

// Check returns nil when s is printable one-line text, else an error that
// names the first offending character and where it is (without echoing s).
func Check(s string) error {
	marks := 0
	for i, r := range s {
		if marks = nextMarks(marks, r); marks > MaxMarks {
			return fmt.Errorf("holds more than %d combining marks in a row at character %d (stacked marks draw over the lines around them)", MaxMarks, Len(s[:i])+1)
		}
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("holds a byte that is not UTF-8 at byte %d", i)
			}
		}
		if refused(r) {
			return fmt.Errorf("holds the character %s at character %d (control characters, newlines and bidirectional overrides are refused)", quoteRune(r), Len(s[:i])+1)
		}
	}
	return nil
}

// nextMarks is the length of the run of combining marks that r ends, given
// the length of the run before it.
func nextMarks(run int, r rune) int {
	if isMark(r) {
		return run + 1
	}
	return 0
}

// CheckLen is Check plus a bound of at most max characters.
func CheckLen(s string, max int) error {
	if n := Len(s); n > max {
		return fmt.Errorf("at most %d characters (got %d)", max, n)
	}
	return Check(s)
}

// quoteRune writes r as \uNNNN: readable in a terminal, and a valid escape
// inside a JSON string, so escaping the CLI's JSON output keeps it JSON.
func quoteRune(r rune) string { return fmt.Sprintf(`\u%04x`, r) }

// Escape returns s with every character Check refuses written as \uNNNN
// (newline as \n, tab as \t, carriage return as \r; combining marks past
// the MaxMarks-th of a run too) and every byte that is not UTF-8 as \xNN,
// so that s prints as one inert line.
func Escape(s string) string {
	if Check(s) == nil {
		return s
	}
	var b strings.Builder
	marks := 0
	escapeTo(&b, s, false, &marks)
	return b.String()
}

// Sanitize returns s made inert and bounded, for text the server keeps but
// must not refuse (what agents report about their hosts: refusing the
// report would blind the server to the host). Every character Check
// refuses is escaped as Escape does, and the result is cut to at most max
// characters, the last of them "…" when something was cut. The result
// always passes CheckLen(_, max) (max ≥ 1), text that already does comes
// back unchanged, and Sanitize of its own result changes nothing.
func Sanitize(s string, max int) string {
	s = Escape(s)
	if max < 1 {
		return ""
	}
	if Len(s) <= max {
		return s
	}
	n := 0
	for i := range s {
		if n == max-1 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}

// escapeTo writes s to b, escaped; with keepLines, newlines and tabs pass.
// marks carries the length of the current run of combining marks (across
// the writes of a Writer).
func escapeTo(b *strings.Builder, s string, keepLines bool, marks *int) {
	for i, w := 0, 0; i < len(s); i += w {
		r, size := utf8.DecodeRuneInString(s[i:])
		w = size
		*marks = nextMarks(*marks, r)
		switch {
		case *marks > MaxMarks:
			b.WriteString(quoteRune(r))
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(b, `\x%02x`, s[i])
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case refused(r):
			b.WriteString(quoteRune(r))
		default:
			b.WriteString(s[i : i+size])
		}
	}
}

// Writer escapes, on its way to the underlying writer, every control
// character except newline and tab (which the program itself writes to lay
// out lines and tables): no escape sequence, bell or carriage return from
// untrusted text reaches a terminal. It keeps an incomplete UTF-8 sequence
// at the end of a Write for the next one.
// It is safe for concurrent use (loggers of the server and agent write
// through it too).
type Writer struct {
	mu    sync.Mutex
	w     io.Writer
	tail  []byte
	marks int // the run of combining marks written last
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p and writes it; it reports len(p) when the escaped text was
// written whole.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.tail) == 0 && plain(p) {
		// Nothing to escape (a server's log line, mostly): written as
		// it is, with no copy.
		if len(p) > 0 {
			w.marks = 0
		}
		if _, err := w.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	buf := append(w.tail, p...)
	w.tail = nil
	// Keep an unfinished rune (at most 3 bytes) for the next call.
	if k := incomplete(buf); k > 0 {
		w.tail = append([]byte(nil), buf[len(buf)-k:]...)
		buf = buf[:len(buf)-k]
	}
	var b strings.Builder
	escapeTo(&b, string(buf), true, &w.marks)
	if _, err := io.WriteString(w.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// plain reports whether p is printable ASCII, newlines and tabs: what
// escapeTo with keepLines writes unchanged.
func plain(p []byte) bool {
	for _, c := range p {
		if c >= 0x7f || c < 0x20 && c != '\n' && c != '\t' {
			return false
		}
	}
	return true
}

// incomplete returns how many bytes at the end of p start a UTF-8 sequence
// that p does not finish (0 when none).
func incomplete(p []byte) int {
	for k := 1; k <= 3 && k <= len(p); k++ {
		c := p[len(p)-k]
		if c < 0x80 {
			return 0 // ASCII: nothing pending
		}
		if c >= 0xc0 { // a start byte
			if !utf8.FullRune(p[len(p)-k:]) {
				return k
			}
			return 0
		}
	}
	return 0
}
