package oidc_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/jitgate/jitgate/internal/oidc"
	"github.com/jitgate/jitgate/internal/oidc/oidctest"
)

var alice = oidctest.User{Name: "alice", Password: "correct horse", Email: "alice@example.com", Groups: []string{"ops", "dba"}}

func newProvider(t *testing.T, op *oidctest.Provider, edit func(*oidc.Config)) *oidc.Provider {
	t.Helper()
	cfg := oidc.Config{Issuer: op.Issuer, ClientID: op.ClientID, ClientSecret: op.ClientSecret,
		Scopes: []string{"openid", "profile", "email", "groups"}}
	if edit != nil {
		edit(&cfg)
	}
	p, err := oidc.New(cfg)
	if err != nil {
		t.Fatalf("oidc.New: %v", err)
	}
	return p
}

func browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

// TestDeviceFlow runs the device flow against the real provider: the user
// approves the code there, and the ID token yields the user and groups.
func TestDeviceFlow(t *testing.T) {
	t.Parallel()
	op := oidctest.Start(t, alice)
	p := newProvider(t, op, nil)
	ctx := context.Background()
	da, err := p.DeviceAuth(ctx)
	if err != nil {
		t.Fatalf("DeviceAuth: %v", err)
	}
	if da.UserCode == "" || !strings.HasPrefix(da.VerificationURI, op.Issuer) {
		t.Fatalf("device answer %+v", da)
	}
	op.ApproveDevice(t, browser(t), da.UserCode, alice.Name, alice.Password)
	id, err := p.DeviceWait(ctx, da)
	if err != nil {
		t.Fatalf("DeviceWait: %v", err)
	}
	want := oidc.Identity{Username: "alice@example.com", Groups: []string{"dba", "ops"}, Subject: "alice"}
	if diff := cmp.Diff(want, id); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}
}

// rawIDToken obtains a genuine ID token for the provider's client.
func rawIDToken(t *testing.T, op *oidctest.Provider) string {
	t.Helper()
	ctx := context.Background()
	disc, err := gooidc.NewProvider(ctx, op.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	oc := &oauth2.Config{ClientID: op.ClientID, ClientSecret: op.ClientSecret, Endpoint: disc.Endpoint(), Scopes: []string{"openid", "email"}}
	da, err := oc.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	op.ApproveDevice(t, browser(t), da.UserCode, alice.Name, alice.Password)
	tok, err := oc.DeviceAccessToken(ctx, da)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatal("no id_token")
	}
	return raw
}

// resign signs the token's claims (edited by edit) with a key the provider
// never published, under the provider's key id.
func resign(t *testing.T, raw string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(raw, ".")
	var hdr struct {
		KID string `json:"kid"`
	}
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	json.Unmarshal(hb, &hdr)
	pb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err := json.Unmarshal(pb, &claims); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(claims)
	}
	payload, _ := json.Marshal(claims)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithHeader("kid", hdr.KID).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifyRefuses checks that only genuine, unexpired tokens for our
// client (and the login's nonce) are accepted.
func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	op := oidctest.Start(t, alice)
	raw := rawIDToken(t, op)
	parts := strings.Split(raw, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"`+op.Issuer+`","sub":"mallory","aud":["jitgate"],"exp":9999999999,"iat":1}`)) + "." + parts[2]
	unsigned := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	tests := []struct {
		name  string
		token string
		nonce string
		edit  func(*oidc.Config)
		want  string // in the error; "" means accepted
	}{
		{name: "genuine", token: raw},
		{name: "another client's token", token: raw, edit: func(c *oidc.Config) { c.ClientID = "other-client" }, want: "audience"},
		{name: "expired", token: raw, edit: func(c *oidc.Config) { c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } }, want: "expired"},
		{name: "signed by another key", token: resign(t, raw, nil), want: "signature"},
		{name: "forged subject, other key", token: resign(t, raw, func(c map[string]any) { c["email"] = "root@example.com" }), want: "signature"},
		{name: "claims changed after signing", token: tampered, want: "signature"},
		{name: "unsigned", token: unsigned, want: "malformed jwt"},
		{name: "nonce of another login", token: raw, nonce: "n-123", want: "nonce"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProvider(t, op, tt.edit)
			id, err := p.Verify(context.Background(), tt.token, tt.nonce)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.want == "" && id.Username != "alice@example.com":
				t.Fatalf("identity %+v", id)
			case tt.want != "" && (err == nil || !strings.Contains(strings.ToLower(err.Error()), tt.want)):
				t.Fatalf("Verify error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  oidc.Config
		want string
	}{
		{oidc.Config{Issuer: "https://login.example.com", ClientID: "c"}, ""},
		{oidc.Config{Issuer: "http://127.0.0.1:5556/dex", ClientID: "c"}, ""},
		{oidc.Config{Issuer: "http://login.example.com", ClientID: "c"}, "oidc-issuer"},
		{oidc.Config{Issuer: "login.example.com", ClientID: "c"}, "oidc-issuer"},
		{oidc.Config{Issuer: "https://login.example.com"}, "oidc-client-id"},
		{oidc.Config{Issuer: "https://login.example.com", ClientID: "c", RedirectURL: "/auth/callback"}, "oidc-redirect-url"},
		{oidc.Config{Issuer: "https://login.example.com", ClientID: "c", Scopes: []string{"email"}}, "openid"},
		{oidc.Config{Issuer: "https://login.example.com", ClientID: "c", SessionTTL: time.Second}, "session-ttl"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}
