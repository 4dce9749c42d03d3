package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// clock is a settable time for Deps.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }
func newClock(t time.Time) *clock        { return &clock{t: t} }
func limitedEnv(t *testing.T, c *clock) *env {
	return newEnvWith(t, func(d *api.Deps) { d.FailedLogins, d.Now = api.LoginLimit{}, c.Now })
}

// failedLogins lists the login.failed events of method.
func (e *env) failedLogins(t *testing.T, method string) []audit.Event {
	t.Helper()
	evs, err := e.st.ListAudit(context.Background(), store.AuditFilter{Action: string(audit.LoginFailed)})
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, ev := range evs {
		if ev.Details["method"] == method {
			out = append(out, ev)
		}
	}
	return out
}

// TestValidCredentialsNotLockedOut: an address flooding bad bearer tokens
// (the first five get 401 and are audited, the rest 429 with Retry-After and
// no audit row each) does not lock out the valid credentials that come from
// the same address: an admin, a user, an agent polling and reporting, and an
// agent enrolling all get through. After the wait, the next bad token is
// audited again and says how many were refused in between.
func TestValidCredentialsNotLockedOut(t *testing.T) {
	ctx := context.Background()
	clk := newClock(time.Now())
	e := limitedEnv(t, clk)
	agent := e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy())
	userTok, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-02"})
	if err != nil {
		t.Fatal(err)
	}

	flood := func(n int) (statuses []int) {
		for i := range n {
			status, b := e.raw(t, http.MethodGet, "/api/v1/whoami", "jga_bogus"+strings.Repeat("x", i%40), "", nil)
			if status == http.StatusTooManyRequests && !strings.Contains(string(b), "too many failed logins") {
				t.Errorf("429 body %s, want it to name the failed-login limit", b)
			}
			statuses = append(statuses, status)
		}
		return statuses
	}
	got := flood(25)
	for i, status := range got {
		want := http.StatusUnauthorized
		if i >= 5 {
			want = http.StatusTooManyRequests
		}
		if status != want {
			t.Fatalf("bad token %d: %d, want %d (all: %v)", i+1, status, want, got)
		}
	}

	// Every valid credential from the flooding address still gets through.
	if w, err := e.c.Whoami(ctx); err != nil || w.Subject != "alice" {
		t.Errorf("admin while the address floods bad tokens: %+v, %v; want 200", w, err)
	}
	user := e.c.WithToken(userTok)
	if w, err := user.Whoami(ctx); err != nil || w.Subject != "bob" {
		t.Errorf("user while the address floods bad tokens: %+v, %v; want 200", w, err)
	}
	if _, err := agent.Desired(ctx, 0, 0); err != nil {
		t.Errorf("agent poll while the address floods bad tokens: %v (status %d); want 200", err, client.StatusOf(err))
	}
	if err := agent.Report(ctx, wire.AgentReport{Revision: 1}); err != nil {
		t.Errorf("agent report while the address floods bad tokens: %v (status %d); want 200", err, client.StatusOf(err))
	}
	anon, _ := client.New(e.srv.URL, "")
	if er, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-02", Version: "test"}); err != nil || er.Target != "web-02" {
		t.Errorf("enrollment while the address floods bad tokens: %+v, %v (status %d); want 200", er, err, client.StatusOf(err))
	}
	// And the flood still is limited afterwards: successes reset nothing.
	if got := flood(1); got[0] != http.StatusTooManyRequests {
		t.Errorf("bad token after the valid ones: %d, want 429", got[0])
	}

	if evs := e.failedLogins(t, "bearer"); len(evs) != 5 {
		t.Fatalf("%d login.failed events for 26 bad tokens, want 5 (none per 429)", len(evs))
	}
	clk.Advance(12 * time.Second) // one failure's worth comes back
	if got := flood(1); got[0] != http.StatusUnauthorized {
		t.Fatalf("bad token after 12 s: %d, want 401", got[0])
	}
	evs := e.failedLogins(t, "bearer")
	if len(evs) != 6 {
		t.Fatalf("%d login.failed events, want 6", len(evs))
	}
	last := evs[len(evs)-1]
	if n, _ := last.Details["refused_while_limited"].(float64); n != 21 {
		t.Errorf("the audited failure after the wait: details %v, want refused_while_limited 21", last.Details)
	}
}

// TestBadEnrollmentTokensAreLimited: enrollment with a wrong, used or
// expired enrollment token is a failed login: audited (never the token) and
// limited per source, 429 after five.
func TestBadEnrollmentTokensAreLimited(t *testing.T) {
	ctx := context.Background()
	clk := newClock(time.Now())
	e := limitedEnv(t, clk)
	anon, _ := client.New(e.srv.URL, "")
	tc, err := e.c.CreateTarget(ctx, wire.TargetCreate{Name: "web-01"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Enroll(ctx, tc.EnrollToken, wire.EnrollRequest{Hostname: "web-01"}); err != nil {
		t.Fatal(err)
	}
	bad := []string{tc.EnrollToken /* used */, "jge_" + strings.Repeat("A", 43), e.admin /* not an enrollment token */, "jge_x", "garbage"}
	for i, tok := range bad {
		_, err := anon.Enroll(ctx, tok, wire.EnrollRequest{Hostname: "web-01"})
		if client.StatusOf(err) != http.StatusUnauthorized {
			t.Fatalf("bad enrollment token %d: %v (status %d), want 401", i+1, err, client.StatusOf(err))
		}
	}
	for i := range 3 {
		_, err := anon.Enroll(ctx, "jge_"+strings.Repeat("B", 43), wire.EnrollRequest{Hostname: "web-01"})
		if client.StatusOf(err) != http.StatusTooManyRequests {
			t.Fatalf("bad enrollment token %d: %v (status %d), want 429", i+6, err, client.StatusOf(err))
		}
	}
	evs := e.failedLogins(t, "enroll")
	if len(evs) != 5 {
		t.Fatalf("%d login.failed events of method enroll, want 5", len(evs))
	}
	for _, ev := range evs {
		if ev.ClientAddr != "127.0.0.1" || !strings.Contains(ev.Reason, "enrollment token") || strings.Contains(ev.Reason, "jg") {
			t.Errorf("event %+v: want the client address and a reason naming the enrollment token, never the token", ev)
		}
	}
}

// TestFailedLoginsFromManySources: an outsider with many addresses (here
// 1,000 IPv6 /64s behind a trusted proxy) sends one bogus token from each.
// Every one is answered 401 (each source is within its own limit), but the
// audit trail does not grow by a row per source: failed logins are audited
// within an installation-wide budget, and the next one audited after it
// says how many went unaudited meanwhile.
func TestFailedLoginsFromManySources(t *testing.T) {
	clk := newClock(time.Now())
	e := newEnvWith(t, func(d *api.Deps) {
		d.FailedLogins, d.Now = api.LoginLimit{}, clk.Now
		d.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	const sources = 1000
	for i := range sources {
		from := fmt.Sprintf("2001:db8:%x:%x::1", i/256, i%256)
		if status, b := e.raw(t, http.MethodGet, "/api/v1/whoami", "jga_bogus", "", nil, "X-Forwarded-For", from); status != http.StatusUnauthorized {
			t.Fatalf("the first bogus token from %s: %d %s, want 401", from, status, b)
		}
	}
	audited := e.failedLogins(t, "bearer")
	if len(audited) > 200 {
		t.Fatalf("%d login.failed rows for %d sources failing once each, want at most 200", len(audited), sources)
	}
	clk.Advance(time.Minute)
	if status, _ := e.raw(t, http.MethodGet, "/api/v1/whoami", "jga_bogus", "", nil, "X-Forwarded-For", "2001:db8:ffff::1"); status != http.StatusUnauthorized {
		t.Fatalf("a bogus token a minute later: %d, want 401", status)
	}
	after := e.failedLogins(t, "bearer")
	if len(after) != len(audited)+1 {
		t.Fatalf("a failure a minute later was not audited: %d events, want %d", len(after), len(audited)+1)
	}
	if got := after[len(after)-1].Details["unaudited_elsewhere"]; got != float64(sources-len(audited)) {
		t.Errorf("the next audited failure says %v went unaudited, want %d", got, sources-len(audited))
	}
}
