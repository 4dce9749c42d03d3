package wire

import (
	"encoding/json"
	"testing"
	"time"
)

// TestDurationJSON: a Duration is written as json.Marshal writes its
// string and read back whatever the JSON spells (escapes included); what
// is not a duration string is refused; and the plain form every client
// sends is read without json.Unmarshal (2 allocations, 3 through it: a
// request's duration is decoded on every creation, by the server and by
// the client reading the answer).
func TestDurationJSON(t *testing.T) {
	for _, d := range []time.Duration{0, time.Nanosecond, 1500 * time.Nanosecond, 90 * time.Second, 10 * time.Minute, 25*time.Hour + time.Millisecond, -time.Hour} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(d.String())
		if string(b) != string(want) {
			t.Errorf("%v written as %s, want %s", d, b, want)
		}
		var got Duration
		if err := json.Unmarshal(b, &got); err != nil || time.Duration(got) != d {
			t.Errorf("%s read as %v, %v; want %v", b, time.Duration(got), err, d)
		}
	}
	for in, want := range map[string]time.Duration{`"1h"`: time.Hour, `"\u0031h"`: time.Hour, `"1h\u0033\u0030m"`: 90 * time.Minute} {
		var got Duration
		if err := json.Unmarshal([]byte(in), &got); err != nil || time.Duration(got) != want {
			t.Errorf("%s read as %v, %v; want %v", in, time.Duration(got), err, want)
		}
	}
	for _, in := range []string{`3600`, `"soon"`, `""`, `"1h\n"`, `null`, `"1h"x`} {
		var got Duration
		if err := got.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("%s read as %v, want an error", in, time.Duration(got))
		}
	}
	var d Duration
	plain := []byte(`"10m0s"`)
	if n := testing.AllocsPerRun(100, func() {
		if err := d.UnmarshalJSON(plain); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("reading %s took %.0f allocations, want at most 2", plain, n)
	}
}
