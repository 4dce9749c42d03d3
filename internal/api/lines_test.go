package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestSnapshotAsLines: an agent that names wire.DesiredLinesType in its
// Accept gets its snapshot as lines, and they decode to exactly the state
// the JSON snapshot holds (host and gateway, IPv4 and IPv6, bastion
// entries, published mappings), but for the server's time; an agent that
// does not name it (an older one) gets JSON as before.
func TestSnapshotAsLines(t *testing.T) {
	ctx := context.Background()
	e, _ := gatewayEnv(t)
	e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, AllowedSources: []string{"198.51.100.0/24"}}, {Port: 3389, Access: "both"}}})
	if _, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01", Gateway: "gw-1", Addresses: []string{"10.0.0.5", "2001:db8:10::5"}}); err != nil {
		t.Fatal(err)
	}
	e.setPolicy(t, "db-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, Publish: true, AllowedSources: []string{"198.51.100.0/24", "2001:db8:99::/48"}}}})
	for _, r := range []struct{ target, source, port string }{
		{"web-01", "198.51.100.7", "22"}, {"web-01", "198.51.100.8", "3389"}, {"web-01", "198.51.100.0/28", "22"},
		{"db-01", "198.51.100.7", "22"}, {"db-01", "2001:db8:99::7", "22"},
	} {
		if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: r.target, Ports: []string{r.port}, Source: r.source,
			Duration: wire.Duration(time.Hour), Reason: "x"}); err != nil {
			t.Fatalf("CreateRequest %v: %v", r, err)
		}
	}
	get := func(t *testing.T, agent, accept string) (string, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/v1/agent/desired?after=0", nil)
		req.Header.Set("Authorization", "Bearer "+e.creds[agent])
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("answer %d, %v: %s", resp.StatusCode, err, body)
		}
		return resp.Header.Get("Content-Type"), body
	}
	for _, agent := range []string{"web-01", "gw-1"} {
		t.Run(agent, func(t *testing.T) {
			ct, body := get(t, agent, "application/json")
			if ct != "application/json" {
				t.Fatalf("asked for JSON, got %s", ct)
			}
			var want wire.DesiredState
			if err := json.Unmarshal(body, &want); err != nil {
				t.Fatal(err)
			}
			for _, accept := range []string{wire.DesiredLinesType + ", application/json", "application/json;q=0.5, " + wire.DesiredLinesType} {
				ct, body := get(t, agent, accept)
				if ct != wire.DesiredLinesType {
					t.Fatalf("Accept %q answered %s, want %s", accept, ct, wire.DesiredLinesType)
				}
				var got wire.DesiredState
				if err := wire.DecodeDesiredLines(bytes.NewReader(body), &got); err != nil {
					t.Fatalf("decoding the lines: %v\n%s", err, body)
				}
				if got.ServerTime.IsZero() {
					t.Error("the lines carry no server time")
				}
				got.ServerTime, want.ServerTime = time.Time{}, time.Time{}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("the lines decode to another state than the JSON (-json +lines):\n%s\n%s", diff, body)
				}
				if n := bytes.Count(body, []byte("\n")); n != len(want.Grants)+2 {
					t.Errorf("%d lines for %d grants, want a head, a line per grant and a tail:\n%s", n, len(want.Grants), body)
				}
			}
			if len(want.Grants) < 2 || (agent == "web-01" && len(want.Bastion) == 0) || (agent == "gw-1" && len(want.Published) == 0) {
				t.Errorf("the snapshot holds too little to prove anything: %+v", want)
			}
		})
	}
	// No Accept (curl, an older agent): JSON.
	if ct, _ := get(t, "web-01", ""); ct != "application/json" {
		t.Errorf("no Accept answered %s, want application/json", ct)
	}
}

// TestLinesFarDeadline: a grant whose deadline lies past the Unix
// nanoseconds' range (year 2262; a server run with a --max-duration of
// centuries allows one) is written in the lines clamped to that range, as
// the agent clamps every deadline it holds, not as an overflowed negative
// number: the agent decodes the snapshot (it refused it whole before, and
// with it every grant of the target, while JSON carried it), and the
// grant's deadline is JSON's, clamped.
func TestLinesFarDeadline(t *testing.T) {
	ctx := context.Background()
	const centuries = 250 * 365 * 24 * time.Hour
	e := newEnvWith(t, func(d *api.Deps) { d.Limits.MaxRuleDuration = centuries })
	agent := e.addTarget(t, "web-01", "198.51.100.10")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(centuries)}}})
	for i, d := range []time.Duration{time.Hour, centuries} {
		if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: fmt.Sprintf("198.51.100.%d", 7+i),
			Duration: wire.Duration(d), Reason: "x"}); err != nil {
			t.Fatalf("a request for %s: %v", d, err)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/v1/agent/desired?after=0", nil)
	req.Header.Set("Authorization", "Bearer "+e.creds["web-01"])
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var want wire.DesiredState
	err = json.NewDecoder(resp.Body).Decode(&want)
	resp.Body.Close()
	if err != nil || len(want.Grants) != 2 || want.Grants[1].ExpiresAt.Year() < 2270 {
		t.Fatalf("the JSON snapshot: %v, %+v; want two grants, one past 2270", err, want.Grants)
	}
	want.Grants[1].ExpiresAt = time.Unix(0, math.MaxInt64).UTC()
	got, err := agent.Desired(ctx, 0, 0) // asks for lines
	if err != nil {
		t.Fatalf("the agent's snapshot as lines: %v", err)
	}
	if diff := cmp.Diff(want.Grants, got.Grants); diff != "" {
		t.Errorf("the grants as lines (-json clamped +lines):\n%s", diff)
	}
}

// TestDesiredLinesIsTheAgentsOwn: the new content negotiation on the
// agent's endpoints (a poll, a report carrying its poll) gives nothing to a
// caller the JSON answer refuses: no credential, a user's (the admin's)
// token, a credential replaced by a new enrollment get 401 or 403 and no
// lines; another target's agent gets its own target's snapshot, without
// web-01's grant; web-01's agent gets web-01's.
func TestDesiredLinesIsTheAgentsOwn(t *testing.T) {
	e, _, _, _ := grantedWeb01(t)
	ctx := context.Background()
	old := e.creds["web-01"]
	e.addTarget(t, "web-02", "198.51.100.11")
	tc, err := e.c.ReissueEnrollToken(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	anon, _ := client.New(e.srv.URL, "")
	er, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		caller, token, target string // target: "" when refused
	}{
		{"no credential", "", ""},
		{"the admin's token", e.admin, ""},
		{"web-01's replaced credential", old, ""},
		{"web-02's agent", e.creds["web-02"], "web-02"},
		{"web-01's agent", er.Credential, "web-01"},
	} {
		for _, call := range []struct{ method, path, body string }{
			{http.MethodGet, "/api/v1/agent/desired?after=0", ""},
			{http.MethodPost, "/api/v1/agent/report?after=0", `{"revision":0}`},
		} {
			t.Run(c.caller+" "+call.method, func(t *testing.T) {
				req, _ := http.NewRequestWithContext(ctx, call.method, e.srv.URL+call.path, strings.NewReader(call.body))
				req.Header.Set("Accept", wire.DesiredLinesType+", application/json")
				if call.body != "" {
					req.Header.Set("Content-Type", "application/json")
				}
				if c.token != "" {
					req.Header.Set("Authorization", "Bearer "+c.token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if c.target == "" {
					if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden ||
						resp.Header.Get("Content-Type") == wire.DesiredLinesType || bytes.Contains(body, []byte("127.0.0.1")) {
						t.Fatalf("answered %d %s: %s; want 401 or 403 and no state", resp.StatusCode, resp.Header.Get("Content-Type"), body)
					}
					return
				}
				var ds wire.DesiredState
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != wire.DesiredLinesType {
					t.Fatalf("answered %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
				}
				if err := wire.DecodeDesiredLines(bytes.NewReader(body), &ds); err != nil {
					t.Fatal(err)
				}
				if ds.Target != c.target || (c.target == "web-01") != (len(ds.Grants) == 1) {
					t.Errorf("the state of %s with %d grants, want %s's:\n%s", ds.Target, len(ds.Grants), c.target, body)
				}
			})
		}
	}
}
