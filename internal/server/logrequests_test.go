package server

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
