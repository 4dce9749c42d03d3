package api_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestRequestIDReachesAudit: a sane X-Request-Id is kept, echoed and
// written into the details of the audit event the call caused; an unsafe
// one (spaces, too long) is replaced by a generated id, also echoed; a call
// without one gets a generated id.
func TestRequestIDReachesAudit(t *testing.T) {
	e := newEnv(t)
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	cases := []struct {
		name, target, sent string
		want               func(string) bool
	}{
		{"sane", "web-01", "req-42.abc_DEF", func(got string) bool { return got == "req-42.abc_DEF" }},
		{"unsafe", "web-02", "bad id\" injected", generated.MatchString},
		{"too long", "web-03", strings.Repeat("a", 65), generated.MatchString},
		{"none", "web-04", "", generated.MatchString},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/targets", strings.NewReader(`{"name":"`+c.target+`"}`))
			req.Header.Set("Authorization", "Bearer "+e.admin)
			req.Header.Set("Content-Type", "application/json")
			if c.sent != "" {
				req.Header.Set("X-Request-Id", c.sent)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got := resp.Header.Get("X-Request-Id")
			if resp.StatusCode != http.StatusCreated || !c.want(got) {
				t.Fatalf("status %d, X-Request-Id %q (sent %q)", resp.StatusCode, got, c.sent)
			}
			status, body := e.raw(t, "GET", "/api/v1/audit?target="+c.target, e.admin, "", nil)
			if status != http.StatusOK || !strings.Contains(string(body), `"http_request_id": "`+got+`"`) {
				t.Fatalf("audit of %s (%d) lacks http_request_id %q:\n%s", c.target, status, got, body)
			}
		})
	}
}

// TestHTTPMetrics: /metrics counts API calls by route pattern (never the
// raw path: two targets' names make one series), method and code, and
// shows jitgate_build_info and the store's group-commit batch sizes; the
// kernel's blocked counters are named as counters (_total).
func TestHTTPMetrics(t *testing.T) {
	e := newEnv(t)
	e.addTarget(t, "web-01")
	e.addTarget(t, "web-02")
	// web-01's agent reports an apply failure: counted, and seen.
	if status, b := e.raw(t, "POST", "/api/v1/agent/report", e.creds["web-01"], "application/json",
		strings.NewReader(`{"revision":0,"error":"nft: netlink: operation not permitted"}`)); status != http.StatusNoContent {
		t.Fatalf("report: %d %s", status, b)
	}
	for _, p := range []string{"/api/v1/targets/web-01", "/api/v1/targets/web-02", "/api/v1/targets/nope", "/no/such/path"} {
		e.raw(t, "GET", p, e.admin, "", nil)
	}
	e.raw(t, "BREW", "/api/v1/targets", e.admin, "", nil)
	status, b := e.raw(t, "GET", "/metrics", e.admin, "", nil)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	body := string(b)
	for _, want := range []string{
		`jitgate_http_requests_total{code="200",method="GET",route="GET /api/v1/targets/{name}"} 2`,
		`jitgate_http_requests_total{code="404",method="GET",route="GET /api/v1/targets/{name}"} 1`,
		`jitgate_http_requests_total{code="201",method="POST",route="POST /api/v1/targets"} 2`,
		`jitgate_http_requests_total{code="404",method="GET",route="/"} 1`,
		`method="other"`,
		`jitgate_http_request_duration_seconds_count{method="GET",route="GET /api/v1/targets/{name}"} 3`,
		`jitgate_build_info{commit=`,
		`jitgate_agent_apply_errors_total{target="web-01"} 1`,
		`# TYPE jitgate_agent_last_seen_timestamp_seconds gauge`,
		`jitgate_agent_last_seen_timestamp_seconds{target="web-01"}`,
		`# TYPE jitgate_store_write_batch_size histogram`,
		`jitgate_store_write_batch_size_bucket{le="1"} `,
		`jitgate_store_write_batch_size_count `,
		`# TYPE jitgate_store_sync_duration_seconds histogram`,
		`jitgate_store_sync_duration_seconds_bucket{le="0.001"} `,
		`jitgate_store_sync_duration_seconds_count `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, bad := range []string{"web-02\",method", `route="/api/v1/targets/web-01"`, "BREW"} {
		if strings.Contains(body, bad) {
			t.Errorf("/metrics has %s (unbounded label)", bad)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(body, "jitgate_"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestReadyz: /readyz answers 200 while the database answers and 503 once
// it does not (closed), without a token; /healthz stays 200 either way.
func TestReadyz(t *testing.T) {
	e := newEnv(t)
	if status, b := e.raw(t, "GET", "/readyz", "", "", nil); status != http.StatusOK {
		t.Fatalf("/readyz: %d %s", status, b)
	}
	e.st.Close()
	if status, b := e.raw(t, "GET", "/readyz", "", "", nil); status != http.StatusServiceUnavailable || !strings.Contains(string(b), "database") {
		t.Fatalf("/readyz with the database closed: %d %s", status, b)
	}
	if status, b := e.raw(t, "GET", "/healthz", "", "", nil); status != http.StatusOK {
		t.Fatalf("/healthz with the database closed: %d %s", status, b)
	}
}

// TestWhoamiHasServerVersion: whoami names the server's build.
func TestWhoamiHasServerVersion(t *testing.T) {
	e := newEnv(t)
	who, err := e.c.Whoami(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if who.Server == nil || who.Server.Version == "" || who.Server.Go == "" {
		t.Fatalf("whoami server = %+v", who.Server)
	}
}

// TestReissueEnrollToken: a new enrollment token for an existing target
// re-enrolls its host (the old credential stops once it is used), keeps the
// target, retires the earlier unused token, is audited, and is refused for
// an unknown target (404) and for a target behind a gateway (409).
func TestReissueEnrollToken(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	old := e.addTarget(t, "web-01")
	first, err := e.c.ReissueEnrollToken(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.c.ReissueEnrollToken(ctx, "web-01")
	if err != nil {
		t.Fatal(err)
	}
	if first.EnrollToken == "" || second.EnrollToken == first.EnrollToken || second.Target.Name != "web-01" || second.EnrollExpiresAt.IsZero() {
		t.Fatalf("reissued: %+v then %+v", first, second)
	}
	anon, _ := client.New(e.srv.URL, "")
	if _, err := anon.Enroll(ctx, first.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"}); err == nil {
		t.Fatal("the earlier unused token still enrolls")
	}
	// The old credential works until the new token is used.
	if _, err := old.Desired(ctx, 0, 0); err != nil {
		t.Fatalf("old credential before re-enrolling: %v", err)
	}
	er, err := anon.Enroll(ctx, second.EnrollToken, wire.EnrollRequest{Hostname: "web-01", Version: "test"})
	if err != nil || er.Target != "web-01" {
		t.Fatalf("re-enroll: %+v, %v", er, err)
	}
	if _, err := old.Desired(ctx, 0, 0); err == nil {
		t.Fatal("the old credential works after re-enrolling")
	}
	if _, err := anon.WithToken(er.Credential).Desired(ctx, 0, 0); err != nil {
		t.Fatalf("new credential: %v", err)
	}
	status, body := e.raw(t, "GET", "/api/v1/audit?target=web-01", e.admin, "", nil)
	if status != http.StatusOK || strings.Count(string(body), `"target.enroll_token_issued"`) != 2 {
		t.Fatalf("audit: %d\n%s", status, body)
	}
	if status, b := e.raw(t, "POST", "/api/v1/targets/nope/enroll-token", e.admin, "", nil); status != http.StatusNotFound {
		t.Errorf("unknown target: %d %s", status, b)
	}
	g, _ := gatewayEnv(t)
	if _, err := g.c.CreateTarget(ctx, wire.TargetCreate{Name: "db-01", Gateway: "gw-1", Addresses: []string{"10.0.0.5"}}); err != nil {
		t.Fatal(err)
	}
	if status, b := g.raw(t, "POST", "/api/v1/targets/db-01/enroll-token", g.admin, "", nil); status != http.StatusConflict || !strings.Contains(string(b), "gateway") {
		t.Errorf("target behind a gateway: %d %s", status, b)
	}
}
