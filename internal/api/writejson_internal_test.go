package api

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
)

// TestWriteJSONWhole checks that an answer is written whole with its
// Content-Length (what lets the server send it before logging the call),
// and that a value that cannot be encoded answers a 500 problem instead of
// a 200 with a truncated body.
func TestWriteJSONWhole(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v          any
		wantStatus int
		wantType   string
	}{
		{"object", map[string]string{"id": "r-1"}, http.StatusCreated, "application/json"},
		{"list", []int{1, 2, 3}, http.StatusCreated, "application/json"},
		{"unencodable", map[string]float64{"x": math.Inf(1)}, http.StatusInternalServerError, "application/problem+json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeJSON(w, http.StatusCreated, tc.v)
			if w.Code != tc.wantStatus || w.Header().Get("Content-Type") != tc.wantType {
				t.Fatalf("status %d, type %q; want %d, %q", w.Code, w.Header().Get("Content-Type"), tc.wantStatus, tc.wantType)
			}
			if got := w.Header().Get("Content-Length"); got != strconv.Itoa(w.Body.Len()) {
				t.Errorf("Content-Length %q for a body of %d bytes", got, w.Body.Len())
			}
			if !json.Valid(w.Body.Bytes()) {
				t.Errorf("body is not one JSON value: %q", w.Body.String())
			}
		})
	}
}
