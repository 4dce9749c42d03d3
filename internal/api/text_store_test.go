package api_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"testing"
)

// TestTextTheDatabaseCannotHold: a NUL byte or bytes that are not UTF-8 in
// a path, a query parameter or a string inside a cursor are bad input,
// answered 400 or 422 as a problem on SQLite and PostgreSQL
// alike. PostgreSQL's text cannot hold them: before, each of these calls
// was a 500 there (SQLSTATE 22021 in the log).
func TestTextTheDatabaseCannotHold(t *testing.T) {
	cursor := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	paths := []struct{ method, path string }{
		{"GET", "/api/v1/targets?cursor=" + cursor(`"\u0000"`)},
		{"GET", "/api/v1/requests?cursor=" + cursor(`{"CreatedAt":"2026-12-07T10:00:00Z","ID":"\u0000"}`)},
		{"GET", "/api/v1/tokens?cursor=" + cursor(`{"ID":"a\u0000"}`)},
		{"GET", "/api/v1/bindings?cursor=" + cursor(`{"Principal":"\u0000"}`)},
		{"GET", "/api/v1/webhooks?cursor=" + cursor(`{"ID":"\u0000"}`)},
		{"GET", "/api/v1/requests?target=%00"},
		{"GET", "/api/v1/requests?requester=%ff"},
		{"GET", "/api/v1/audit?actor=%ff"},
		{"GET", "/api/v1/audit?target=%00"},
		{"GET", "/api/v1/audit/export?request=%00"},
		{"GET", "/api/v1/webhooks/%ff/deliveries"},
		{"GET", "/api/v1/requests/%ff"},
		{"POST", "/api/v1/requests/%00/revoke"},
		{"GET", "/api/v1/sessions?principal=%c3"},
		{"GET", "/api/v1/requests?%ff=1"},
	}
	stores := []struct {
		name string
		env  func(testing.TB) *env
	}{
		{"sqlite", func(tb testing.TB) *env { return newEnv(tb) }},
		{"postgres", newPostgresEnv},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) {
			e := s.env(t)
			for _, p := range paths {
				code, b := e.raw(t, p.method, p.path, e.admin, "", nil)
				if code != http.StatusBadRequest && code != http.StatusUnprocessableEntity {
					t.Errorf("%s %s: %d %s, want 400 or 422", p.method, p.path, code, b)
					continue
				}
				var prob struct{ Detail string }
				if err := json.Unmarshal(b, &prob); err != nil || prob.Detail == "" {
					t.Errorf("%s %s: %s is not a problem with a detail", p.method, p.path, b)
				}
			}
		})
	}
}
