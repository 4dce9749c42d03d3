// Package client is the typed Go client of jitgate's REST API, used by the
// CLI, the agent and the end-to-end tests.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// Client talks to a jitgate server with one bearer token. It may know
// several URLs of the same deployment (replicas sharing one database): it
// uses one at a time and moves on to the next when that one does not answer
// (see failover.go for when a request is retried on another).
type Client struct {
	bases []*url.URL
	// cur is the index in bases of the URL in use, shared by the copies
	// WithToken makes, so that one that found a replica dead spares the
	// others the attempt.
	cur   *atomic.Int32
	token string
	http  *http.Client
	// switched, when set, is told when the URL in use changes and why.
	switched *func(from, to string, why error)
	switchMu *sync.Mutex
}

// Option configures a Client.
type Option func(*Client) error

// WithCAFile trusts the PEM certificates in path for TLS (for servers with a
// private CA or a self-signed certificate).
func WithCAFile(path string) Option {
	return func(c *Client) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA file %s holds no PEM certificate", path)
		}
		tr := defaultTransport()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		c.http.Transport = tr
		return nil
	}
}

// WithHTTPClient replaces the HTTP client (timeouts, transports in tests).
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) error { c.http = h; return nil }
}

// WithSwitchHook has f told (from the goroutine that made the call) each
// time the client moves from one server URL to another, with the error that
// made it move; the agent logs it.
func WithSwitchHook(f func(from, to string, why error)) Option {
	return func(c *Client) error {
		c.switchMu.Lock()
		defer c.switchMu.Unlock()
		*c.switched = f
		return nil
	}
}

// ParseServers splits rawURLs, one URL or several separated by commas (the
// replicas of one deployment), into URLs; each must be http:// or https://.
// Duplicates are dropped; the order is kept (the first is tried first).
func ParseServers(rawURLs string) ([]*url.URL, error) {
	var out []*url.URL
	seen := map[string]bool{}
	for _, raw := range strings.Split(rawURLs, ",") {
		raw = strings.TrimRight(strings.TrimSpace(raw), "/")
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("server %q must be an http:// or https:// URL", raw)
		}
		if !seen[u.String()] {
			seen[u.String()] = true
			out = append(out, u)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no server given: use --server or JITGATE_SERVER")
	}
	return out, nil
}

// New returns a client for the server at rawURL using token. rawURL may
// name several URLs of one deployment separated by commas (ParseServers).
func New(rawURL, token string, opts ...Option) (*Client, error) {
	bases, err := ParseServers(rawURL)
	if err != nil {
		return nil, err
	}
	c := &Client{bases: bases, cur: new(atomic.Int32), token: token, http: &http.Client{Timeout: 60 * time.Second, Transport: defaultTransport()},
		switched: new(func(from, to string, why error)), switchMu: new(sync.Mutex)}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WithToken returns a copy of c that sends token instead.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// APIError is a 4xx or 5xx answer from the server.
type APIError struct {
	Status int
	Body   wire.Error
}

func (e *APIError) Error() string {
	if e.Body.Rule != "" && !strings.Contains(e.Body.Error, e.Body.Rule) {
		return fmt.Sprintf("%s (rule %s)", e.Body.Error, e.Body.Rule)
	}
	return e.Body.Error
}

// StatusOf returns the HTTP status of an *APIError in err's chain, or 0.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when out is non-nil and the answer has a body). With several
// server URLs it moves on to the next when the one in use does not answer,
// and sends the request there too when that is safe (retryable).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encoding request: %w", err)
		}
		body = b
	}
	return c.each(ctx, method, func(base *url.URL) (int, error) {
		return c.once(ctx, base, method, path, query, body, in != nil, out)
	})
}

// maxAnswer bounds the answers the client reads; maxDesiredAnswer the
// agent's desired state (a snapshot of a million grants is ~90 MB).
const (
	maxAnswer        = 64 << 20
	maxDesiredAnswer = 1 << 30
)

// headersKey carries extra request headers in a call's context
// (withHeader): preconditions such as If-Match.
// mediaType is the media type of an answer's Content-Type, without its
// parameters ("" when there is none or it does not parse).
func mediaType(h http.Header) string {
	mt, _, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

type headersKey struct{}

// withHeader returns ctx whose calls send the header key: value too.
func withHeader(ctx context.Context, key, value string) context.Context {
	h := http.Header{}
	if old, ok := ctx.Value(headersKey{}).(http.Header); ok {
		h = old.Clone()
	}
	h.Set(key, value)
	return context.WithValue(ctx, headersKey{}, h)
}

// headerReceiver is an answer that also reads the response's headers (a
// page's Link to the next).
type headerReceiver interface{ receiveHeader(http.Header) }

// once sends the request to base; it returns the answer's status (0 when
// none came).
func (c *Client) once(ctx context.Context, base *url.URL, method, path string, query url.Values, body []byte, hasBody bool, out any) (int, error) {
	u := *base
	u.Path += path
	if query != nil {
		u.RawQuery = query.Encode()
	}
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, fmt.Errorf("building request: %w", err)
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if _, ok := out.(*wire.DesiredState); ok {
		// A snapshot as lines costs both sides a fraction of its JSON
		// (wire.DesiredLinesType); a server that does not know the type
		// answers JSON, and so does every delta.
		req.Header.Set("Accept", wire.DesiredLinesType+", application/json")
	}
	if h, ok := ctx.Value(headersKey{}).(http.Header); ok {
		for k, v := range h {
			req.Header[k] = v
		}
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := c.http
	if _, ok := out.(*wire.DesiredState); ok {
		if _, bounded := ctx.Deadline(); bounded {
			// A snapshot of a million grants can take longer to stream
			// than the client's timeout for one answer; the caller's
			// deadline bounds it instead (the agent's grows with the
			// state it holds).
			cp := *c.http
			cp.Timeout = 0
			hc = &cp
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		if err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: reading answer: %w", method, path, err)
		}
		ae := &APIError{Status: resp.StatusCode}
		if json.Unmarshal(data, &ae.Body) == nil && ae.Body.Error == "" {
			ae.Body.Error = ae.Body.Detail // a problem without the legacy member
		}
		if ae.Body.Error == "" {
			ae.Body.Error = fmt.Sprintf("server answered %s", resp.Status)
		}
		return resp.StatusCode, ae
	}
	if hr, ok := out.(headerReceiver); ok {
		hr.receiveHeader(resp.Header)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer)) // drained so the connection is reused
		return resp.StatusCode, nil
	}
	// Decoded as it arrives: a desired state of a million grants is ~90 MB
	// of JSON, which is never held as bytes besides what it decodes to
	// (decodeDesired reads it a grant at a time).
	limit := int64(maxAnswer)
	if _, ok := out.(*wire.DesiredState); ok {
		limit = maxDesiredAnswer
	}
	// A snapshot as lines (asked for above) is decoded as lines, whatever
	// its length: a small one comes with one too.
	switch ds, ok := out.(*wire.DesiredState); {
	case ok && mediaType(resp.Header) == wire.DesiredLinesType:
		err = wire.DecodeDesiredLines(io.LimitReader(resp.Body, limit), ds)
	case ok && resp.ContentLength >= 0 && resp.ContentLength <= wholeDesiredMax:
		err = decodeDesiredWhole(resp.Body, resp.ContentLength, ds)
	default:
		err = decodeAnswer(io.LimitReader(resp.Body, limit), out)
	}
	switch {
	case err == io.EOF: // no body: nothing to decode, as before
	case err != nil:
		return resp.StatusCode, fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return resp.StatusCode, nil
}
