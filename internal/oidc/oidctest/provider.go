// Package oidctest runs a real OpenID Provider on loopback for tests: the
// op package of github.com/zitadel/oidc (an OpenID Foundation certified
// provider implementation) with the library's example storage and its login
// and device pages. Nothing of the protocol is imitated here; this package
// only adds users with groups and registers jitgate's client.
//
// Only tests import it, so the provider is never linked into jitgate.
package oidctest

import (
	"context"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/text/language"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// User is an account at the provider. Its name is also its subject.
type User struct {
	Name, Password, Email string
	Groups                []string
}

// Provider is a running OpenID Provider with one confidential client that
// may use the authorization code flow (with PKCE) and the device flow.
type Provider struct {
	Issuer       string
	ClientID     string
	ClientSecret string

	st *groupStorage
}

// Start serves a provider on 127.0.0.1 until the test ends.
func Start(tb testing.TB, users ...User) *Provider {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listening: %v", err)
	}
	issuer := "http://" + ln.Addr().String()
	p := &Provider{Issuer: issuer, ClientID: "jitgate", ClientSecret: "client-secret-for-tests"}
	us := userStore{users: map[string]*storage.User{}}
	groups := map[string][]string{}
	for _, u := range users {
		us.users[u.Name] = &storage.User{ID: u.Name, Username: u.Name, Password: u.Password, Email: u.Email,
			EmailVerified: u.Email != "", PreferredLanguage: language.English}
		groups[u.Name] = u.Groups
	}
	clients := map[string]*storage.Client{p.ClientID: storage.WebClient(p.ClientID, p.ClientSecret)}
	p.st = &groupStorage{Storage: storage.NewStorageWithClients(us, clients), groups: groups}

	router := setupServer(issuer, p.st)
	srv := &http.Server{Handler: router}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return p
}

// AllowRedirect registers a redirect URI of the client.
func (p *Provider) AllowRedirect(uri string) {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	p.st.redirects = append(p.st.redirects, uri)
}

// setupMu serialises the example provider's construction. It writes
// process-wide state: its logger becomes slog's default, and every provider
// shares op.DefaultEndpoints, whose Authorization field the example replaces,
// so parallel tests raced (and a running provider read the field while
// another test's provider wrote it).
var (
	setupMu           sync.Mutex
	pristineEndpoints = *op.DefaultEndpoints
)

func setupServer(issuer string, st *groupStorage) http.Handler {
	setupMu.Lock()
	defer setupMu.Unlock()
	// Each provider gets its own copy of the endpoints to change.
	eps := pristineEndpoints
	op.DefaultEndpoints = &eps
	// SetupServer makes its logger the process default: keep ours.
	prev := slog.Default()
	defer slog.SetDefault(prev)
	return exampleop.SetupServer(issuer, st, slog.New(slog.DiscardHandler), false)
}

var (
	loginForm  = regexp.MustCompile(`<form method="POST" action="/login/username"`)
	loginIDTag = regexp.MustCompile(`<input type="hidden" name="id" value="([^"]*)">`)
)

// SubmitLogin fills in and submits the provider's login page, as a person
// would, and returns the answer at the end of the redirects that follow.
// page is the login page as the browser (c) received it.
func (p *Provider) SubmitLogin(tb testing.TB, c *http.Client, page *http.Response, user, password string) *http.Response {
	tb.Helper()
	body := readAll(tb, page)
	if page.StatusCode != http.StatusOK || !loginForm.MatchString(body) {
		tb.Fatalf("expected the provider's login page, got %s at %s: %.300s", page.Status, page.Request.URL, body)
	}
	m := loginIDTag.FindStringSubmatch(body)
	if m == nil {
		tb.Fatalf("login page has no auth request id: %.300s", body)
	}
	resp, err := c.PostForm(p.Issuer+"/login/username", url.Values{"id": {html.UnescapeString(m[1])}, "username": {user}, "password": {password}})
	if err != nil {
		tb.Fatalf("submitting the login form: %v", err)
	}
	return resp
}

// ApproveDevice does what a person does with a user code: open the
// provider's device page, sign in and allow the device.
func (p *Provider) ApproveDevice(tb testing.TB, c *http.Client, userCode, user, password string) {
	tb.Helper()
	resp, err := c.Get(p.Issuer + "/device?user_code=" + url.QueryEscape(userCode))
	if err != nil {
		tb.Fatalf("opening the device page: %v", err)
	}
	if body := readAll(tb, resp); !strings.Contains(body, `action="/device/login"`) {
		tb.Fatalf("expected the device login form, got %s: %.300s", resp.Status, body)
	}
	resp, err = c.PostForm(p.Issuer+"/device/login", url.Values{"user_code": {userCode}, "username": {user}, "password": {password}})
	if err != nil {
		tb.Fatalf("submitting the device login form: %v", err)
	}
	if body := readAll(tb, resp); !strings.Contains(body, "./confirm?action=allowed") {
		tb.Fatalf("expected the device confirmation page, got %s: %.300s", resp.Status, body)
	}
	resp, err = c.Get(p.Issuer + "/device/confirm?action=allowed")
	if err != nil {
		tb.Fatalf("allowing the device: %v", err)
	}
	if body := readAll(tb, resp); !strings.Contains(body, "Device authorization allowed") {
		tb.Fatalf("device not allowed: %s: %.300s", resp.Status, body)
	}
}

func readAll(tb testing.TB, resp *http.Response) string {
	tb.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("reading %s: %v", resp.Request.URL, err)
	}
	return string(b)
}

// groupStorage is the library's example storage plus a groups claim (asked
// for with the "groups" scope, as Keycloak and Dex do) and a client that may
// also use the device flow.
type groupStorage struct {
	*storage.Storage
	groups map[string][]string

	mu        sync.Mutex
	redirects []string
}

func (s *groupStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return &client{Client: c, st: s}, nil
}

func (s *groupStorage) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	if slices.Contains(scopes, "groups") {
		ui.AppendClaims("groups", s.groups[req.GetSubject()])
	}
	return nil
}

// client is the example web client (confidential, secret by HTTP Basic
// authentication) with the device grant added, jitgate's callback URLs, and
// the profile and email claims in the ID token (as Google and Entra ID do).
type client struct {
	op.Client
	st *groupStorage
}

func (c *client) GrantTypes() []zoidc.GrantType {
	return append(c.Client.GrantTypes(), zoidc.GrantTypeDeviceCode)
}

func (c *client) RedirectURIs() []string {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	return slices.Clone(c.st.redirects)
}

func (c *client) IDTokenUserinfoClaimsAssertion() bool { return true }

func (c *client) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}

type userStore struct{ users map[string]*storage.User }

func (u userStore) GetUserByID(id string) *storage.User { return u.users[id] }

func (u userStore) GetUserByUsername(name string) *storage.User { return u.users[name] }

func (u userStore) ExampleClientID() string { return "service" }
