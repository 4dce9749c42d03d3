package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jitgate/jitgate/internal/policy"
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
	return listAll[wire.Target](ctx, c, "/api/v1/targets", nil)
}

// TargetsMatching lists the targets of one class ("" for all) whose labels
// match selector (KEY=VALUE[,KEY!=VALUE...]; "" for all), every page.
func (c *Client) TargetsMatching(ctx context.Context, class, selector string) ([]wire.Target, error) {
	q := url.Values{}
	if class != "" {
		q.Set("state", class)
	}
	if selector != "" {
		q.Set("selector", selector)
	}
	return listAll[wire.Target](ctx, c, "/api/v1/targets", q)
}

// TargetsIn lists the targets of one class (configured, not-configured,
// unsupported), or all for "".
func (c *Client) TargetsIn(ctx context.Context, class string) ([]wire.Target, error) {
	var q url.Values
	if class != "" {
		q = url.Values{"state": {class}}
	}
	return listAll[wire.Target](ctx, c, "/api/v1/targets", q)
}

// TargetFilter selects targets.
type TargetFilter struct {
	// Class is configured, not-configured or unsupported; "" for all.
	Class string
	// Selector is a label selector KEY=VALUE[,KEY=VALUE...]: all must match.
	Selector string
}

// TargetList lists the targets f selects, every page. The server filters
// by the selector (?selector=); it is also applied here, so a server older
// than label selectors cannot answer more than was asked.
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
	all, err := listAll[wire.Target](ctx, c, "/api/v1/targets", q)
	if err != nil {
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

// Selector is a parsed label selector (policy.Selector: the server's own).
type Selector = policy.Selector

// ParseSelector reads KEY=VALUE[,KEY!=VALUE...] ("" selects everything)
// with the server's parser, so the CLI refuses what the server would.
func ParseSelector(s string) (Selector, error) {
	sel, err := policy.ParseSelector(s)
	if err != nil {
		return nil, fmt.Errorf("label %w", err)
	}
	return sel, nil
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

// SetPolicy replaces a target's JIT policy, whatever it is now: it reads
// the current policy's ETag and names it in If-Match (If-None-Match: * when
// there is none). To replace only the policy one has read or planned
// against, use SetPolicyIf.
func (c *Client) SetPolicy(ctx context.Context, target string, p wire.Policy) (wire.PolicyResult, error) {
	_, etag, err := c.PolicyETag(ctx, target)
	if err != nil && StatusOf(err) != http.StatusNotFound {
		return wire.PolicyResult{}, err
	}
	return c.SetPolicyIf(ctx, target, p, etag)
}

// SetPolicyIf replaces a target's JIT policy only if it is still the one
// whose ETag is etag ("": only if the target has no policy); otherwise the
// server answers 412 and nothing changes.
func (c *Client) SetPolicyIf(ctx context.Context, target string, p wire.Policy, etag string) (wire.PolicyResult, error) {
	if etag == "" {
		ctx = withHeader(ctx, "If-None-Match", "*")
	} else {
		ctx = withHeader(ctx, "If-Match", etag)
	}
	return c.setPolicy(ctx, target, p, false)
}

// PlanPolicy says what SetPolicy would change, and changes nothing. The
// result's ETag names the policy it compared against, for SetPolicyIf.
func (c *Client) PlanPolicy(ctx context.Context, target string, p wire.Policy) (wire.PolicyResult, error) {
	return c.setPolicy(ctx, target, p, true)
}

// PolicyETag returns a target's JIT policy and its ETag.
func (c *Client) PolicyETag(ctx context.Context, target string) (wire.Policy, string, error) {
	var out etagged[wire.Policy]
	err := c.do(ctx, http.MethodGet, "/api/v1/targets/"+url.PathEscape(target)+"/policy", nil, nil, &out)
	return out.v, out.etag, err
}

// etagged is an answer and its ETag header.
type etagged[T any] struct {
	v    T
	etag string
}

func (e *etagged[T]) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &e.v) }

func (e *etagged[T]) receiveHeader(h http.Header) { e.etag = h.Get("ETag") }

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

// RemovePolicy removes a target's JIT policy, whatever it is: its ports open
// again. To remove only the policy one has shown or read, use RemovePolicyIf.
func (c *Client) RemovePolicy(ctx context.Context, target string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/targets/"+url.PathEscape(target)+"/policy", nil, nil, nil)
}

// RemovePolicyIf removes a target's JIT policy only if it is still the one
// whose ETag is etag; otherwise the server answers 412 and nothing changes.
func (c *Client) RemovePolicyIf(ctx context.Context, target, etag string) error {
	return c.RemovePolicy(withHeader(ctx, "If-Match", etag), target)
}

// CreateRequest asks for access.
func (c *Client) CreateRequest(ctx context.Context, in wire.RequestCreate) (wire.Request, error) {
	var out wire.Request
	err := c.do(ctx, http.MethodPost, "/api/v1/requests", nil, in, &out)
	return out, err
}

// CreateRequestWait asks for access and, when the request is pending (its
// agent has yet to open it), lets the server wait up to wait for it to leave
// pending, in the same exchange: the answer is the request as it was then
// (active, failed, or still pending when wait ran out). A wait of 0 is
// CreateRequest; at most 55s.
func (c *Client) CreateRequestWait(ctx context.Context, in wire.RequestCreate, wait time.Duration) (wire.Request, error) {
	out, _, err := c.CreateRequestTimed(ctx, in, wait)
	return out, err
}

// CreateRequestTimed is CreateRequestWait that also returns the answer's
// Server-Timing: the server's "commit" (its handler's start to the create's
// durable commit) and "wait" (then waiting for the request to leave
// pending). The call's own latency, without the wait, is the caller's
// measured total minus wait.
func (c *Client) CreateRequestTimed(ctx context.Context, in wire.RequestCreate, wait time.Duration) (wire.Request, ServerTiming, error) {
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait": {wait.String()}}
	}
	var out timedRequest
	err := c.do(ctx, http.MethodPost, "/api/v1/requests", q, in, &out)
	return out.Request, out.timing, err
}

// timedRequest is a request and its answer's Server-Timing header. The
// request is embedded, not held behind an UnmarshalJSON: the answer is
// decoded once, as it arrives (the bench's generator makes 1,000 a second).
type timedRequest struct {
	wire.Request
	timing ServerTiming
}

func (t *timedRequest) receiveHeader(h http.Header) {
	t.timing = ParseServerTiming(h.Values("Server-Timing"))
}

// RequestFilter selects requests.
type RequestFilter struct {
	Target string
	// State is one state name, or "" for all.
	State string
	// Active selects pending and active requests.
	Active bool
	// Selector keeps the requests on targets whose labels match
	// (KEY=VALUE[,KEY!=VALUE...]).
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
	if f.Selector != "" {
		q.Set("selector", f.Selector)
	}
	return listAll[wire.Request](ctx, c, "/api/v1/requests", q)
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
