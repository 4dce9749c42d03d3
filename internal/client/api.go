package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// Health calls the unauthenticated health endpoint.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// CreateTarget enrolls a target and returns its one-time enrollment token.
func (c *Client) CreateTarget(ctx context.Context, in wire.TargetCreate) (wire.TargetCreated, error) {
	var out wire.TargetCreated
	err := c.do(ctx, http.MethodPost, "/api/v1/targets", nil, in, &out)
	return out, err
}

// Targets lists all targets.
func (c *Client) Targets(ctx context.Context) ([]wire.Target, error) {
	var out []wire.Target
	err := c.do(ctx, http.MethodGet, "/api/v1/targets", nil, nil, &out)
	return out, err
}

// Target returns one target.
func (c *Client) Target(ctx context.Context, name string) (wire.Target, error) {
	var out wire.Target
	err := c.do(ctx, http.MethodGet, "/api/v1/targets/"+url.PathEscape(name), nil, nil, &out)
	return out, err
}

// RemoveTarget removes a target and revokes its live requests.
func (c *Client) RemoveTarget(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/targets/"+url.PathEscape(name), nil, nil, nil)
}

// SetPolicy replaces a target's JIT policy.
func (c *Client) SetPolicy(ctx context.Context, target string, p wire.Policy) (wire.PolicyResult, error) {
	var out wire.PolicyResult
	err := c.do(ctx, http.MethodPut, "/api/v1/targets/"+url.PathEscape(target)+"/policy", nil, p, &out)
	return out, err
}

// Policy returns a target's JIT policy.
func (c *Client) Policy(ctx context.Context, target string) (wire.Policy, error) {
	var out wire.Policy
	err := c.do(ctx, http.MethodGet, "/api/v1/targets/"+url.PathEscape(target)+"/policy", nil, nil, &out)
	return out, err
}

// RemovePolicy removes a target's JIT policy: its ports open again.
func (c *Client) RemovePolicy(ctx context.Context, target string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/targets/"+url.PathEscape(target)+"/policy", nil, nil, nil)
}

// CreateRequest asks for access.
func (c *Client) CreateRequest(ctx context.Context, in wire.RequestCreate) (wire.Request, error) {
	var out wire.Request
	err := c.do(ctx, http.MethodPost, "/api/v1/requests", nil, in, &out)
	return out, err
}

// RequestFilter selects requests.
type RequestFilter struct {
	Target string
	// State is one state name, or "" for all.
	State string
	// Active selects pending and active requests.
	Active bool
}

// Requests lists requests, newest first.
func (c *Client) Requests(ctx context.Context, f RequestFilter) ([]wire.Request, error) {
	q := url.Values{}
	if f.Target != "" {
		q.Set("target", f.Target)
	}
	if f.State != "" {
		q.Set("state", f.State)
	}
	if f.Active {
		q.Set("active", "true")
	}
	var out []wire.Request
	err := c.do(ctx, http.MethodGet, "/api/v1/requests", q, nil, &out)
	return out, err
}

// Request returns one request.
func (c *Client) Request(ctx context.Context, id string) (wire.Request, error) {
	var out wire.Request
	err := c.do(ctx, http.MethodGet, "/api/v1/requests/"+url.PathEscape(id), nil, nil, &out)
	return out, err
}

// WaitRequest returns the request once its state differs from known, or
// after wait with its current state (a long-poll).
func (c *Client) WaitRequest(ctx context.Context, id, known string, wait time.Duration) (wire.Request, error) {
	q := url.Values{"wait": {wait.String()}, "state": {known}}
	var out wire.Request
	err := c.do(ctx, http.MethodGet, "/api/v1/requests/"+url.PathEscape(id), q, nil, &out)
	return out, err
}

// Revoke ends a request at once.
func (c *Client) Revoke(ctx context.Context, id, reason string) (wire.Request, error) {
	var out wire.Request
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(id)+"/revoke", nil, wire.Revoke{Reason: reason}, &out)
	return out, err
}

// AuditFilter selects audit events.
type AuditFilter struct {
	Target    string
	RequestID string
	Action    string
	Since     time.Time
	AfterID   int64
	Limit     int
}

// Audit lists audit events, oldest first.
func (c *Client) Audit(ctx context.Context, f AuditFilter) ([]wire.AuditEvent, error) {
	q := url.Values{}
	if f.Target != "" {
		q.Set("target", f.Target)
	}
	if f.RequestID != "" {
		q.Set("request", f.RequestID)
	}
	if f.Action != "" {
		q.Set("action", f.Action)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	if f.AfterID > 0 {
		q.Set("after", strconv.FormatInt(f.AfterID, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out []wire.AuditEvent
	err := c.do(ctx, http.MethodGet, "/api/v1/audit", q, nil, &out)
	return out, err
}
