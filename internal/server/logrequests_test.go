package server

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/httpedge"
)

// TestLogRequests checks the server's line per call: a person's call at
// info with its method, path, route, status and request id; an agent's
// successful call at debug, which costs nothing when debug is off (no
// allocation beyond the call's own: its line is not built).
func TestLogRequests(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	route := ""
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpedge.SetRoute(r.Context(), route)
		w.WriteHeader(http.StatusCreated)
	})
	h := httpedge.RequestID(logRequests(log, inner))
	bare := httpedge.RequestID(inner)
	serve := func(h http.Handler, method, path string) {
		req := httptest.NewRequest(method, path, nil)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	route = "POST /api/v1/requests"
	serve(h, http.MethodPost, "/api/v1/requests")
	line := buf.String()
	for _, want := range []string{"level=INFO", "msg=http", "method=POST", "path=/api/v1/requests", `route="POST /api/v1/requests"`, "status=201", "duration_ms=", "request_id="} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	buf.Reset()
	route = "POST /api/v1/agent/report"
	serve(h, http.MethodPost, "/api/v1/agent/report")
	if buf.Len() != 0 {
		t.Errorf("an agent's report logged %q at info", buf.String())
	}
	logged := testing.AllocsPerRun(200, func() { serve(h, http.MethodPost, "/api/v1/agent/report") })
	alone := testing.AllocsPerRun(200, func() { serve(bare, http.MethodPost, "/api/v1/agent/report") })
	// The status recorder is the one allocation the log adds.
	if logged > alone+1 {
		t.Errorf("an agent's call not logged cost %.0f allocations with the log, %.0f without: its line was built", logged, alone)
	}
}

// blockingLog is a log destination that holds every write until release is
// closed (or a second has passed) and records whether the write had to
// wait for the timeout.
type blockingLog struct {
	release  chan struct{}
	timedOut atomic.Bool
}

func (b *blockingLog) Write(p []byte) (int, error) {
	select {
	case <-b.release:
	case <-time.After(time.Second):
		b.timedOut.Store(true)
	}
	return len(p), nil
}

// TestAnswerLeavesBeforeItsLogLine checks that a whole answer (its
// Content-Length set, as every JSON answer of the API is) reaches the
// client before the access log's line is written: the log is released only
// once the client has read the answer, so a server that logs first holds
// the answer until the log's write gives up.
func TestAnswerLeavesBeforeItsLogLine(t *testing.T) {
	dst := &blockingLog{release: make(chan struct{})}
	log := slog.New(slog.NewTextHandler(dst, &slog.HandlerOptions{Level: slog.LevelInfo}))
	body := `{"id": "r-1"}` + "\n"
	srv := httptest.NewServer(httpedge.RequestID(logRequests(log, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpedge.SetRoute(r.Context(), "POST /api/v1/requests")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, body)
	}))))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/v1/requests", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(dst.release)
	if err != nil || string(got) != body {
		t.Fatalf("answer %q, %v", got, err)
	}
	if dst.timedOut.Load() {
		t.Error("the log line was written before the answer left: the client waited for the log's write")
	}
}
