package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/jitgate/jitgate/internal/wire"
)

// Whoami says who the token speaks for and what it may do.
func (c *Client) Whoami(ctx context.Context) (wire.Whoami, error) {
	var out wire.Whoami
	err := c.do(ctx, http.MethodGet, "/api/v1/whoami", nil, nil, &out)
	return out, err
}

// Approve approves a request awaiting approval; version 0 skips the
// stale-view check.
func (c *Client) Approve(ctx context.Context, id, reason string, version int64) (wire.Request, error) {
	var out wire.Request
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(id)+"/approve", nil, wire.Decide{Reason: reason, Version: version}, &out)
	return out, err
}

// Deny denies a request (and ends it if it was approved meanwhile).
func (c *Client) Deny(ctx context.Context, id, reason string, version int64) (wire.Request, error) {
	var out wire.Request
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(id)+"/deny", nil, wire.Decide{Reason: reason, Version: version}, &out)
	return out, err
}

// Bindings lists role bindings.
func (c *Client) Bindings(ctx context.Context) ([]wire.Binding, error) {
	return listAll[wire.Binding](ctx, c, "/api/v1/bindings", nil)
}

// Bind gives a principal a role in a scope.
func (c *Client) Bind(ctx context.Context, b wire.Binding) (wire.Binding, error) {
	var out wire.Binding
	err := c.do(ctx, http.MethodPost, "/api/v1/bindings", nil, b, &out)
	return out, err
}

// Unbind removes a binding.
func (c *Client) Unbind(ctx context.Context, b wire.Binding) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/bindings", nil, b, nil)
}

// CreateToken creates a personal or service token; the secret is in the answer, once.
func (c *Client) CreateToken(ctx context.Context, in wire.TokenCreate) (wire.TokenCreated, error) {
	var out wire.TokenCreated
	err := c.do(ctx, http.MethodPost, "/api/v1/tokens", nil, in, &out)
	return out, err
}

// Tokens lists the caller's tokens, or everyone's with all.
func (c *Client) Tokens(ctx context.Context, all bool) ([]wire.Token, error) {
	var q url.Values
	if all {
		q = url.Values{"all": {"true"}}
	}
	return listAll[wire.Token](ctx, c, "/api/v1/tokens", q)
}

// RevokeToken revokes a token by id.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}

// WaitRequestVersion returns the request once its version differs from
// known (any change: an approval, activation, expiry), or after wait.
func (c *Client) WaitRequestVersion(ctx context.Context, id string, known int64, wait string) (wire.Request, error) {
	q := url.Values{"wait": {wait}, "version": {itoa(known)}}
	var out wire.Request
	err := c.do(ctx, http.MethodGet, "/api/v1/requests/"+url.PathEscape(id), q, nil, &out)
	return out, err
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
