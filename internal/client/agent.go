package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// pollMargin is how much of the HTTP client's timeout a long-poll leaves
// free, so that a server answering right at the end of its wait still gets
// its answer through before the client gives up on the request.
const pollMargin = 5 * time.Second

// Enroll exchanges a one-time enrollment token for the long-lived agent
// credential of a target. The enrollment token is sent as the bearer token of
// this one request only; c's own token is not used.
func (c *Client) Enroll(ctx context.Context, enrollToken string, req wire.EnrollRequest) (wire.EnrollResponse, error) {
	var out wire.EnrollResponse
	if enrollToken == "" {
		return out, fmt.Errorf("enrolling: no enrollment token given")
	}
	if err := c.WithToken(enrollToken).do(ctx, http.MethodPost, "/api/v1/agent/enroll", nil, req, &out); err != nil {
		return out, fmt.Errorf("enrolling: %w", err)
	}
	if out.Credential == "" {
		return out, fmt.Errorf("enrolling: server answered without a credential")
	}
	return out, nil
}

// Desired long-polls the desired state of the agent's target: the server
// answers as soon as the target's revision exceeds after, or after wait with
// the current state anyway (wait 0 asks for an immediate answer). The wait is
// checked against the HTTP client's timeout because a poll the client cuts
// short would look like an unreachable server. A removed target answers 410
// Gone, which StatusOf reports as http.StatusGone.
func (c *Client) Desired(ctx context.Context, after int64, wait time.Duration) (wire.DesiredState, error) {
	return c.DesiredSince(ctx, after, 0, wait)
}

// DesiredSince is Desired for an agent that holds the state of revision
// since (0: none): the answer may then be a delta (wire.DesiredState.Since)
// holding only the grants changed since, or also a rule change
// (wire.DesiredState.Rules: the caller must replace its protected ports).
func (c *Client) DesiredSince(ctx context.Context, after, since int64, wait time.Duration) (wire.DesiredState, error) {
	var out wire.DesiredState
	q, err := c.pollQuery(after, since, wait)
	if err != nil {
		return out, err
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/agent/desired", q, nil, &out); err != nil {
		return out, fmt.Errorf("fetching desired state: %w", err)
	}
	return out, nil
}

// pollQuery is the desired long-poll's query (see DesiredSince), checking
// the wait against the HTTP client's timeout.
func (c *Client) pollQuery(after, since int64, wait time.Duration) (url.Values, error) {
	if wait < 0 {
		return nil, fmt.Errorf("long-poll wait %s must not be negative", wait)
	}
	if t := c.http.Timeout; t > 0 && wait > t-pollMargin {
		return nil, fmt.Errorf("long-poll wait %s must be at least %s below the HTTP client timeout %s", wait, pollMargin, t)
	}
	q := url.Values{"after": {strconv.FormatInt(after, 10)}}
	if since > 0 {
		q.Set("since", strconv.FormatInt(since, 10))
		q.Set("rules", "1")
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	return q, nil
}

// ReportPoll sends report r and, on the same exchange, the next long-poll
// (after, since and wait as for DesiredSince): the server records the
// report, then answers as the long-poll would. answered is false when the
// server recorded the report but answered 204 without a desired state (a
// server older than this call): the caller then polls on its own
// (DesiredSince). The report is a POST: like Report, it is not sent again
// to another server once it may have left.
func (c *Client) ReportPoll(ctx context.Context, r wire.AgentReport, after, since int64, wait time.Duration) (ds wire.DesiredState, answered bool, err error) {
	q, err := c.pollQuery(after, since, wait)
	if err != nil {
		return ds, false, err
	}
	body, err := json.Marshal(r)
	if err != nil {
		return ds, false, fmt.Errorf("encoding request: %w", err)
	}
	var status int
	err = c.each(ctx, http.MethodPost, func(base *url.URL) (int, error) {
		ds = wire.DesiredState{}
		st, err := c.once(ctx, base, http.MethodPost, "/api/v1/agent/report", q, body, true, &ds)
		status = st
		return st, err
	})
	if err != nil {
		return ds, false, fmt.Errorf("reporting revision %d and polling: %w", r.Revision, err)
	}
	return ds, status == http.StatusOK, nil
}

// Report tells the server which revision the agent applied (or failed to
// apply) and what the kernel holds. The server answers 204 No Content.
func (c *Client) Report(ctx context.Context, r wire.AgentReport) error {
	if err := c.do(ctx, http.MethodPost, "/api/v1/agent/report", nil, r, nil); err != nil {
		return fmt.Errorf("reporting revision %d: %w", r.Revision, err)
	}
	return nil
}
