package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/coder/websocket"

	"github.com/jitgate/jitgate/internal/wire"
)

// SearchSessions lists the sessions matching q that the caller may see,
// every page.
func (c *Client) SearchSessions(ctx context.Context, q SessionQuery) ([]wire.BastionSession, error) {
	return c.ListSessions(ctx, q)
}

// Recording writes session id's recording (asciicast v2) to w and returns
// the SHA-256 the server says it audited (its X-Recording-SHA256).
func (c *Client) Recording(ctx context.Context, id string, w io.Writer) (string, error) {
	path := "/api/v1/sessions/" + url.PathEscape(id) + "/recording"
	hc := *c.http
	hc.Timeout = 0 // a long recording may take longer than one answer
	var sha string
	err := c.each(ctx, http.MethodGet, func(base *url.URL) (int, error) {
		u := *base
		u.Path += path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return 0, &noRetry{fmt.Errorf("building request: %w", err)}
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("GET %s: %w", path, err)
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
		// Part of it may be written already: never sent again.
		if _, err := io.Copy(w, resp.Body); err != nil {
			return resp.StatusCode, &noRetry{fmt.Errorf("GET %s: reading answer: %w", path, err)}
		}
		sha = resp.Header.Get("X-Recording-SHA256")
		return resp.StatusCode, nil
	})
	return sha, err
}

// Watch joins live terminal session id read-only (moderated join). The
// connection delivers binary frames (output) and text frames (JSON
// controls); it is closed by the caller or at the session's end.
func (c *Client) Watch(ctx context.Context, id string) (*websocket.Conn, error) {
	return c.dialWSConn(ctx, "/api/v1/sessions/"+url.PathEscape(id)+"/watch", nil)
}

// Terminal opens the server's SSH terminal for request id's live grant on
// port as login (internal/webterm's protocol: the caller sends the start
// frame first). The server runs the SSH client, and records the session
// when the port's rule says so.
func (c *Client) Terminal(ctx context.Context, id string, port uint16, login string) (*websocket.Conn, error) {
	return c.dialWSConn(ctx, "/api/v1/requests/"+url.PathEscape(id)+"/terminal",
		url.Values{"port": {strconv.Itoa(int(port))}, "login": {login}})
}

// dialWSConn upgrades GET path?query to a WebSocket that carries both
// binary and text frames.
func (c *Client) dialWSConn(ctx context.Context, path string, query url.Values) (*websocket.Conn, error) {
	var ws *websocket.Conn
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
		conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: hdr,
			CompressionMode: websocket.CompressionDisabled})
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
		conn.SetReadLimit(1 << 20)
		ws = conn
		return http.StatusSwitchingProtocols, nil
	})
	return ws, err
}
