package client

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestDesiredHostileAnswers attacks the agent's decoding of its desired
// state with answers a broken or hostile server or proxy could send: a
// body in one encoding labelled as the other (with and without a length),
// a Content-Length above or below the body, one of 10 GiB, a tail twice, a
// gzip body the client did not ask to be decoded. Each is refused, and the
// call returns no state; a media type in mixed case or with parameters,
// and a body the transport asked gzip for, decode as the plain answer
// does. No answer makes the client allocate what its length claims.
func TestDesiredHostileAnswers(t *testing.T) {
	const head = `{"target":"web-01","revision":9,"protected":[{"port":22,"protocol":"tcp"}],"grants":[]}` + "\n"
	const grant = "7 192.0.2.1/32 tcp 22 1798761600000000000\n"
	const tail = `{"server_time":"2026-12-07T19:00:00Z"}` + "\n"
	const lines = head + grant + tail
	const js = `{"target":"web-01","revision":9,"protected":[{"port":22,"protocol":"tcp"}],"grants":[{"id":7,"source":"192.0.2.1/32","protocol":"tcp","port":22,"expires_at":"2027-01-01T00:00:00Z"}],"server_time":"2026-12-07T19:00:00Z"}` + "\n"
	gz := func(s string) string {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.String()
	}
	// raw answers the request with exactly these bytes, status line and
	// headers included, then closes the connection (a Content-Length that
	// lies cannot be sent through net/http's writer).
	raw := func(ct, length, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s", ct, length, body)
			buf.Flush()
		}
	}
	plain := func(ct, encoding, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			if encoding != "" {
				w.Header().Set("Content-Encoding", encoding)
			}
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush() // no length: chunked
			w.Write([]byte(body))
		}
	}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		ok      bool
	}{
		{"lines labelled JSON", plain("application/json", "", lines), false},
		{"lines labelled JSON with a length", raw("application/json", fmt.Sprint(len(lines)), lines), false},
		{"JSON labelled lines", plain(wire.DesiredLinesType, "", js), false},
		{"JSON labelled lines with a length", raw(wire.DesiredLinesType, fmt.Sprint(len(js)), js), false},
		{"lines, the tail twice", plain(wire.DesiredLinesType, "", lines+tail), false},
		{"lines, length above the body", raw(wire.DesiredLinesType, fmt.Sprint(len(lines)+10), lines), false},
		{"lines, length below the body", raw(wire.DesiredLinesType, fmt.Sprint(len(lines)-1), lines), false},
		{"JSON, length above the body", raw("application/json", fmt.Sprint(len(js)+10), js), false},
		{"JSON, length below the body", raw("application/json", fmt.Sprint(len(js)-2), js), false},
		{"JSON, a length of 10 GiB", raw("application/json", fmt.Sprint(10<<30), js), false},
		{"lines, a length of 10 GiB", raw(wire.DesiredLinesType, fmt.Sprint(10<<30), lines), false},
		{"gzip not asked for, labelled plain", plain(wire.DesiredLinesType, "", gz(lines)), false},
		{"lines in mixed case with parameters", plain("Application/VND.Jitgate.Desired-Lines.V1; charset=utf-8", "", lines), true},
		{"lines gzipped for the transport", plain(wire.DesiredLinesType, "gzip", gz(lines)), true},
		{"JSON", raw("application/json", fmt.Sprint(len(js)), js), true},
		{"JSON streamed", plain("application/json", "", js), true},
		{"JSON streamed, data after it", plain("application/json", "", js+"{}"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			c, err := New(srv.URL, "agent-token")
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			ds, err := c.DesiredSince(context.Background(), 0, 0, 0)
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
				t.Errorf("the call allocated %d MiB", grew>>20)
			}
			if !tc.ok {
				if err == nil || ds.Target != "" || ds.Grants != nil {
					t.Fatalf("taken: %+v, %v; want an error and no state", ds, err)
				}
				return
			}
			if err != nil || ds.Target != "web-01" || len(ds.Grants) != 1 || ds.Grants[0].Source != "192.0.2.1/32" ||
				!ds.ServerTime.Equal(time.Date(2026, 12, 7, 19, 0, 0, 0, time.UTC)) {
				t.Fatalf("decoded %+v, %v", ds, err)
			}
		})
	}
}
