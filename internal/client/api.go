package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// ReissueEnrollToken issues a new one-time enrollment token for the
// existing target name (to re-enroll its host).
func (c *Client) ReissueEnrollToken(ctx context.Context, name string) (wire.TargetCreated, error) {
	var out wire.TargetCreated
	err := c.do(ctx, http.MethodPost, "/api/v1/targets/"+url.PathEscape(name)+"/enroll-token", nil, nil, &out)
	return out, err
}

// Targets lists all targets.
func (c *Client) Targets(ctx context.Context) ([]wire.Target, error) {
	var out []wire.Target
	err := c.do(ctx, http.MethodGet, "/api/v1/targets", nil, nil, &out)
	return out, err
}

// TargetsIn lists the targets of one class (configured, not-configured,
// unsupported), or all for "".
func (c *Client) TargetsIn(ctx context.Context, class string) ([]wire.Target, error) {
	var q url.Values
	if class != "" {
		q = url.Values{"state": {class}}
	}
	var out []wire.Target
	err := c.do(ctx, http.MethodGet, "/api/v1/targets", q, nil, &out)
	return out, err
}

// TargetFilter selects targets.
type TargetFilter struct {
	// Class is configured, not-configured or unsupported; "" for all.
	Class string
	// Selector is a label selector KEY=VALUE[,KEY=VALUE...]: all must match.
	Selector string
}

// TargetList lists the targets f selects. The selector is sent as
// ?selector= and also applied here, so the answer is right whether or not
// the server filters by labels itself.
func (c *Client) TargetList(ctx context.Context, f TargetFilter) ([]wire.Target, error) {
	sel, err := ParseSelector(f.Selector)
	if err != nil {
		return nil, err
	}
	q := url.Values{}
	if f.Class != "" {
		q.Set("state", f.Class)
	}
	if f.Selector != "" {
		q.Set("selector", f.Selector)
	}
	var all []wire.Target
	if err := c.do(ctx, http.MethodGet, "/api/v1/targets", q, nil, &all); err != nil {
		return nil, err
	}
	out := all[:0]
	for _, t := range all {
		if sel.Matches(t.Labels) {
			out = append(out, t)
		}
	}
	return out, nil
}

// Selector is a parsed label selector: every key must have its value.
type Selector map[string]string

// ParseSelector reads KEY=VALUE[,KEY=VALUE...] ("" selects everything).
func ParseSelector(s string) (Selector, error) {
	if s == "" {
		return nil, nil
	}
	sel := Selector{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" || strings.ContainsAny(k, "!=") {
			return nil, fmt.Errorf("label selector %q: use KEY=VALUE[,KEY=VALUE...], such as group=prod", s)
		}
		sel[k] = v
	}
	return sel, nil
}

// Matches reports whether labels hold every pair of the selector.
func (sel Selector) Matches(labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// EnablePolicy applies the default policy to every target matching
// selector that has no policy and can be gated; the result names the
// others and why they were skipped. With dryRun nothing changes.
func (c *Client) EnablePolicy(ctx context.Context, selector string, dryRun bool) (wire.PolicyEnableResult, error) {
	var out wire.PolicyEnableResult
	err := c.do(ctx, http.MethodPost, "/api/v1/policies/enable", dryRunQuery(dryRun), wire.PolicyEnable{Selector: selector, Default: true}, &out)
	return out, err
}

// dryRunQuery is the query of a dry run, or nil.
func dryRunQuery(dryRun bool) url.Values {
	if !dryRun {
		return nil
	}
	return url.Values{"dry_run": {"true"}}
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
	return c.setPolicy(ctx, target, p, false)
}

// PlanPolicy says what SetPolicy would change, and changes nothing.
func (c *Client) PlanPolicy(ctx context.Context, target string, p wire.Policy) (wire.PolicyResult, error) {
	return c.setPolicy(ctx, target, p, true)
}

func (c *Client) setPolicy(ctx context.Context, target string, p wire.Policy, dryRun bool) (wire.PolicyResult, error) {
	var out wire.PolicyResult
	err := c.do(ctx, http.MethodPut, "/api/v1/targets/"+url.PathEscape(target)+"/policy", dryRunQuery(dryRun), p, &out)
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
	// Selector selects requests for targets whose labels match
	// KEY=VALUE[,KEY=VALUE...]. It is sent as ?selector=; as the request
	// rows carry no labels, it is also applied here against the targets'
	// labels (one more read), so it holds whether or not the server knows it.
	Selector string
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
	sel, err := ParseSelector(f.Selector)
	if err != nil {
		return nil, err
	}
	if f.Selector != "" {
		q.Set("selector", f.Selector)
	}
	var out []wire.Request
	if err := c.do(ctx, http.MethodGet, "/api/v1/requests", q, nil, &out); err != nil {
		return nil, err
	}
	if sel == nil {
		return out, nil
	}
	ts, err := c.TargetList(ctx, TargetFilter{Selector: f.Selector})
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, t := range ts {
		names[t.Name] = true
	}
	kept := out[:0]
	for _, r := range out {
		if names[r.Target] {
			kept = append(kept, r)
		}
	}
	return kept, nil
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
	// Actor is the user (or agent) who acted.
	Actor string
	// Since and Until bound the time: Since <= at < Until.
	Since   time.Time
	Until   time.Time
	AfterID int64
	Limit   int
	// BeforeID, when not 0, selects events with a smaller id.
	BeforeID int64
	// Newest lists newest first (Limit keeps the newest).
	Newest bool
}

// query encodes the filter as the API's query parameters.
func (f AuditFilter) query() url.Values {
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
	if f.Actor != "" {
		q.Set("actor", f.Actor)
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	if f.AfterID > 0 {
		q.Set("after", strconv.FormatInt(f.AfterID, 10))
	}
	if f.BeforeID > 0 {
		q.Set("before", strconv.FormatInt(f.BeforeID, 10))
	}
	if f.Newest {
		q.Set("order", "newest")
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	return q
}

// Audit lists audit events, oldest first.
func (c *Client) Audit(ctx context.Context, f AuditFilter) ([]wire.AuditEvent, error) {
	var out []wire.AuditEvent
	err := c.do(ctx, http.MethodGet, "/api/v1/audit", f.query(), nil, &out)
	return out, err
}

// VerifyAudit checks the hash chain of the whole audit trail.
func (c *Client) VerifyAudit(ctx context.Context) (wire.AuditVerify, error) {
	var out wire.AuditVerify
	err := c.do(ctx, http.MethodGet, "/api/v1/audit/verify", nil, nil, &out)
	return out, err
}

// ExportAudit streams every event matching f (Limit is ignored) in format
// "jsonl" or "csv" to w. An export cut short by the server fails with an
// error rather than returning a complete-looking file.
func (c *Client) ExportAudit(ctx context.Context, f AuditFilter, format string, w io.Writer) error {
	q := f.query()
	q.Del("limit")
	q.Del("order")
	q.Set("format", format)
	// A large export may take longer than the client's timeout for one
	// answer; ctx bounds it instead.
	hc := *c.http
	hc.Timeout = 0
	return c.each(ctx, http.MethodGet, func(base *url.URL) (int, error) {
		u := *base
		u.Path += "/api/v1/audit/export"
		u.RawQuery = q.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return 0, &noRetry{fmt.Errorf("building request: %w", err)}
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("GET /api/v1/audit/export: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode >= 400 {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			ae := &APIError{Status: resp.StatusCode}
			if json.Unmarshal(data, &ae.Body) != nil || ae.Body.Error == "" {
				ae.Body.Error = fmt.Sprintf("server answered %s", resp.Status)
			}
			return resp.StatusCode, ae
		}
		// Part of the export may be written already: never sent again.
		if _, err := io.Copy(w, resp.Body); err != nil {
			return resp.StatusCode, &noRetry{fmt.Errorf("GET /api/v1/audit/export: reading answer: %w", err)}
		}
		return resp.StatusCode, nil
	})
}
