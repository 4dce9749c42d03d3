package api_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/oidc/oidctest"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// mallory's user name at the identity provider reads like a service
// principal (with --oidc-username-claim preferred_username).
var mallory = oidctest.User{Name: "service:deploy", Password: "tr0ub4dor", Email: "mallory@example.com"}

func wantStatus(t *testing.T, what string, err error, status int) {
	t.Helper()
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != status {
		t.Errorf("%s: error %v, want HTTP %d", what, err, status)
	}
}

// TestTokenLineage (issue 9, item 6a and 6b): a token made with a token
// never outlives it — a longer TTL is capped and the answer says so — and
// revoking a token ends every token made with it, transitively.
func TestTokenLineage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	laptop, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: "laptop", TTL: wire.Duration(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if laptop.Note != "" || laptop.Token.ExpiresAt == nil || time.Until(*laptop.Token.ExpiresAt) < 119*time.Minute {
		t.Fatalf("a 2h token made with the never-expiring admin token: %+v", laptop.Token)
	}
	lc := e.c.WithToken(laptop.Secret)
	child, err := lc.CreateToken(ctx, wire.TokenCreate{Name: "ci", TTL: wire.Duration(720 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if child.Token.ExpiresAt == nil || !child.Token.ExpiresAt.Equal(*laptop.Token.ExpiresAt) {
		t.Errorf("a 720h token made with a 2h token expires at %v, want %v (its parent's expiry)", child.Token.ExpiresAt, laptop.Token.ExpiresAt)
	}
	if child.Token.Parent != laptop.Token.ID || !strings.Contains(child.Note, "never outlives") {
		t.Errorf("capped token: parent %q, note %q; want parent %s and a note that says why", child.Token.Parent, child.Note, laptop.Token.ID)
	}
	grand, err := e.c.WithToken(child.Secret).CreateToken(ctx, wire.TokenCreate{Name: "grandchild", TTL: wire.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if grand.Note != "" {
		t.Errorf("a 1h token of a 2h parent got note %q", grand.Note)
	}

	// Revoking the laptop token (as its owner would) ends both.
	if err := e.c.RevokeToken(ctx, laptop.Token.ID); err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{"the revoked token": laptop.Secret, "its child": child.Secret, "its grandchild": grand.Secret} {
		_, err := e.c.WithToken(secret).Whoami(ctx)
		wantStatus(t, what+" after revoking the parent", err, http.StatusUnauthorized)
	}
	if _, err := e.c.Whoami(ctx); err != nil {
		t.Errorf("the admin token that made the parent: %v", err)
	}
	ts, err := e.c.Tokens(ctx, true)
	if err != nil || len(ts) != 1 || ts[0].Kind != store.KindAdmin {
		t.Errorf("tokens left: %+v, %v; want only the admin token", ts, err)
	}
	evs, err := e.c.Audit(ctx, client.AuditFilter{Action: string(audit.TokenRevoked)})
	if err != nil || len(evs) != 3 {
		t.Fatalf("token.revoked events: %+v, %v; want 3 (one per token)", evs, err)
	}
}

// ssoSession signs user in through the browser flow and returns the session
// token (the cookie's value) and its principal.
func ssoSession(t *testing.T, e *ssoEnv, u oidctest.User) (string, store.Principal) {
	t.Helper()
	c := browser(t, nil)
	page, err := c.Get(e.url + "/auth/login?return=/api/v1/whoami")
	if err != nil {
		t.Fatal(err)
	}
	resp := e.op.SubmitLogin(t, c, page, u.Name, u.Password)
	if b := body(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("login of %s: %s %s", u.Name, resp.Status, b)
	}
	base, _ := url.Parse(e.url)
	for _, ck := range c.Jar.(*cookiejar.Jar).Cookies(base) {
		if ck.Name == "jitgate_session" {
			p, err := e.st.Authenticate(context.Background(), ck.Value, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return ck.Value, p
		}
	}
	t.Fatal("no session cookie after login")
	return "", store.Principal{}
}

// TestSSOTokenGroupsEndWithSession (issue 9, item 6c): a personal token made
// with a single sign-on session carries the session's IdP groups, so it
// must not keep them (nor anything else) past the session's life: it is
// capped at the session's expiry, and ends when the session is revoked.
func TestSSOTokenGroupsEndWithSession(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil, false)
	ctx := context.Background()
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "group:ops", Role: authz.Requester, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	session, sp := ssoSession(t, e, carol)
	sinfo, err := e.st.GetToken(ctx, sp.TokenID, time.Now())
	if err != nil || sinfo.ExpiresAt == nil {
		t.Fatalf("session %+v, %v", sinfo, err)
	}
	c, _ := client.New(e.url, session)
	tok, err := c.CreateToken(ctx, wire.TokenCreate{Name: "laptop", TTL: wire.Duration(720 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token.ExpiresAt == nil || tok.Token.ExpiresAt.After(*sinfo.ExpiresAt) || tok.Note == "" {
		t.Fatalf("a 720h token made with a session ending at %v: expires %v, note %q", sinfo.ExpiresAt, tok.Token.ExpiresAt, tok.Note)
	}
	who, err := c.WithToken(tok.Secret).Whoami(ctx)
	if err != nil || !slices.Contains(who.Grants, wire.Grant{Role: "requester", Scope: "*"}) {
		t.Fatalf("the token's grants while the session lives: %+v, %v", who, err)
	}
	// The session's life ends: so does the token, with its groups.
	if p, err := e.st.Authenticate(ctx, tok.Secret, *sinfo.ExpiresAt); err == nil {
		t.Errorf("the token still works, with groups %v, when the session has expired", p.Groups)
	}
	// The person signs out (jitgate logout revokes the session): the token
	// made with it ends too.
	if err := c.RevokeToken(ctx, sp.TokenID); err != nil {
		t.Fatal(err)
	}
	_, err = c.WithToken(tok.Secret).Whoami(ctx)
	wantStatus(t, "the token after its session was revoked", err, http.StatusUnauthorized)
}

// TestUserNamesCannotPassForServices (issue 9, item 6d): a user named like a
// service principal cannot exist — not through single sign-on, an admin's
// --user token or a binding — and "my tokens" compares kind and name: a
// service does not see, nor revoke, the tokens of a user of the same name.
func TestUserNamesCannotPassForServices(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: "x", TTL: wire.Duration(time.Hour), User: "service:deploy"})
	wantStatus(t, "a --user token for service:deploy", err, http.StatusUnprocessableEntity)
	_, err = e.c.Bind(ctx, wire.Binding{Principal: "user:service:deploy", Role: "admin", Scope: "*"})
	wantStatus(t, "a binding of user:service:deploy", err, http.StatusUnprocessableEntity)
	_, err = e.c.CreateToken(ctx, wire.TokenCreate{Name: "x", TTL: wire.Duration(time.Hour), Service: "user:alice"})
	wantStatus(t, "a service token for user:alice", err, http.StatusUnprocessableEntity)

	// A user "deploy" and a service "deploy".
	user, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: "bob's", TTL: wire.Duration(time.Hour), User: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := e.c.CreateToken(ctx, wire.TokenCreate{Name: "pipeline", TTL: wire.Duration(time.Hour), Service: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		who, secret, want string
	}{{"the service deploy", svc.Secret, svc.Token.ID}, {"the user deploy", user.Secret, user.Token.ID}} {
		ts, err := e.c.WithToken(tc.secret).Tokens(ctx, false)
		if err != nil || len(ts) != 1 || ts[0].ID != tc.want {
			t.Errorf("%s lists %+v, %v; want only its own token %s", tc.who, ts, err, tc.want)
		}
	}
	err = e.c.WithToken(svc.Secret).RevokeToken(ctx, user.Token.ID)
	wantStatus(t, "the service revoking the user's token", err, http.StatusForbidden)
	err = e.c.WithToken(user.Secret).RevokeToken(ctx, svc.Token.ID)
	wantStatus(t, "the user revoking the service's token", err, http.StatusForbidden)
}

// TestSSOUserNamedLikeAService (issue 9, item 6d): an ID token whose user
// name reads as another kind of principal is refused at login, audited.
func TestSSOUserNamedLikeAService(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(c *oidc.Config) { c.UsernameClaim = "preferred_username" }, false)
	c := browser(t, nil)
	page, err := c.Get(e.url + "/auth/login")
	if err != nil {
		t.Fatal(err)
	}
	resp := e.op.SubmitLogin(t, c, page, mallory.Name, mallory.Password)
	if b := body(t, resp); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "kind prefix") {
		t.Errorf("login as %q: %s %s; want 401 naming the kind prefix", mallory.Name, resp.Status, b)
	}
	if n, _ := e.st.CountTokens(context.Background(), store.KindSession); n != 0 {
		t.Errorf("%d sessions after a refused login", n)
	}
	if evs := e.events(t, audit.LoginFailed); len(evs) != 1 || !strings.Contains(evs[0].Reason, "service:deploy") {
		t.Errorf("login.failed events: %+v", evs)
	}
}

// TestUserTokensWithSSO (issue 9, item 6e): with single sign-on an admin
// cannot issue a personal token in another user's name (people sign in
// themselves); without it the admin can, and the trail records it as
// impersonation, not as an ordinary token.created.
func TestUserTokensWithSSO(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newSSOEnv(t, nil, false)
	admin, err := e.st.CreateAdminToken(ctx, store.Actor{Name: "test"}, "root", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(e.url, admin)
	_, err = c.CreateToken(ctx, wire.TokenCreate{Name: "for bob", TTL: wire.Duration(time.Hour), User: "bob"})
	wantStatus(t, "an admin's --user token with single sign-on", err, http.StatusForbidden)
	if err == nil || !strings.Contains(err.Error(), "single sign-on") {
		t.Errorf("the refusal does not say why: %v", err)
	}
	if ts, _ := c.Tokens(ctx, true); len(ts) != 1 {
		t.Errorf("tokens after the refusal: %+v", ts)
	}
	if evs := e.events(t, audit.AccessDenied); len(evs) != 1 {
		t.Errorf("access.denied events: %+v", evs)
	}
	// Service tokens stay possible.
	if _, err := c.CreateToken(ctx, wire.TokenCreate{Name: "ci", TTL: wire.Duration(time.Hour), Service: "ci"}); err != nil {
		t.Errorf("a service token with single sign-on: %v", err)
	}

	// Without single sign-on: allowed, and audited as impersonation.
	ne := newEnv(t)
	adminP, _ := ne.st.Authenticate(ctx, ne.admin, time.Now())
	tok, err := ne.c.CreateToken(ctx, wire.TokenCreate{Name: "for bob", TTL: wire.Duration(time.Hour), User: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if tok.Token.Subject != "bob" || tok.Token.Parent != "" {
		t.Errorf("token %+v: want bob's, with no parent (it speaks for bob, not for the admin)", tok.Token)
	}
	evs, err := ne.c.Audit(ctx, client.AuditFilter{Action: string(audit.TokenImpersonation)})
	if err != nil || len(evs) != 1 || evs[0].Actor != "alice" || evs[0].Details["subject"] != "bob" ||
		evs[0].Details["token_id"] != tok.Token.ID || evs[0].Details["created_with"] != adminP.TokenID {
		t.Errorf("token.impersonation events: %+v, %v", evs, err)
	}
	created, _ := ne.c.Audit(ctx, client.AuditFilter{Action: string(audit.TokenCreated)})
	for _, ev := range created {
		if ev.Details["token_id"] == tok.Token.ID {
			t.Errorf("the impersonation token was also audited as token.created: %+v", ev)
		}
	}
}

// TestTokenIDsCannotBeProbed: a principal who may not manage access gets
// the same refusal, word for word, for revoking another user's token and a
// token id that does not exist, so it cannot learn which ids exist; an
// admin learns it (404).
func TestTokenIDsCannotBeProbed(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	bob := e.approverEverywhere(t, "bob")
	_, dave, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "dave", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ghost := "p-000000000000"
	codeDave, bodyDave := e.raw(t, "DELETE", "/api/v1/tokens/"+dave.ID, bob, "", nil)
	codeGhost, bodyGhost := e.raw(t, "DELETE", "/api/v1/tokens/"+ghost, bob, "", nil)
	if codeDave != http.StatusForbidden || codeGhost != codeDave || strings.ReplaceAll(sameProblem(bodyGhost), ghost, dave.ID) != sameProblem(bodyDave) {
		t.Errorf("revoking dave's token: %d %s; a token that does not exist: %d %s; want the same 403", codeDave, bodyDave, codeGhost, bodyGhost)
	}
	if code, body := e.raw(t, "DELETE", "/api/v1/tokens/"+ghost, e.admin, "", nil); code != http.StatusNotFound {
		t.Errorf("an admin revoking a token that does not exist: %d %s, want 404", code, body)
	}
}
