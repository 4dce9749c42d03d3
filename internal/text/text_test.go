package text

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		what string // part of the message
	}{
		{"web-01", true, ""},
		{"Ops on-call: INC-1234 (Zoë, 東京)", true, ""},
		{"", true, ""},
		{"a\x00b", false, `\u0000`},
		{"line\nforged", false, `\u000a at character 5`},
		{"tab\there", false, `\u0009`},
		{"cr\r", false, `\u000d`},
		{"bell\a", false, `\u0007`},
		{"esc\x1b[31mred", false, `\u001b`},
		{"del\x7f", false, `\u007f`},
		{"c1\u0085", false, `\u0085`},
		{"csi\u009b31m", false, `\u009b`},
		{"evil\u202egpj.exe", false, `\u202e`},
		{"iso\u2066x\u2069", false, `\u2066`},
		{"bad\xffutf8", false, "not UTF-8"},
		{"zero\u200bwidth", true, ""}, // not a control character; shown as is
		{"\ufffd literal replacement", true, ""},
		{"Tie\u0302\u0301ng Vie\u0323\u0302t, \u0f40\u0fb2\u0f71\u0f74\u0f7a", true, ""}, // decomposed Vietnamese, Tibetan stack
		{"a" + strings.Repeat("\u0301", MaxMarks), true, ""},
		{"ok" + strings.Repeat("\u0336\u0301\u20dd", 3), false, "more than 8 combining marks in a row at character 11"},
		{"Zalgo" + strings.Repeat("\u0300", 500), false, "combining marks"},
	} {
		err := Check(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%q) = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.what) {
			t.Errorf("Check(%q) = %q, want it to mention %q", tc.in, err, tc.what)
		}
	}
}

func TestCheckLenCountsCharacters(t *testing.T) {
	s := strings.Repeat("é", 100) // 200 bytes, 100 characters
	if err := CheckLen(s, 100); err != nil {
		t.Errorf("100 characters refused at 100: %v", err)
	}
	if err := CheckLen(s+"é", 100); err == nil || !strings.Contains(err.Error(), "at most 100 characters (got 101)") {
		t.Errorf("101 characters: %v", err)
	}
}

func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain":            "plain",
		"a\nb\tc\rd":       `a\nb\tc\rd`,
		"\x1b[2J\a":        `\u001b[2J\u0007`,
		"c1\u0085\u009b":   `c1\u0085\u009b`,
		"rlo\u202e":        `rlo\u202e`,
		"bad\xff":          `bad\xff`,
		"Zoë \ufffd":       "Zoë \ufffd",
		"\x00\x7f":         `\u0000\u007f`,
		"mixed é\x1bé end": `mixed é\u001bé end`,
		"z" + strings.Repeat("\u0301", 10) + "y\u0301": "z" + strings.Repeat("\u0301", 8) + `\u0301\u0301` + "y\u0301",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriterKeepsLayoutEscapesTheRest(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	in := "ID\tNAME\nr-1\tx\x1b]0;pwned\a\u009b\n"
	// One byte at a time: multi-byte runes split across writes stay whole.
	for i := range len(in) {
		if n, err := w.Write([]byte{in[i]}); n != 1 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if want := "ID\tNAME\nr-1\tx\\u001b]0;pwned\\u0007\\u009b\n"; b.String() != want {
		t.Errorf("wrote %q, want %q", b.String(), want)
	}
}

// TestWriterPlainLineAsIs: a line with nothing to escape (the server's log
// lines: one a call) goes through as it is, with no allocation, and a run
// of combining marks still ends at it.
func TestWriterPlainLineAsIs(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b)
	line := []byte("time=2026-12-07T16:00:00Z level=INFO msg=http method=GET path=/api/v1/requests/r-abc status=200\tx\n")
	b.Grow(1 << 20)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a plain line cost %.0f allocations, want 0", n)
	}
	b.Reset()
	for _, in := range []string{"x" + strings.Repeat("\u0301", 8), "y", strings.Repeat("\u0301", 2)} {
		if _, err := w.Write([]byte(in)); err != nil {
			t.Fatal(err)
		}
	}
	if want := "x" + strings.Repeat("\u0301", 8) + "y" + strings.Repeat("\u0301", 2); b.String() != want {
		t.Errorf("wrote %q, want %q", b.String(), want)
	}
}

// FuzzCheckAndEscape: whatever Check accepts holds no control character;
// whatever Escape returns is valid UTF-8, passes Check, and equals the input
// when Check accepted it; the Writer never lets a control byte other than
// newline and tab through, however the input is split.
func FuzzCheckAndEscape(f *testing.F) {
	for _, s := range []string{"web-01", "a\nb", "\x1b[31m", "\u009b", "\u202e", "\xff\xfe", "é", "\xe2\x80", "INC-1\r\n", "\x00", "a\u0301\u0301\u0301\u0301\u0301\u0301\u0301\u0301\u0301\u0301"} {
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, s string, split uint8) {
		esc := Escape(s)
		if !utf8.ValidString(esc) {
			t.Fatalf("Escape(%q) = %q is not UTF-8", s, esc)
		}
		if err := Check(esc); err != nil {
			t.Fatalf("Escape(%q) = %q fails Check: %v", s, esc, err)
		}
		if Check(s) == nil {
			if esc != s {
				t.Fatalf("Escape changed accepted text %q to %q", s, esc)
			}
			for _, r := range s {
				if r < 0x20 || r >= 0x7f && r <= 0x9f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 {
					t.Fatalf("Check accepted %q holding %U", s, r)
				}
			}
		}
		var b bytes.Buffer
		w := NewWriter(&b)
		step := int(split)%7 + 1
		for i := 0; i < len(s); i += step {
			if _, err := w.Write([]byte(s[i:min(i+step, len(s))])); err != nil {
				t.Fatal(err)
			}
		}
		run := 0
		for _, r := range b.String() {
			if run = nextMarks(run, r); run > MaxMarks {
				t.Fatalf("Writer let a run of more than %d combining marks through for %q: %q", MaxMarks, s, b.String())
			}
			if r != '\n' && r != '\t' && (r < 0x20 || r >= 0x7f && r <= 0x9f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069) {
				t.Fatalf("Writer let %U through for %q: %q", r, s, b.String())
			}
		}
	})
}

func TestSanitize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"web-01", 64, "web-01"},
		{"host\x1b]0;owned\x07", 64, `host\u001b]0;owned\u0007`},
		{"sshd\nforged line", 64, `sshd\nforged line`},
		{"evil\u202egpj.exe", 64, `evil\u202egpj.exe`},
		{"bad\xffutf8", 64, `bad\xffutf8`},
		{"ééééé", 5, "ééééé"},
		{"éééééé", 5, "éééé…"},
		{"a\x1b", 3, "a\\…"},
		{"x", 0, ""},
	} {
		if got := Sanitize(tc.in, tc.max); got != tc.want {
			t.Errorf("Sanitize(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

// FuzzSanitize: whatever Sanitize returns passes CheckLen at its bound, is
// the input itself when the input already did, and is its own Sanitize.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"web-01", "a\nb", "\x1b[31m", "\u202e", "\xff\xfe", "ééé", "INC-1\r\n"} {
		f.Add(s, uint8(4))
	}
	f.Fuzz(func(t *testing.T, s string, n uint8) {
		max := int(n%64) + 1
		got := Sanitize(s, max)
		if err := CheckLen(got, max); err != nil {
			t.Fatalf("Sanitize(%q, %d) = %q fails CheckLen: %v", s, max, got, err)
		}
		if CheckLen(s, max) == nil && got != s {
			t.Fatalf("Sanitize changed accepted text %q to %q", s, got)
		}
		if again := Sanitize(got, max); again != got {
			t.Fatalf("Sanitize(Sanitize(%q)) = %q, want %q", s, again, got)
		}
	})
}
