package wire

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzDesiredLines attacks the agent's decoding of a snapshot as lines
// with whatever a broken or hostile server or proxy could send: the
// decoder refuses the body and leaves its output untouched, or it gives a
// state that JSON carries exactly (marshalled and decoded again, every
// field the same; an empty list and none are the same to the agent), that the lines carry again exactly (written as the
// server writes them and decoded again), whose grants' texts hold only
// what a server writes (printable ASCII without a space: an address or
// prefix, tcp or udp), and which the body cut one byte short does not
// give. The seeds (server-written snapshots, cut, with hostile lines) run
// as a normal test; go test -fuzz FuzzDesiredLines looks further.
func FuzzDesiredLines(f *testing.F) {
	ds := linesState()
	good := linesBody(f, ds)
	f.Add(good)
	host := DesiredState{Target: "web-01", Revision: 3, ServerTime: time.Unix(1798761600, 7).UTC(), Protected: []Port{{Port: 22, Protocol: "tcp"}},
		Grants: []GrantEntry{{ID: 5, Source: "192.0.2.1/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Unix(0, math.MaxInt64).UTC()}}}
	f.Add(linesBody(f, host))
	for _, n := range []int{1, len(good) / 3, len(good) / 2, len(good) - 1} {
		f.Add(good[:n])
	}
	line := string(AppendGrantLine(nil, ds.Grants[0]))
	for _, bad := range []string{
		"1 198.51.100.\xff/32 tcp 22 1 10.0.0.5\n", // not UTF-8: JSON cannot carry it
		"1 198.51.100.7/32 tcp 22 1 10.0.0.5\x00\n",
		"1 198.51.100.7/32 tcp 22 1 10.0.0.5\r\n",
		"1 198.51.100.7/32 t\u00e9p 22 1 10.0.0.5\n",
		"1 fe80::1%eth0 tcp 22 1 10.0.0.5\n",
		"1 0.0.0.0/0 tcp 0 1 10.0.0.5\n",
		"1 198.51.100.7/32 tcp 65536 1 10.0.0.5\n",
		"1 198.51.100.7/32 tcp 22 9223372036854775808 10.0.0.5\n",
		"1 198.51.100.7/32 tcp 22 -1 10.0.0.5\n",
		"00001 198.51.100.7/32 tcp 022 0001 10.0.0.5\n",
		"1 198.51.100.7/32 tcp 22 1 10.0.0.5\n1 198.51.100.7/32 tcp 22 1 10.0.0.5\n",
		"1 198.51.100.7/32 tcp 22 1 " + strings.Repeat("1", 5000) + "\n",
	} {
		f.Add([]byte(strings.Replace(string(good), line, bad, 1)))
	}
	f.Add(append(good[:len(good):len(good)], good...))                          // a second snapshot after the tail
	f.Add(bytes.Replace(good, []byte("\n{"), []byte("\n{\"grants\":[{}],"), 1)) // grants in the tail
	f.Add(bytes.ReplaceAll(good, []byte("\n"), []byte("\r\n")))

	f.Fuzz(func(t *testing.T, body []byte) {
		sentinel := DesiredState{Target: "untouched", Revision: -1}
		got := sentinel
		if err := DecodeDesiredLines(bytes.NewReader(body), &got); err != nil {
			if diff := cmp.Diff(sentinel, got); diff != "" {
				t.Fatalf("a refused body (%v) changed the output:\n%s", err, diff)
			}
			return
		}
		for i, g := range got.Grants {
			for _, s := range []string{g.Source, g.Protocol, g.Destination} {
				if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
					t.Fatalf("grants[%d] taken with a text no server writes: %q", i, s)
				}
			}
		}
		j, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("a state taken from lines that JSON cannot carry: %v", err)
		}
		var viaJSON DesiredState
		if err := json.Unmarshal(j, &viaJSON); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, viaJSON, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("the state taken from lines is not the one its JSON gives (-lines +json):\n%s", diff)
		}
		var again DesiredState
		if err := DecodeDesiredLines(bytes.NewReader(linesBody(t, got)), &again); err != nil {
			t.Fatalf("the state taken from lines, written as lines again, is refused: %v", err)
		}
		if diff := cmp.Diff(got, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("the state taken from lines, written again, decodes otherwise (-first +again):\n%s", diff)
		}
		cut := DesiredState{}
		if err := DecodeDesiredLines(bytes.NewReader(body[:len(body)-1]), &cut); err == nil {
			t.Fatalf("the body cut one byte short was taken too: %+v", cut)
		}
	})
}

// linesBody writes ds as the server does (api.writeSnapshot).
func linesBody(tb testing.TB, ds DesiredState) []byte {
	tb.Helper()
	head := ds
	head.Grants, head.Bastion, head.ServerTime = []GrantEntry{}, nil, time.Time{}
	b, err := json.Marshal(head)
	if err != nil {
		tb.Fatal(err)
	}
	b = append(b, '\n')
	for _, g := range ds.Grants {
		b = AppendGrantLine(b, g)
	}
	if b, err = AppendDesiredTail(b, ds.Bastion, ds.ServerTime); err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzGrantLine attacks the server's side: any grant entry a server makes
// (texts as parsed values print them: printable ASCII without a space; an
// id from 0; a deadline JSON carries, years 1 to 9999) written as a line
// decodes to the entry JSON gives for it, but for a deadline outside the
// Unix nanoseconds' range (1970 to 2262), which comes back clamped to it,
// as the agent clamps every deadline it holds (firewall.UnixNano): a line
// is never refused for what its JSON carries, and never opens longer.
func FuzzGrantLine(f *testing.F) {
	f.Add(int64(1), "198.51.100.7/32", "tcp", uint16(22), int64(1798761600), int64(5), "")
	f.Add(int64(9_000_000_000), "2001:db8:99::/48", "udp", uint16(65535), int64(1798761600), int64(999_999_999), "2001:db8:10::5")
	f.Add(int64(2), "192.0.2.1", "tcp", uint16(443), int64(10_000_000_000), int64(0), "10.0.0.5") // year 2286
	f.Add(int64(3), "192.0.2.1", "tcp", uint16(443), int64(-1), int64(0), "")                     // 1969
	f.Add(int64(0), "192.0.2.1", "udp", uint16(1), int64(253402300799), int64(999_999_999), "")   // 9999-12-31
	f.Fuzz(func(t *testing.T, id int64, source, protocol string, port uint16, sec, nsec int64, dest string) {
		printable := func(s string) bool {
			return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) < 0
		}
		exp := time.Unix(sec, nsec).UTC()
		if id < 0 || source == "" || !printable(source) || !printable(protocol) || protocol == "" || !printable(dest) ||
			exp.Year() < 1 || exp.Year() > 9999 {
			return
		}
		g := GrantEntry{ID: id, Source: source, Protocol: protocol, Port: port, ExpiresAt: exp, Destination: dest}
		j, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		var want GrantEntry
		if err := json.Unmarshal(j, &want); err != nil {
			t.Fatal(err)
		}
		switch {
		case want.ExpiresAt.Before(time.Unix(0, 0)):
			want.ExpiresAt = time.Unix(0, 0).UTC()
		case want.ExpiresAt.After(time.Unix(0, math.MaxInt64)):
			want.ExpiresAt = time.Unix(0, math.MaxInt64).UTC()
		}
		line := AppendGrantLine(nil, g)
		got, err := ParseGrantLine(line[:len(line)-1])
		if err != nil {
			t.Fatalf("the line %q of a grant JSON carries (%s) is refused: %v", line, j, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("the line %q decodes to another entry than its JSON %s (-json +lines):\n%s", line, j, diff)
		}
	})
}
