package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestErrorsAreProblems sends one request down each way the API refuses
// and checks every answer is an RFC 9457 problem: Content-Type
// application/problem+json, type, title (the status's phrase), status (the
// answer's), detail, instance (the call's request id), and the field and
// rule extension members where they apply.
func TestErrorsAreProblems(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy("127.0.0.0/8"))
	nobody, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "mallory", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 2<<20)
	tests := []struct {
		name, method, path, token, ctype, body string
		wantStatus                             int
		wantField, wantRule, wantAllow         string
	}{
		{name: "no token", method: "GET", path: "/api/v1/targets", wantStatus: 401},
		{name: "no role", method: "POST", path: "/api/v1/targets", token: nobody, body: `{"name":"db-01"}`, wantStatus: 403},
		{name: "unknown target", method: "GET", path: "/api/v1/targets/nope", token: e.admin, wantStatus: 404},
		{name: "unknown endpoint", method: "GET", path: "/api/v1/nothing-here", token: e.admin, wantStatus: 404},
		{name: "wrong method", method: "PATCH", path: "/api/v1/targets", token: e.admin, wantStatus: 405, wantAllow: "GET, HEAD, POST"},
		{name: "wrong method on a named path", method: "POST", path: "/api/v1/targets/web-01", token: e.admin, wantStatus: 405, wantAllow: "GET, HEAD, DELETE"},
		{name: "malformed JSON", method: "POST", path: "/api/v1/targets", token: e.admin, body: `{"name":`, wantStatus: 400},
		{name: "wrong content type", method: "POST", path: "/api/v1/targets", token: e.admin, ctype: "text/plain", body: `{}`, wantStatus: 415},
		{name: "invalid field", method: "GET", path: "/api/v1/requests?limit=0", token: e.admin, wantStatus: 422, wantField: "limit"},
		{name: "duplicate", method: "POST", path: "/api/v1/targets", token: e.admin, body: `{"name":"web-01"}`, wantStatus: 409},
		{name: "too large", method: "POST", path: "/api/v1/targets", token: e.admin, body: big, wantStatus: 413},
		{name: "policy refuses", method: "POST", path: "/api/v1/requests", token: e.admin, body: `{"target":"web-01","ports":["22"],"source":"203.0.113.7","duration":"30m","reason":"r"}`, wantStatus: 403, wantRule: "22/tcp"},
		{name: "sso not configured", method: "GET", path: "/auth/login", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, e.srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantStatus, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type %q, want application/problem+json", ct)
			}
			var p map[string]any
			if err := json.Unmarshal(b, &p); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, b)
			}
			var we wire.Error
			json.Unmarshal(b, &we)
			if we.Type != "about:blank" || we.Title != http.StatusText(tt.wantStatus) || we.Status != tt.wantStatus {
				t.Errorf("type %q title %q status %d, want about:blank %q %d", we.Type, we.Title, we.Status, http.StatusText(tt.wantStatus), tt.wantStatus)
			}
			if we.Detail == "" || we.Error != we.Detail {
				t.Errorf("detail %q, error %q: want a detail, repeated in error", we.Detail, we.Error)
			}
			if id := resp.Header.Get("X-Request-Id"); id == "" || we.Instance != "urn:jitgate:request:"+id {
				t.Errorf("instance %q, want urn:jitgate:request:%s", we.Instance, id)
			}
			if we.Field != tt.wantField || we.Rule != tt.wantRule {
				t.Errorf("field %q rule %q, want %q %q", we.Field, we.Rule, tt.wantField, tt.wantRule)
			}
			if got := resp.Header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

// instanceMember is a problem's instance member, which names the one call.
var instanceMember = regexp.MustCompile(`"instance": "urn:jitgate:request:[0-9a-zA-Z_.-]+"`)

// sameProblem is a problem body without its instance, for tests that check
// two answers say the same.
func sameProblem(b []byte) string {
	return instanceMember.ReplaceAllString(string(b), `"instance": "…"`)
}
