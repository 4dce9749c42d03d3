package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestDesiredVaryAccept: every answer that carries an agent's desired state
// (GET /api/v1/agent/desired, and a report that carries its next poll) says
// Vary: Accept, whatever format it came in: the format follows the Accept
// (a snapshot as lines or JSON), so a cache between agent and server must
// not hand an answer to a request that asked for another format. Before,
// no answer said so.
func TestDesiredVaryAccept(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", sshPolicy())
	e.requestWeb01(t, "198.51.100.7", "vary")
	ds, err := agent.Desired(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	rev := strconv.FormatInt(ds.Revision, 10)
	report, err := json.Marshal(wire.AgentReport{Revision: ds.Revision})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, method, path, accept string
		body                       []byte
		wantType                   string
	}{
		{"snapshot as lines", http.MethodGet, "/api/v1/agent/desired?after=0", wire.DesiredLinesType + ", application/json", nil, wire.DesiredLinesType},
		{"snapshot as JSON", http.MethodGet, "/api/v1/agent/desired?after=0", "application/json", nil, "application/json"},
		{"no Accept", http.MethodGet, "/api/v1/agent/desired?after=0", "", nil, "application/json"},
		{"delta", http.MethodGet, "/api/v1/agent/desired?after=0&since=" + rev, wire.DesiredLinesType + ", application/json", nil, "application/json"},
		{"report with its next poll", http.MethodPost, "/api/v1/agent/report?after=0", wire.DesiredLinesType + ", application/json", report, wire.DesiredLinesType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(ctx, tc.method, e.srv.URL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+e.creds["web-01"])
			if tc.body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			if tc.accept != "" {
				req.Header.Set("Accept", tc.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answer %d: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.wantType {
				t.Fatalf("Content-Type %q, want %q (the case does not test what it names)", ct, tc.wantType)
			}
			if vary := resp.Header.Values("Vary"); len(vary) != 1 || vary[0] != "Accept" {
				t.Errorf("Vary %q, want Accept", vary)
			}
		})
	}
}
