package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
)

// testBreakGlass: an online break-glass is granted at once, raises one open
// alert until reviewed (a second review conflicts); an offline use is
// recorded once however often it is reported, marks the token used and is
// then listed as revoked for the token's other targets; a revocation is
// listed for every target of the token.
func testBreakGlass(t *testing.T, s *store.Store) {
	ctx := t.Context()
	newTarget(t, s, "web-1", t0)
	newTarget(t, s, "web-2", t0)
	r, a, err := s.OpenBreakGlass(ctx, alice, "web-1", policy.Request{Ports: []policy.Port{tcp(22)}, Source: pfx("198.51.100.7/32"),
		Duration: 30 * time.Minute, Reason: "INC-1"}, policy.DefaultLimits(), at(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r.State != access.Pending || r.ApprovalsRequired != 0 || a.Kind != store.BreakGlassOnline || a.RequestID != r.ID {
		t.Fatalf("break-glass request %+v, alert %+v", r, a)
	}
	if _, _, err := s.OpenBreakGlass(ctx, alice, "web-1", policy.Request{Ports: []policy.Port{tcp(22)}, Source: pfx("203.0.113.7/32"),
		Duration: 30 * time.Minute, Reason: "INC-1"}, policy.DefaultLimits(), at(time.Minute)); err == nil {
		t.Fatal("a source outside the rule was let in by break-glass")
	}
	if open, err := s.BreakGlassAlerts(ctx, true, ""); err != nil || len(open) != 1 {
		t.Fatalf("open alerts %+v, %v", open, err)
	}
	if _, err := s.ReviewBreakGlassAlert(ctx, bob, a.ID, "ok", at(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReviewBreakGlassAlert(ctx, bob, a.ID, "again", at(3*time.Minute)); err == nil {
		t.Error("a reviewed alert was reviewed again")
	}
	if open, _ := s.BreakGlassAlerts(ctx, false, "web-2"); len(open) != 0 {
		t.Errorf("web-2's alerts: %+v, want none (the one raised is web-1's)", open)
	}
	if open, _ := s.BreakGlassAlerts(ctx, true, ""); len(open) != 0 {
		t.Errorf("still open: %+v", open)
	}

	tok := access.Token{ID: "bgt-st1", Targets: []string{"web-1", "web-2"}, Ports: []string{"22/tcp"}, MaxDuration: time.Hour,
		IssuedAt: at(0), ExpiresAt: at(48 * time.Hour), IssuedBy: "alice"}
	if err := s.IssueBreakGlassToken(ctx, alice, tok); err != nil {
		t.Fatal(err)
	}
	use := store.BreakGlassUse{TokenID: tok.ID, Source: "198.51.100.7/32", Port: 22, Protocol: "tcp", Duration: 10 * time.Minute, UsedAt: at(time.Hour), Verified: true}
	for i := range 2 {
		if _, fresh, err := s.RecordBreakGlassUse(ctx, "web-1", use, at(2*time.Hour)); err != nil || fresh != (i == 0) {
			t.Fatalf("report %d: fresh %v, %v", i, fresh, err)
		}
	}
	if got, _ := s.RevokedBreakGlassTokens(ctx, "web-2", at(3*time.Hour)); !slices.Equal(got, []string{tok.ID}) {
		t.Errorf("web-2 after the use on web-1: %v, want the token", got)
	}
	if got, _ := s.RevokedBreakGlassTokens(ctx, "web-1", at(119*time.Minute)); len(got) != 0 {
		t.Errorf("web-1, where it was used, before the use could have ended: %v, want none (listing it would close the opening)", got)
	}
	// Once the use must have ended (used at +1h, at most 1h), the target it
	// was used on is sent it as revoked too: a host whose log lost the use
	// (restored from a snapshot taken before it, reinstalled) must not
	// accept the token a second time.
	if got, _ := s.RevokedBreakGlassTokens(ctx, "web-1", at(2*time.Hour)); !slices.Equal(got, []string{tok.ID}) {
		t.Errorf("web-1, where it was used, after the use ended: %v, want the token (a host that lost its log could use it again)", got)
	}
	// A second use on web-1 (its host lost its log: restored from before
	// the first, cut off since) is another access: recorded, alerted, not
	// swallowed as a retry of the first; its own retries are.
	again := use
	again.UsedAt = at(150 * time.Minute)
	for i := range 2 {
		if _, fresh, err := s.RecordBreakGlassUse(ctx, "web-1", again, at(151*time.Minute)); err != nil || fresh != (i == 0) {
			t.Fatalf("second use on web-1, report %d: fresh %v, %v; want recorded once", i, fresh, err)
		}
	}
	if open, _ := s.BreakGlassAlerts(ctx, true, "web-1"); len(open) != 2 {
		t.Errorf("web-1's open alerts after two uses: %d, want 2", len(open))
	}
	if _, err := s.RevokeBreakGlassToken(ctx, alice, tok.ID, at(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.RevokedBreakGlassTokens(ctx, "web-1", at(3*time.Hour)); !slices.Equal(got, []string{tok.ID}) {
		t.Errorf("web-1 after the revocation: %v", got)
	}
	if got, _ := s.RevokedBreakGlassTokens(ctx, "web-1", at(49*time.Hour)); len(got) != 0 {
		t.Errorf("an expired token is still listed: %v", got)
	}
}
