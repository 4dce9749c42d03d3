package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/authz"
)

// TestCreateServerTimingOnlyOnCreated: a create that is refused carries no
// Server-Timing, whoever asks and whatever refused it, so the header cannot
// tell a caller what its answer does not (whether a target it may not see
// exists, or how far the create got before a rule refused it): the timing
// says only how long the caller's own created request took to commit.
// Refused answers share a status where the caller may not tell the cases
// apart (an unknown target and one outside the caller's scope).
func TestCreateServerTimingOnlyOnCreated(t *testing.T) {
	e := newEnv(t)
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	e.addTarget(t, "web-02")
	e.setPolicy(t, "web-02", sshPolicy())
	reader := e.userToken(t, "rita", authz.Reader, "target:web-01")
	requester := e.userToken(t, "rob", authz.Requester, "target:web-01")
	body := func(target, port string) string {
		return `{"target":"` + target + `","ports":["` + port + `"],"duration":"1h","reason":"x","source":"198.51.100.30"}`
	}
	for _, tc := range []struct {
		name, token, body string
		want              int
	}{
		{"no credential", "", body("web-01", "22"), http.StatusUnauthorized},
		{"a wrong credential", "jgnotatoken", body("web-01", "22"), http.StatusUnauthorized},
		{"a reader", reader, body("web-01", "22"), http.StatusForbidden},
		{"a target outside the requester's scope", requester, body("web-02", "22"), http.StatusForbidden},
		{"a target that does not exist", requester, body("db-09", "22"), http.StatusForbidden},
		{"a port the policy does not name", e.admin, body("web-01", "80"), 0},
		{"a body that does not parse", e.admin, `{"target":`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/requests?wait=0s", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 || tc.want != 0 && resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (a refusal)", resp.StatusCode, tc.want)
			}
			if st := resp.Header.Values("Server-Timing"); len(st) != 0 {
				t.Errorf("a refused create (%d) carries Server-Timing %q", resp.StatusCode, st)
			}
		})
	}
}
