package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/jitgate/jitgate/internal/wire"
)

// BreakGlass opens access without approvers (the breakglass role).
func (c *Client) BreakGlass(ctx context.Context, in wire.BreakGlassCreate) (wire.BreakGlassOpened, error) {
	var out wire.BreakGlassOpened
	err := c.do(ctx, http.MethodPost, "/api/v1/breakglass", nil, in, &out)
	return out, err
}

// BreakGlassAlerts lists break-glass alerts; open: only those not reviewed.
func (c *Client) BreakGlassAlerts(ctx context.Context, open bool) ([]wire.BreakGlassAlert, error) {
	var q url.Values
	if open {
		q = url.Values{"open": {"true"}}
	}
	var out []wire.BreakGlassAlert
	err := c.do(ctx, http.MethodGet, "/api/v1/breakglass/alerts", q, nil, &out)
	return out, err
}

// ReviewAlert marks a break-glass alert reviewed.
func (c *Client) ReviewAlert(ctx context.Context, id, note string) (wire.BreakGlassAlert, error) {
	var out wire.BreakGlassAlert
	err := c.do(ctx, http.MethodPost, "/api/v1/breakglass/alerts/"+url.PathEscape(id)+"/review", nil, wire.AlertReview{Note: note}, &out)
	return out, err
}

// IssueBreakGlassToken asks the server to sign an offline token; its text
// is in the answer only.
func (c *Client) IssueBreakGlassToken(ctx context.Context, in wire.BreakGlassTokenCreate) (wire.BreakGlassTokenCreated, error) {
	var out wire.BreakGlassTokenCreated
	err := c.do(ctx, http.MethodPost, "/api/v1/breakglass/tokens", nil, in, &out)
	return out, err
}

// BreakGlassTokens lists the issued offline tokens.
func (c *Client) BreakGlassTokens(ctx context.Context) ([]wire.BreakGlassToken, error) {
	var out []wire.BreakGlassToken
	err := c.do(ctx, http.MethodGet, "/api/v1/breakglass/tokens", nil, nil, &out)
	return out, err
}

// RevokeBreakGlassToken revokes an offline token.
func (c *Client) RevokeBreakGlassToken(ctx context.Context, id string) (wire.BreakGlassToken, error) {
	var out wire.BreakGlassToken
	err := c.do(ctx, http.MethodDelete, "/api/v1/breakglass/tokens/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// ReportBreakGlassUse reports an offline break-glass the agent applied.
func (c *Client) ReportBreakGlassUse(ctx context.Context, u wire.BreakGlassUse) (wire.BreakGlassAlert, error) {
	var out wire.BreakGlassAlert
	err := c.do(ctx, http.MethodPost, "/api/v1/agent/breakglass", nil, u, &out)
	return out, err
}
