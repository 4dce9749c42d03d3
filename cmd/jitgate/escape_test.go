package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// hostile is text an old row or an agent's report may still hold: a
// terminal title change, a bell, a colour, a C1 CSI, a bidi override, and a
// newline that would forge a table row.
const hostile = "x\x1b]0;owned\a\x1b[31mred\u009b2J\u202e\nr-forged  web-99  admin"

// TestCLIEscapesServerText: whatever the server answers, no raw control
// character reaches the terminal and no table line is forged; -o json stays
// valid JSON with the same data.
func TestCLIEscapesServerText(t *testing.T) {
	now := time.Now().UTC()
	req := wire.Request{ID: "r-1", Target: "web-01", Requester: "user:" + hostile, Source: "198.51.100.7/32",
		Ports: []string{"22/tcp"}, Reason: hostile, State: "revoked", Message: "revoked by admin: " + hostile,
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), Version: 3}
	audit := []wire.AuditEvent{{ID: 1, At: now, Actor: hostile, Action: "request.revoked", Target: "web-01", Reason: hostile}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/requests":
			json.NewEncoder(w).Encode([]wire.Request{req})
		case "/api/v1/requests/r-1":
			json.NewEncoder(w).Encode(req)
		case "/api/v1/audit":
			json.NewEncoder(w).Encode(audit)
		default:
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(wire.Error{Error: "no such thing: " + hostile})
		}
	}))
	defer srv.Close()
	c := newCLI(t, testServer{url: srv.URL, token: "jgt_test"})

	check := func(name string, out string, rows int) {
		t.Helper()
		for _, r := range out {
			if r != '\n' && r != '\t' && (r < 0x20 || r >= 0x7f && r <= 0x9f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069) {
				t.Errorf("%s: a raw %U reached the terminal: %q", name, r, out)
				break
			}
		}
		if strings.Contains(out, "\nr-forged") {
			t.Errorf("%s: a newline in a value forged a line: %q", name, out)
		}
		if rows > 0 {
			if n := strings.Count(strings.TrimRight(out, "\n"), "\n") + 1; n != rows {
				t.Errorf("%s: %d lines, want %d: %q", name, n, rows, out)
			}
		}
		if !strings.Contains(out, `\u001b]0;owned\u0007`) {
			t.Errorf("%s: the escape sequence is not shown escaped: %q", name, out)
		}
	}
	check("requests", c.ok("requests").stdout, 2)
	check("requests ID", c.ok("requests", "r-1").stdout, 0)
	check("audit", c.ok("audit").stdout, 2)
	r := c.run("requests", "r-2")
	if r.code != exitError {
		t.Errorf("requests r-2: exit %d, want %d", r.code, exitError)
	}
	check("error line", r.stderr, 1)

	out := c.ok("requests", "r-1", "-o", "json").stdout
	var got wire.Request
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("-o json is not JSON any more: %v\n%s", err, out)
	}
	if got.Reason != hostile {
		t.Errorf("-o json reason = %q, want %q", got.Reason, hostile)
	}
	check("json", out, 0)
	check("--jq raw string", c.ok("requests", "r-1", "--jq", ".reason").stdout, 1)
	// YAML escapes in its own syntax (\e, \a): inert too.
	yml := c.ok("requests", "r-1", "-o", "yaml").stdout
	check("-o yaml", strings.ReplaceAll(yml, `\e]0;owned\a`, `\u001b]0;owned\u0007`), 0)
	// Colour adds only our own sequences around whole lines.
	c.env["CLICOLOR_FORCE"] = "1"
	colored := c.ok("requests").stdout
	for _, sgr := range []string{sgrReset, sgrGreen, sgrYellow, sgrRed, sgrDim} {
		colored = strings.ReplaceAll(colored, sgr, "")
	}
	check("coloured table", colored, 2)
}
