package api

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestEveryEndpointBoundsBodies: a body declared larger than maxBody is
// refused with a 413 that says so on every endpoint, before anything else
// (authentication included) looks at the request: also on those that read
// no body, which today read and discard it.
func TestEveryEndpointBoundsBodies(t *testing.T) {
	h := New(Deps{Logger: slog.New(slog.DiscardHandler)})
	_, patterns := (&api{}).routes()
	big := bytes.Repeat([]byte("x"), maxBody+1)
	for _, p := range patterns {
		method, path, _ := strings.Cut(p, " ")
		path = strings.NewReplacer("{name}", "web-01", "{id}", "r-x").Replace(path)
		req := httptest.NewRequest(method, path, bytes.NewReader(big))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "larger than 1048576 bytes") {
			t.Errorf("%s with a %d-byte body: %d %s, want 413 saying the limit", p, len(big), rec.Code, rec.Body)
		}
	}
}
