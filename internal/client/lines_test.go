package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestDesiredAsLines: the client asks for a desired state as lines
// (wire.DesiredLinesType, JSON still accepted) on a poll and on a report
// carrying its poll, decodes an answer by its Content-Type (lines or JSON,
// whichever the server chose), and refuses a lines answer cut short,
// keeping nothing of it. Other calls ask for JSON only.
func TestDesiredAsLines(t *testing.T) {
	const lines = `{"target":"web-01","revision":9,"protected":[{"port":22,"protocol":"tcp"}],"grants":[]}` + "\n" +
		"7 192.0.2.1/32 tcp 22 1798761600000000000\n" +
		"8 2001:db8::/64 udp 53 1798761600001000000\n"
	const tail = `{"server_time":"2026-12-07T19:00:00Z"}` + "\n"
	var accepts []string
	answer := func(body string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			accepts = append(accepts, r.Header.Get("Accept"))
			if r.URL.Path == "/api/v1/agent/report" && r.URL.Query().Get("after") == "" {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.Header().Set("Content-Type", wire.DesiredLinesType)
			w.Write([]byte(body))
		}))
	}
	whole := answer(lines + tail)
	defer whole.Close()
	c, err := New(whole.URL, "agent-token")
	if err != nil {
		t.Fatal(err)
	}
	check := func(ds wire.DesiredState) {
		t.Helper()
		want := []wire.GrantEntry{
			{ID: 7, Source: "192.0.2.1/32", Protocol: "tcp", Port: 22, ExpiresAt: time.Unix(1798761600, 0).UTC()},
			{ID: 8, Source: "2001:db8::/64", Protocol: "udp", Port: 53, ExpiresAt: time.Unix(1798761600, 1_000_000).UTC()},
		}
		if ds.Target != "web-01" || ds.Revision != 9 || len(ds.Protected) != 1 || len(ds.Grants) != 2 || ds.Grants[0] != want[0] || ds.Grants[1] != want[1] ||
			!ds.ServerTime.Equal(time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)) {
			t.Errorf("decoded %+v", ds)
		}
	}
	ds, err := c.DesiredSince(context.Background(), 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	check(ds)
	ds, answered, err := c.ReportPoll(context.Background(), wire.AgentReport{Revision: 9}, 9, 9, 0)
	if err != nil || !answered {
		t.Fatalf("report with its poll: %v, answered %v", err, answered)
	}
	check(ds)
	if err := c.Report(context.Background(), wire.AgentReport{Revision: 9}); err != nil {
		t.Fatal(err)
	}
	for i, a := range accepts {
		if asked := wire.AcceptsDesiredLines(a); asked != (i < 2) {
			t.Errorf("call %d sent Accept %q", i, a)
		}
	}

	cut := answer(lines)
	defer cut.Close()
	if c, err = New(cut.URL, "agent-token"); err != nil {
		t.Fatal(err)
	}
	if ds, err := c.DesiredSince(context.Background(), 0, 0, 0); err == nil {
		t.Errorf("an answer without its tail line was taken: %+v", ds)
	}
}

// BenchmarkDesiredDecode decodes a snapshot of 100,000 host grants as the
// agent receives it, as JSON (decodeDesired) and as lines
// (wire.DecodeDesiredLines), and reports the bytes of each:
//
//	go test ./internal/client -run '^$' -bench BenchmarkDesiredDecode -benchmem
func BenchmarkDesiredDecode(b *testing.B) {
	const n = 100_000
	now := time.Now().UTC().Truncate(time.Millisecond)
	ds := wire.DesiredState{Target: "web-01", Revision: 9, ServerTime: now, Protected: []wire.Port{{Port: 22, Protocol: "tcp"}}}
	var lines []byte
	for i := range n {
		g := wire.GrantEntry{ID: int64(i + 1), Source: fmt.Sprintf("10.%d.%d.%d/32", i>>16, byte(i>>8), byte(i)), Protocol: "tcp", Port: 22,
			ExpiresAt: now.Add(time.Hour + time.Duration(i)*time.Millisecond)}
		ds.Grants = append(ds.Grants, g)
		lines = wire.AppendGrantLine(lines, g)
	}
	js, err := json.Marshal(ds)
	if err != nil {
		b.Fatal(err)
	}
	head := ds
	head.Grants, head.ServerTime = []wire.GrantEntry{}, time.Time{}
	hj, _ := json.Marshal(head)
	lines = append(append(hj, '\n'), lines...)
	if lines, err = wire.AppendDesiredTail(lines, nil, now); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		decode func(io.Reader, *wire.DesiredState) error
	}{
		{"json", js, func(r io.Reader, ds *wire.DesiredState) error { return decodeAnswer(r, ds) }},
		{"lines", lines, wire.DecodeDesiredLines},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				var got wire.DesiredState
				if err := tc.decode(bytes.NewReader(tc.body), &got); err != nil || len(got.Grants) != n {
					b.Fatalf("%d grants, %v", len(got.Grants), err)
				}
			}
			b.ReportMetric(float64(len(tc.body)), "bytes/snapshot")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/grant")
		})
	}
}
