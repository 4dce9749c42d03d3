package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestDesiredCutShort: a server killed while it streams a desired state
// (or one that ends the answer short after an error: api.writeSnapshot)
// leaves valid JSON up to the cut. The agent must get an error, never the
// part as a state, and when the next server answers, its answer alone: no
// field of the cut one (here a delta's since, changed and rules, sent first
// so that a partial decode would have set them) may leak into it.
func TestDesiredCutShort(t *testing.T) {
	const cut = `{"since":5,"changed":[7],"rules":true,"target":"web-01","revision":9,"server_time":"2026-01-01T00:00:00Z","protected":[],` +
		`"grants":[{"id":7,"source":"192.0.2.1/32","protocol":"tcp","port":22,"expires_at":"2026-01-01T01:00:00Z"}`
	cutSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(cut))
		w.(http.Flusher).Flush()
		// Returning ends the chunked answer cleanly, as a handler that
		// gave up does; a killed server drops the connection (below).
	}))
	defer cutSrv.Close()
	killedSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(cut))
		w.(http.Flusher).Flush()
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	}))
	defer killedSrv.Close()
	whole := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"target":"web-01","revision":10,"server_time":"2026-01-01T00:00:01Z","protected":[],"grants":[]}`))
	}))
	defer whole.Close()

	for _, tc := range []struct {
		name string
		srv  *httptest.Server
	}{{"ended short", cutSrv}, {"connection dropped", killedSrv}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.srv.URL, "agent-token")
			if err != nil {
				t.Fatal(err)
			}
			if ds, err := c.DesiredSince(context.Background(), 8, 5, 0); err == nil {
				t.Errorf("a cut answer was taken as a state: %+v", ds)
			}
			c, err = New(tc.srv.URL+","+whole.URL, "agent-token")
			if err != nil {
				t.Fatal(err)
			}
			ds, err := c.DesiredSince(context.Background(), 8, 5, 0)
			if err != nil {
				t.Fatalf("the next server's answer: %v", err)
			}
			if ds.Revision != 10 || ds.Since != 0 || ds.Rules || ds.Changed != nil || len(ds.Grants) != 0 {
				t.Errorf("the next server's snapshot came back mixed with the cut delta: %+v", ds)
			}
		})
	}
}

// TestReportPoll: a report carrying its poll sends the poll's parameters
// with the report, and tells the long-poll's answer (200, the desired state)
// from an older server's 204 (recorded, no answer: the caller polls on its
// own).
func TestReportPoll(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int
		answered bool
	}{{"answered", http.StatusOK, true}, {"older server", http.StatusNoContent, false}} {
		t.Run(tc.name, func(t *testing.T) {
			var query, body string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/api/v1/agent/report" {
					http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
					return
				}
				b, _ := io.ReadAll(r.Body)
				query, body = r.URL.RawQuery, string(b)
				if tc.status == http.StatusNoContent {
					w.WriteHeader(http.StatusNoContent)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"target":"web-01","revision":8,"since":7,"changed":[],"server_time":"2026-01-01T00:00:00Z","protected":[],"grants":[]}`))
			}))
			defer srv.Close()
			c, err := New(srv.URL, "agent-token")
			if err != nil {
				t.Fatal(err)
			}
			ds, answered, err := c.ReportPoll(context.Background(), wire.AgentReport{Revision: 7}, 7, 7, 20*time.Second)
			if err != nil || answered != tc.answered {
				t.Fatalf("ReportPoll: answered %v, %v; want %v", answered, err, tc.answered)
			}
			if query != "after=7&rules=1&since=7&wait=20s" || !strings.Contains(body, `"revision":7`) {
				t.Errorf("sent ?%s with %s, want the poll's parameters and the report", query, body)
			}
			if tc.answered && (ds.Revision != 8 || ds.Since != 7) {
				t.Errorf("answer %+v, want the delta 7 -> 8", ds)
			}
			if !tc.answered && ds.Target != "" {
				t.Errorf("a 204 gave a desired state: %+v", ds)
			}
		})
	}
}

// TestSmallDeltaDecodedWhole: the agent's answer to a grant (a one-grant
// delta, sent with its length) is decoded in one json.Unmarshal, not token
// by token: it is on the path from the commit to the kernel. Counted in
// allocations (the whole exchange, server included): 236 before, of which
// ~120 went to the token-by-token decoding of ~400 bytes; 117 after.
// And an answer cut short of its announced length is an error, as when
// streamed.
func TestSmallDeltaDecodedWhole(t *testing.T) {
	const delta = `{"target":"web-01","revision":1234,"server_time":"2026-12-07T19:25:46.672791421Z","protected":null,` +
		`"grants":[{"id":77,"source":"192.0.2.10/32","protocol":"tcp","port":2222,"expires_at":"2026-12-07T19:35:46.672791421Z"}],` +
		`"since":1233,"changed":[77],"breakglass_key":"MCowBQYDK2VwAyEAq0Hn3zY6iQ3Y2o1i8pO0m9b1Lq3N8tF4bQ2wK7x3pYc="}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(delta)))
		io.WriteString(w, delta)
	}))
	defer srv.Close()
	c, err := New(srv.URL, "agent-token")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var ds wire.DesiredState
	allocs := testing.AllocsPerRun(200, func() {
		if ds, err = c.DesiredSince(ctx, 1233, 1233, 0); err != nil {
			t.Fatal(err)
		}
	})
	var want wire.DesiredState
	if err := json.Unmarshal([]byte(delta), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ds, want) {
		t.Errorf("got %+v, want %+v", ds, want)
	}
	t.Logf("%.0f allocations per exchange", allocs)
	if allocs > 150 {
		t.Errorf("%.0f allocations per exchange of a one-grant delta: decoded token by token", allocs)
	}

	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(delta)))
		io.WriteString(w, delta[:len(delta)/2])
		w.(http.Flusher).Flush()
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	}))
	defer cut.Close()
	if c, err = New(cut.URL, "agent-token"); err != nil {
		t.Fatal(err)
	}
	if ds, err := c.DesiredSince(ctx, 1233, 1233, 0); err == nil {
		t.Errorf("an answer cut short of its length was taken as a state: %+v", ds)
	}
}
