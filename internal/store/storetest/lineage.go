package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/store"
)

// token creates a token and fails the test on error.
func token(t *testing.T, s *store.Store, spec store.TokenSpec, now time.Time) (string, store.TokenInfo) {
	t.Helper()
	secret, info, err := s.CreateToken(t.Context(), alice, spec, now)
	if err != nil {
		t.Fatalf("CreateToken(%+v): %v", spec, err)
	}
	return secret, info
}

func wantAuth(t *testing.T, s *store.Store, what, secret string, now time.Time, ok bool) {
	t.Helper()
	_, err := s.Authenticate(t.Context(), secret, now)
	switch {
	case ok && err != nil:
		t.Errorf("%s at %s: %v, want it to work", what, now.Sub(t0), err)
	case !ok:
		wantErrIs(t, what+" at "+now.Sub(t0).String(), err, store.ErrUnauthorized)
	}
}

func wantExpiry(t *testing.T, what string, info store.TokenInfo, want time.Time) {
	t.Helper()
	if info.ExpiresAt == nil || !info.ExpiresAt.Equal(want) {
		t.Errorf("%s expires at %v, want %v", what, info.ExpiresAt, want)
	}
}

// testTokenLineage: a token made with another token of the same person
// never outlives it (issue 9, item 6a), whatever TTL it asks for, and
// cannot be made once its parent has ended.
func testTokenLineage(t *testing.T, s *store.Store) {
	ctx := t.Context()
	admin, err := s.CreateAdminToken(ctx, alice, "alice", t0)
	if err != nil {
		t.Fatal(err)
	}
	ap, _ := s.Authenticate(ctx, admin, t0)
	sessSecret, sess := token(t, s, store.TokenSpec{Kind: store.KindSession, Subject: "alice", Groups: []string{"ops"}, TTL: time.Hour}, t0)
	if sess.Parent != "" {
		t.Errorf("a root token has parent %q", sess.Parent)
	}

	// Longer than the parent: capped at the parent's expiry, groups and all.
	longSecret, long := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", Name: "laptop", Groups: []string{"ops"},
		TTL: 720 * time.Hour, Parent: sess.ID}, at(10*time.Minute))
	wantExpiry(t, "a 720h token made with a 1h session", long, at(time.Hour))
	if long.Parent != sess.ID {
		t.Errorf("parent = %q, want %q", long.Parent, sess.ID)
	}
	wantAuth(t, s, "the derived token", longSecret, at(time.Hour-time.Millisecond), true)
	wantAuth(t, s, "the derived token", longSecret, at(time.Hour), false)
	wantAuth(t, s, "the session", sessSecret, at(time.Hour), false)

	// Shorter than the parent: kept.
	_, short := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: 10 * time.Minute, Parent: sess.ID}, t0)
	wantExpiry(t, "a 10m token made with a 1h session", short, at(10*time.Minute))

	// Transitively: a console session made with the derived token.
	_, grand := token(t, s, store.TokenSpec{Kind: store.KindSession, Subject: "alice", TTL: 12 * time.Hour, Parent: long.ID}, at(20*time.Minute))
	wantExpiry(t, "a grandchild of a 1h session", grand, at(time.Hour))

	// A parent that never expires (the first admin token) caps nothing.
	_, fromAdmin := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: 2 * time.Hour, Parent: ap.TokenID}, t0)
	wantExpiry(t, "a token made with the admin token", fromAdmin, at(2*time.Hour))

	// A parent that has expired or is unknown cannot make children.
	_, _, err = s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Hour, Parent: sess.ID}, at(time.Hour))
	wantErrIs(t, "a token made with an expired session", err, store.ErrUnauthorized)
	_, _, err = s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Hour, Parent: "s-000000000000"}, t0)
	wantErrIs(t, "a token made with an unknown token", err, store.ErrUnauthorized)
	// A derived token speaks for the same person.
	if _, _, err := s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour, Parent: sess.ID}, t0); err == nil {
		t.Error("a token of bob was derived from a session of alice")
	}

	ts, err := s.ListTokens(ctx, &store.Owner{Name: "alice"}, at(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	parents := map[string]string{}
	for _, tok := range ts {
		parents[tok.ID] = tok.Parent
	}
	want := map[string]string{ap.TokenID: "", sess.ID: "", long.ID: sess.ID, grand.ID: long.ID, fromAdmin.ID: ap.TokenID}
	if diff := cmp.Diff(want, parents); diff != "" {
		t.Errorf("listed parents (-want +got):\n%s", diff)
	}
	evs, err := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.TokenCreated)})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range evs {
		if e.Details["token_id"] == long.ID {
			found = e.Details["parent"] == sess.ID && e.Details["expires_at"] == at(time.Hour).Format(time.RFC3339Nano)
		}
	}
	if !found {
		t.Errorf("token.created of the derived token does not name its parent and capped expiry: %+v", evs)
	}
}

// testTokenCascade: revoking a token revokes every token derived from it,
// transitively, in the same transaction, each audited (issue 9, item 6b);
// its parent, siblings and other people's tokens stay.
func testTokenCascade(t *testing.T, s *store.Store) {
	ctx := t.Context()
	rootSecret, root := token(t, s, store.TokenSpec{Kind: store.KindSession, Subject: "alice", TTL: time.Hour}, t0)
	childSecret, child := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Hour, Parent: root.ID}, t0)
	grandSecret, grand := token(t, s, store.TokenSpec{Kind: store.KindSession, Subject: "alice", TTL: time.Hour, Parent: child.ID}, t0)
	great, greatInfo := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Hour, Parent: grand.ID}, t0)
	sibSecret, _ := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Hour}, t0)
	otherRoot, other := token(t, s, store.TokenSpec{Kind: store.KindSession, Subject: "bob", TTL: time.Hour}, t0)
	otherChild, _ := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour, Parent: other.ID}, t0)

	// Revoking a middle token ends its descendants, not its ancestors.
	derived, err := s.RevokeToken(ctx, carol, grand.ID, at(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(derived, []string{greatInfo.ID}) {
		t.Errorf("revoking the grandchild revoked %v, want [%s]", derived, greatInfo.ID)
	}
	wantAuth(t, s, "the revoked grandchild", grandSecret, at(time.Minute), false)
	wantAuth(t, s, "the great-grandchild", great, at(time.Minute), false)
	wantAuth(t, s, "the child", childSecret, at(time.Minute), true)

	// A revoked token can no longer make children.
	_, _, err = s.CreateToken(ctx, alice, store.TokenSpec{Kind: store.KindPersonal, Subject: "alice", TTL: time.Hour, Parent: grand.ID}, at(time.Minute))
	wantErrIs(t, "a token made with a revoked token", err, store.ErrUnauthorized)

	grand2Secret, grand2 := token(t, s, store.TokenSpec{Kind: store.KindSession, Subject: "alice", TTL: time.Hour, Parent: child.ID}, at(time.Minute))
	derived, err = s.RevokeToken(ctx, carol, root.ID, at(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{child.ID, grand2.ID}
	slices.Sort(want)
	if !slices.Equal(derived, want) {
		t.Errorf("revoking the root revoked %v, want %v", derived, want)
	}
	for what, secret := range map[string]string{"the root": rootSecret, "the child": childSecret, "the new grandchild": grand2Secret} {
		wantAuth(t, s, what, secret, at(2*time.Minute), false)
	}
	for what, secret := range map[string]string{"a sibling root token": sibSecret, "bob's session": otherRoot, "bob's derived token": otherChild} {
		wantAuth(t, s, what, secret, at(2*time.Minute), true)
	}

	evs, err := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.TokenRevoked)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		line := e.Details["token_id"].(string)
		if w, ok := e.Details["revoked_with"].(string); ok {
			line += " with " + w
		}
		got = append(got, e.Actor+" "+line)
	}
	wantLines := []string{"carol " + grand.ID, "carol " + greatInfo.ID + " with " + grand.ID, "carol " + root.ID}
	for _, id := range want {
		wantLines = append(wantLines, "carol "+id+" with "+root.ID)
	}
	if diff := cmp.Diff(wantLines, got); diff != "" {
		t.Errorf("token.revoked events (-want +got):\n%s", diff)
	}
}

// testTokenOwners: a token belongs to a user or a service by kind and name
// (issue 9, item 6d): listing one never shows the other's of the same name,
// and no user or service name can carry another kind's prefix.
func testTokenOwners(t *testing.T, s *store.Store) {
	ctx := t.Context()
	_, user := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "ci", TTL: time.Hour}, t0)
	_, svc := token(t, s, store.TokenSpec{Kind: store.KindService, Subject: "ci", TTL: time.Hour}, t0)
	for _, tc := range []struct {
		owner store.Owner
		want  string
	}{{store.Owner{Name: "ci"}, user.ID}, {store.Owner{Service: true, Name: "ci"}, svc.ID}} {
		ts, err := s.ListTokens(ctx, &tc.owner, t0)
		if err != nil || len(ts) != 1 || ts[0].ID != tc.want {
			t.Errorf("ListTokens(%+v) = %+v, %v; want only %s", tc.owner, ts, err, tc.want)
		}
		if ts[0].Owner() != tc.owner {
			t.Errorf("owner of %s = %+v, want %+v", ts[0].ID, ts[0].Owner(), tc.owner)
		}
	}
	if ts, err := s.ListTokens(ctx, nil, t0); err != nil || len(ts) != 2 {
		t.Errorf("ListTokens(everyone) = %+v, %v; want both", ts, err)
	}
	for _, spec := range []store.TokenSpec{
		{Kind: store.KindPersonal, Subject: "service:ci", TTL: time.Hour},
		{Kind: store.KindSession, Subject: "user:ci", TTL: time.Hour},
		{Kind: store.KindService, Subject: "user:alice", TTL: time.Hour},
	} {
		if _, _, err := s.CreateToken(ctx, alice, spec, t0); err == nil {
			t.Errorf("CreateToken(%s %q) succeeded", spec.Kind, spec.Subject)
		}
	}
	if _, err := s.CreateAdminToken(ctx, alice, "service:ci", t0); err == nil {
		t.Error(`CreateAdminToken("service:ci") succeeded`)
	}

	// A personal token issued in another user's name is audited as
	// impersonation, not as an ordinary creation.
	_, imp := token(t, s, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour, Impersonation: true, CreatedWith: "a-000000000000"}, t0)
	evs, err := s.ListAudit(ctx, store.AuditFilter{Action: string(audit.TokenImpersonation)})
	if err != nil || len(evs) != 1 || evs[0].Details["token_id"] != imp.ID || evs[0].Details["subject"] != "bob" ||
		evs[0].Details["created_with"] != "a-000000000000" || evs[0].Actor != alice.Name {
		t.Errorf("token.impersonation events = %+v, %v", evs, err)
	}
}
