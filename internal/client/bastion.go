package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/jitgate/jitgate/internal/relay"
	"github.com/jitgate/jitgate/internal/wire"
)

// dialWS upgrades GET path?query to a WebSocket and returns it as a
// net.Conn that lives until ctx ends or it is closed. A refusal comes back
// as an *APIError with the server's message.
func (c *Client) dialWS(ctx context.Context, path string, query url.Values) (net.Conn, error) {
	var conn net.Conn
	err := c.each(ctx, http.MethodGet, func(base *url.URL) (int, error) {
		u := *base
		u.Path += path
		if query != nil {
			u.RawQuery = query.Encode()
		}
		hdr := http.Header{}
		if c.token != "" {
			hdr.Set("Authorization", "Bearer "+c.token)
		}
		ws, resp, err := relay.DialWS(ctx, u.String(), c.http, hdr)
		if err != nil {
			if resp != nil && resp.StatusCode >= 400 {
				ae := &APIError{Status: resp.StatusCode}
				if resp.Body != nil {
					data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
					_ = json.Unmarshal(data, &ae.Body) // a body that is not JSON leaves the status alone
				}
				if ae.Body.Error == "" {
					ae.Body.Error = fmt.Sprintf("server answered %s", resp.Status)
				}
				return resp.StatusCode, ae
			}
			return 0, fmt.Errorf("GET %s: %w", path, err)
		}
		conn = ws
		return http.StatusSwitchingProtocols, nil
	})
	return conn, err
}

// Tunnel opens a bastion tunnel to port of target: one TCP connection to
// the service, relayed by the server and the target's agent, as long as the
// caller holds a live bastion grant for it. The connection ends when ctx
// ends, when it is closed, and when the server ends the session (deadline,
// revocation, kill).
func (c *Client) Tunnel(ctx context.Context, target string, port uint16) (net.Conn, error) {
	return c.dialWS(ctx, "/api/v1/tunnel", url.Values{"target": {target}, "port": {strconv.Itoa(int(port))}})
}

// AgentTunnel opens the agent's relay connection (agent credential).
func (c *Client) AgentTunnel(ctx context.Context) (net.Conn, error) {
	return c.dialWS(ctx, "/api/v1/agent/tunnel", nil)
}

// SessionQuery selects bastion sessions (GET /api/v1/sessions).
type SessionQuery struct {
	Active    bool   // only live sessions
	ID        string // only this session
	Target    string // only this target's
	Principal string // only this principal's (a user name, or service:NAME)
	Limit     int    // sessions a page (0: the server's default)
}

// SessionsPage returns one page of the sessions q selects, newest first,
// from cursor ("" for the first), and the cursor of the next page ("" when
// this was the last).
func (c *Client) SessionsPage(ctx context.Context, q SessionQuery, cursor string) ([]wire.BastionSession, string, error) {
	v := url.Values{}
	if q.Active {
		v.Set("active", "true")
	}
	if q.ID != "" {
		v.Set("id", q.ID)
	}
	if q.Target != "" {
		v.Set("target", q.Target)
	}
	if q.Principal != "" {
		v.Set("principal", q.Principal)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	var page sessionPage
	err := c.do(ctx, http.MethodGet, "/api/v1/sessions", v, nil, &page)
	return page.sessions, page.next, err
}

// ListSessions returns every session q selects, newest first, following
// the pages.
func (c *Client) ListSessions(ctx context.Context, q SessionQuery) ([]wire.BastionSession, error) {
	var (
		out    []wire.BastionSession
		cursor string
	)
	for {
		page, next, err := c.SessionsPage(ctx, q, cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" || next == cursor {
			return out, nil
		}
		cursor = next
	}
}

// Sessions lists bastion sessions (only live ones with active), every page.
func (c *Client) Sessions(ctx context.Context, active bool) ([]wire.BastionSession, error) {
	return c.ListSessions(ctx, SessionQuery{Active: active})
}

// sessionPage is one page of GET /api/v1/sessions: the body is the
// sessions, the Link header (rel="next") carries the next page's cursor.
type sessionPage struct {
	sessions []wire.BastionSession
	next     string
}

func (p *sessionPage) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &p.sessions) }

func (p *sessionPage) receiveHeader(h http.Header) { p.next = nextCursor(h.Values("Link")) }

// nextCursor is the cursor of the rel="next" link among links ("" none).
func nextCursor(links []string) string {
	for _, l := range links {
		for _, part := range strings.Split(l, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(part), ";")
			if !ok || !strings.Contains(params, `rel="next"`) {
				continue
			}
			u, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
			if err == nil {
				return u.Query().Get("cursor")
			}
		}
	}
	return ""
}

// KillSession ends a live session.
func (c *Client) KillSession(ctx context.Context, id, reason string) (wire.BastionSession, error) {
	var out wire.BastionSession
	err := c.do(ctx, http.MethodPost, "/api/v1/sessions/"+url.PathEscape(id)+"/kill", nil, wire.SessionKill{Reason: reason}, &out)
	return out, err
}

// SSHCertificate asks the server's SSH certificate authority to sign a user
// certificate for the caller's live grant of request id.
func (c *Client) SSHCertificate(ctx context.Context, id string, in wire.SSHCertificateRequest) (wire.SSHCertificate, error) {
	var out wire.SSHCertificate
	err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+url.PathEscape(id)+"/ssh-certificate", nil, in, &out)
	return out, err
}

// SSHCA returns the server's SSH certificate authority public key (with a
// person's token).
func (c *Client) SSHCA(ctx context.Context) (wire.SSHCA, error) {
	var out wire.SSHCA
	err := c.do(ctx, http.MethodGet, "/api/v1/ssh/ca", nil, nil, &out)
	return out, err
}

// AgentSSHCA returns the SSH certificate authority public key (with an
// agent credential), for sshd's TrustedUserCAKeys.
func (c *Client) AgentSSHCA(ctx context.Context) (wire.SSHCA, error) {
	var out wire.SSHCA
	err := c.do(ctx, http.MethodGet, "/api/v1/agent/ssh-ca", nil, nil, &out)
	return out, err
}
