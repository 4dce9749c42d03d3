// Package oidc signs people in with an OpenID Connect provider (Entra ID,
// Google, Okta, Keycloak, Dex, ...): the authorization code flow with PKCE
// for browsers and the device authorization flow (RFC 8628) for the command
// line. It verifies ID tokens (signature, issuer, audience, expiry and, for
// the code flow, the nonce) and turns their claims into a user name and
// groups. It keeps no state: callers hold state, nonce and verifier.
//
// Discovery (/.well-known/openid-configuration) and key fetching are done by
// github.com/coreos/go-oidc/v3; the OAuth 2.0 exchanges by golang.org/x/oauth2.
package oidc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/text"
)

// Config says which provider to trust and how to read its tokens.
type Config struct {
	// Issuer is the provider's issuer URL; its discovery document lives at
	// Issuer + "/.well-known/openid-configuration".
	Issuer string
	// ClientID is jitgate's client at the provider; ID tokens must be
	// issued to it (audience).
	ClientID string
	// ClientSecret authenticates a confidential client; empty for a public
	// client (PKCE still protects the code flow).
	ClientSecret string
	// RedirectURL is the registered callback (https://jitgate.example/auth/callback);
	// empty means derived from each login request's own URL.
	RedirectURL string
	// Scopes requested (default openid, profile, email).
	Scopes []string
	// UsernameClaim names the claim that holds the user name. Empty means
	// "email" (when not marked unverified), else "preferred_username", else
	// "sub"; a configured claim must be present.
	UsernameClaim string
	// GroupsClaim names the claim that lists the user's groups (default "groups").
	GroupsClaim string
	// SessionTTL is the life of the session a login creates (default 12 h).
	SessionTTL time.Duration
	// HTTPClient talks to the provider (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// Now is the clock ID tokens are checked against (default time.Now).
	Now func() time.Time
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if len(c.Scopes) == 0 {
		c.Scopes = []string{gooidc.ScopeOpenID, "profile", "email"}
	}
	if c.GroupsClaim == "" {
		c.GroupsClaim = "groups"
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 12 * time.Hour
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks the configuration and names the bad field (as the
// server's flags spell it).
func (c Config) Validate() error {
	u, err := url.Parse(c.Issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && loopback(u.Hostname()))) {
		return fmt.Errorf("oidc-issuer %q: must be an https:// URL (http:// only on loopback)", c.Issuer)
	}
	if c.ClientID == "" {
		return errors.New("oidc-client-id: required with oidc-issuer")
	}
	if c.RedirectURL != "" {
		u, err := url.Parse(c.RedirectURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("oidc-redirect-url %q: must be an absolute http(s) URL ending in /auth/callback", c.RedirectURL)
		}
	}
	if len(c.Scopes) > 0 && !slices.Contains(c.Scopes, gooidc.ScopeOpenID) {
		return errors.New("oidc-scopes: must include openid")
	}
	if c.SessionTTL != 0 && (c.SessionTTL < time.Minute || c.SessionTTL > 30*24*time.Hour) {
		return fmt.Errorf("session-ttl: %s must lie between 1m and 720h", c.SessionTTL)
	}
	return nil
}

// Identity is who an ID token says signed in.
type Identity struct {
	Username string
	Groups   []string
	// Subject is the provider's stable id of the user ("sub").
	Subject string
}

// Errors of the device flow, as RFC 8628 names them.
var (
	ErrDenied  = errors.New("access_denied")
	ErrExpired = errors.New("expired_token")
)

// Provider is one configured OpenID Provider. Discovery happens on first
// use and is retried until it succeeds, so a provider that is down when the
// server starts does not keep the server down.
type Provider struct {
	cfg Config

	mu       sync.Mutex
	oauth    *oauth2.Config
	verifier *gooidc.IDTokenVerifier
}

// New returns a provider for cfg; it does not contact the provider yet.
func New(cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Provider{cfg: cfg.WithDefaults()}, nil
}

// Config returns the configuration with defaults filled.
func (p *Provider) Config() Config { return p.cfg }

func (p *Provider) clientContext(ctx context.Context) context.Context {
	return gooidc.ClientContext(ctx, p.cfg.HTTPClient)
}

// Discover fetches the discovery document once; later calls reuse it.
func (p *Provider) Discover(ctx context.Context) error {
	_, _, err := p.discovered(ctx)
	return err
}

func (p *Provider) discovered(ctx context.Context) (*oauth2.Config, *gooidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.oauth != nil {
		return p.oauth, p.verifier, nil
	}
	op, err := gooidc.NewProvider(p.clientContext(ctx), p.cfg.Issuer)
	if err != nil {
		return nil, nil, fmt.Errorf("discovering OpenID provider %s: %w", p.cfg.Issuer, err)
	}
	p.oauth = &oauth2.Config{
		ClientID:     p.cfg.ClientID,
		ClientSecret: p.cfg.ClientSecret,
		Endpoint:     op.Endpoint(),
		RedirectURL:  p.cfg.RedirectURL,
		Scopes:       p.cfg.Scopes,
	}
	// The verifier checks the signature against the provider's published
	// keys, the issuer, the audience (our client id) and the expiry.
	p.verifier = op.VerifierContext(p.clientContext(context.Background()), &gooidc.Config{ClientID: p.cfg.ClientID, Now: p.cfg.Now})
	return p.oauth, p.verifier, nil
}

// AuthCodeURL is where to send a browser: the provider's authorization
// endpoint with state, nonce and the PKCE S256 challenge of verifier.
func (p *Provider) AuthCodeURL(ctx context.Context, state, nonce, verifier, redirectURL string) (string, error) {
	oc, _, err := p.discovered(ctx)
	if err != nil {
		return "", err
	}
	return oc.AuthCodeURL(state, gooidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("redirect_uri", redirectURL)), nil
}

// Exchange redeems an authorization code with its PKCE verifier and returns
// the identity of the ID token, whose nonce must be nonce.
func (p *Provider) Exchange(ctx context.Context, code, verifier, nonce, redirectURL string) (Identity, error) {
	oc, _, err := p.discovered(ctx)
	if err != nil {
		return Identity{}, err
	}
	tok, err := oc.Exchange(p.clientContext(ctx), code, oauth2.VerifierOption(verifier),
		oauth2.SetAuthURLParam("redirect_uri", redirectURL))
	if err != nil {
		return Identity{}, fmt.Errorf("exchanging the authorization code: %w", err)
	}
	return p.fromToken(ctx, tok, nonce)
}

// DeviceAuthorization is the provider's answer to a device authorization
// request: the codes, where the person goes, the polling interval, expiry.
type DeviceAuthorization = oauth2.DeviceAuthResponse

// DeviceAuth starts the device authorization flow at the provider.
func (p *Provider) DeviceAuth(ctx context.Context) (*DeviceAuthorization, error) {
	oc, _, err := p.discovered(ctx)
	if err != nil {
		return nil, err
	}
	if oc.Endpoint.DeviceAuthURL == "" {
		return nil, errors.New("the OpenID provider does not offer the device authorization flow (no device_authorization_endpoint)")
	}
	da, err := oc.DeviceAuth(p.clientContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("starting device authorization: %w", err)
	}
	return da, nil
}

// DeviceWait polls the provider at its interval until the user approved
// or refused da, or it expired, and returns the identity of the ID token.
// Refusal and expiry are ErrDenied and ErrExpired.
func (p *Provider) DeviceWait(ctx context.Context, da *DeviceAuthorization) (Identity, error) {
	oc, _, err := p.discovered(ctx)
	if err != nil {
		return Identity{}, err
	}
	tok, err := oc.DeviceAccessToken(p.clientContext(ctx), da)
	if err != nil {
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re) && re.ErrorCode == "access_denied":
			return Identity{}, ErrDenied
		case errors.As(err, &re) && re.ErrorCode == "expired_token", errors.Is(err, context.DeadlineExceeded):
			return Identity{}, ErrExpired
		}
		return Identity{}, fmt.Errorf("waiting for device authorization: %w", err)
	}
	return p.fromToken(ctx, tok, "")
}

func (p *Provider) fromToken(ctx context.Context, tok *oauth2.Token, nonce string) (Identity, error) {
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return Identity{}, errors.New("the provider's answer holds no ID token (is the openid scope requested?)")
	}
	return p.Verify(ctx, raw, nonce)
}

// Verify checks a raw ID token and returns its identity. A non-empty nonce
// must match the token's (the code flow); the device flow has none.
func (p *Provider) Verify(ctx context.Context, rawIDToken, nonce string) (Identity, error) {
	_, v, err := p.discovered(ctx)
	if err != nil {
		return Identity{}, err
	}
	idt, err := v.Verify(ctx, rawIDToken)
	if err != nil {
		return Identity{}, fmt.Errorf("ID token: %w", err)
	}
	if nonce != "" && idt.Nonce != nonce {
		return Identity{}, errors.New("ID token: nonce does not match the login")
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("ID token claims: %w", err)
	}
	return p.identity(claims)
}

// identity reads the user name and groups from verified claims.
func (p *Provider) identity(claims map[string]any) (Identity, error) {
	id := Identity{}
	id.Subject, _ = claims["sub"].(string)
	names := []string{p.cfg.UsernameClaim}
	if p.cfg.UsernameClaim == "" {
		names = []string{"email", "preferred_username", "sub"}
		if v, ok := claims["email_verified"].(bool); ok && !v {
			names = names[1:] // an unverified address names nobody
		}
	}
	for _, n := range names {
		if s, ok := claims[n].(string); ok && s != "" {
			id.Username = s
			break
		}
	}
	if id.Username == "" {
		return Identity{}, fmt.Errorf("ID token has no user name in claim %s", strings.Join(names, ", "))
	}
	if err := checkName(id.Username, false); err != nil {
		return Identity{}, err
	}
	if id.Username == "admin" {
		return Identity{}, errors.New(`user name "admin" is reserved for the first-start admin token`)
	}
	if err := authz.CheckName("user", id.Username); err != nil {
		return Identity{}, fmt.Errorf("ID token: %w", err)
	}
	switch g := claims[p.cfg.GroupsClaim].(type) {
	case nil:
	case string: // some providers send one group as a string
		id.Groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok && s != "" {
				id.Groups = append(id.Groups, s)
			}
		}
	default:
		return Identity{}, fmt.Errorf("ID token claim %q is not a list of strings", p.cfg.GroupsClaim)
	}
	if len(id.Groups) > 200 {
		return Identity{}, fmt.Errorf("ID token lists %d groups; at most 200 are accepted", len(id.Groups))
	}
	for _, g := range id.Groups {
		if err := checkName(g, true); err != nil {
			return Identity{}, fmt.Errorf("group: %w", err)
		}
	}
	slices.Sort(id.Groups)
	id.Groups = slices.Compact(id.Groups)
	return id, nil
}

// checkName refuses names that could not be shown or bound safely. (The
// user name "admin" is refused too, by the caller: it is the first-start
// token's user, bound as admin everywhere, and a provider account of that
// name must not inherit it.)
func checkName(s string, spaces bool) error {
	if text.Len(s) > 256 {
		return fmt.Errorf("name %.32q... is longer than 256 characters", s)
	}
	bad := func(r rune) bool { return unicode.IsControl(r) || (!spaces && unicode.IsSpace(r)) }
	if strings.IndexFunc(s, bad) >= 0 || text.Check(s) != nil {
		return fmt.Errorf("name %q holds spaces or control characters", s)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
