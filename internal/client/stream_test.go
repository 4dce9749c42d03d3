package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/wire"
)

// readSizes is a reader that records the largest buffer a Read was asked
// to fill: json.Decoder grows its buffer to hold the value it decodes, so
// this is what the decoder holds of the answer at once.
type readSizes struct {
	r   io.Reader
	max int
}

func (s *readSizes) Read(p []byte) (int, error) {
	s.max = max(s.max, len(p))
	return s.r.Read(p)
}

// TestDesiredStateDecodedAGrantAtATime: a desired state of 50,000 grants
// (~5 MB of JSON) is decoded without the decoder ever holding more than a
// few grants' text (json.Decoder.Decode held the whole answer), and to
// exactly what json.Unmarshal makes of it.
func TestDesiredStateDecodedAGrantAtATime(t *testing.T) {
	ds := wire.DesiredState{Target: "web-01", Revision: 7, Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}, Mode: "host",
		Bastion: []wire.BastionGrant{{GrantID: 3}}, Changed: []int64{1, 2}, Since: 4}
	for i := range 50000 {
		ds.Grants = append(ds.Grants, wire.GrantEntry{ID: int64(i + 1), Source: fmt.Sprintf("10.%d.%d.%d/32", i>>16, (i>>8)&255, i&255), Protocol: "tcp", Port: 22})
	}
	body, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	r := &readSizes{r: bytes.NewReader(body)}
	var got wire.DesiredState
	if err := decodeAnswer(r, &got); err != nil {
		t.Fatal(err)
	}
	var want wire.DesiredState
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded differently from json.Unmarshal")
	}
	if r.max > 64<<10 {
		t.Errorf("the decoder read %d bytes at once out of %d: it buffers the answer", r.max, len(body))
	}
}

// TestDecodeDesiredAsUnmarshal: every shape of a desired state decodes as
// json.Unmarshal decodes it, and what it refuses it refuses whole.
func TestDecodeDesiredAsUnmarshal(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		fails      bool
	}{
		{"no grants member", `{"target":"a","revision":1}`, false},
		{"null grants", `{"target":"a","grants":null}`, false},
		{"empty grants", `{"grants":[],"target":"a"}`, false},
		{"grants first, unknown member", `{"grants":[{"id":1,"source":"192.0.2.1/32","protocol":"tcp","port":22,"expires_at":"2026-01-01T00:00:00Z"}],"x":{"y":[1]},"revision":2}`, false},
		{"whitespace", " {\n \"grants\" : [ { \"port\" : 22 } ] } \n", false},
		// A member repeated under another case is one field to
		// json.Unmarshal, the last occurrence winning (streamed, the
		// members were re-encoded in the order of their keys).
		{"since then Since", `{"target":"a","since":3,"Since":0}`, false},
		{"revision then Revision", `{"revision":2,"Revision":5}`, false},
		{"grants then Grants", `{"grants":[{"port":22}],"Grants":[]}`, false},
		{"Grants then grants", `{"Grants":[],"grants":[{"port":22}]}`, false},
		{"grants then GRANTſ", `{"grants":[{"port":22}],"GRANTſ":null}`, false},
		{"target twice", `{"target":"a","target":"b"}`, false},
		{"grants not an array", `{"grants":{}}`, true},
		{"bad grant", `{"grants":[{"port":"x"}]}`, true},
		{"bad member", `{"revision":"x","grants":[]}`, true},
		{"not an object", `[1]`, true},
		{"cut in the grants", `{"revision":1,"grants":[{"port":22},`, true},
		{"cut after the grants", `{"revision":1,"grants":[]`, true},
		{"cut in a key", `{"revision":1,"gra`, true},
		{"data after", `{"revision":1} {}`, true},
		{"null", `null`, true},
		{"a string", ` "x"`, true},
		{"empty", ``, true},
	} {
		// Both ways: token by token (a snapshot, streamed without a
		// length), and whole (a small answer with its length).
		for _, whole := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/whole=%v", tc.name, whole), func(t *testing.T) {
				got := wire.DesiredState{Target: "untouched"}
				var err error
				if whole {
					err = decodeDesiredWhole(strings.NewReader(tc.body), int64(len(tc.body)), &got)
				} else {
					err = decodeAnswer(strings.NewReader(tc.body), &got)
				}
				if tc.fails {
					if err == nil {
						t.Fatalf("decoded %+v, want an error", got)
					}
					if got.Target != "untouched" || got.Grants != nil {
						t.Errorf("a refused answer changed the state: %+v", got)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				var want wire.DesiredState
				if err := json.Unmarshal([]byte(tc.body), &want); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
			})
		}
	}
}
