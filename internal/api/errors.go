package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/httpedge"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// maxBody bounds every request body.
const maxBody = 1 << 20

// inputError is a malformed request body or query.
type inputError struct {
	status int
	field  string
	msg    string
}

func (e *inputError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &inputError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

func invalidField(field, format string, a ...any) error {
	return &inputError{status: http.StatusUnprocessableEntity, field: field, msg: field + ": " + fmt.Sprintf(format, a...)}
}

// errBodyTimeout is a request body that did not arrive in the time the
// server allows (its read deadline passed).
var errBodyTimeout = &inputError{status: http.StatusRequestTimeout, msg: "request body not received in the time allowed; send it at once"}

// errForbidden is a principal acting outside what its token allows.
var errForbidden = errors.New("this token may not do that")

// writeError maps an error to its HTTP status; this is the only place that
// knows the mapping.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	status, body := classify(err)
	if errors.Is(err, context.Canceled) {
		// The client went away (a long-poll ended, a CLI was stopped): not
		// a server error, and nobody reads the answer.
		return
	}
	if status >= http.StatusInternalServerError {
		log.Error("request failed", "status", status, "err", err)
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="jitgate"`)
	}
	writeProblem(w, status, body)
}

// problemType is the type of every problem jitgate answers: the status code
// and Detail say what went wrong (RFC 9457 §4.2.1).
const problemType = "about:blank"

// writeProblem answers an RFC 9457 problem: body's Error becomes Detail
// (and stays as the "error" extension member), and the standard members are
// filled in from status and the call's request id. Every error answer of
// the API goes through here.
func writeProblem(w http.ResponseWriter, status int, body wire.Error) {
	body.Type, body.Title, body.Status = problemType, http.StatusText(status), status
	if body.Detail == "" {
		body.Detail = body.Error
	}
	if body.Error == "" {
		body.Error = body.Detail
	}
	if id := w.Header().Get(httpedge.RequestIDHeader); id != "" && body.Instance == "" {
		body.Instance = "urn:jitgate:request:" + id
	}
	if writeBody(w, status, "application/problem+json", body) != nil {
		// Strings and an int: cannot fail to encode.
		w.WriteHeader(http.StatusInternalServerError)
	}
}

// statusOf is the HTTP status err maps to.
func statusOf(err error) int {
	status, _ := classify(err)
	return status
}

// classify maps an error to its HTTP status and body.
func classify(err error) (int, wire.Error) {
	var (
		status = http.StatusInternalServerError
		body   = wire.Error{Error: "internal error"}
		ie     *inputError
		fe     *policy.FieldError
		de     *policy.DenyError
		le     *policy.LimitError
		mbe    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ie):
		status, body = ie.status, wire.Error{Error: ie.msg, Field: ie.field}
	case errors.As(err, &mbe):
		status, body = http.StatusRequestEntityTooLarge, wire.Error{Error: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
	case errors.As(err, &fe):
		status, body = http.StatusUnprocessableEntity, wire.Error{Error: fe.Error(), Field: fe.Field}
	case errors.As(err, &de):
		status, body = http.StatusForbidden, wire.Error{Error: de.Error(), Rule: de.Rule}
		if !de.NextOpening.IsZero() {
			t := de.NextOpening
			body.NextOpening = &t
		}
	case errors.As(err, &le):
		status, body = http.StatusTooManyRequests, wire.Error{Error: le.Error()}
	case errors.Is(err, access.ErrBreakGlass):
		status, body = http.StatusUnprocessableEntity, wire.Error{Error: err.Error()}
	case errors.Is(err, errNoBreakGlassKey):
		status, body = http.StatusServiceUnavailable, wire.Error{Error: err.Error()}
	case errors.Is(err, store.ErrStorageFull):
		// Nothing was recorded; the client may retry once space is freed.
		status, body = http.StatusServiceUnavailable, wire.Error{Error: store.ErrStorageFull.Error()}
	case errors.Is(err, store.ErrUnauthorized):
		status, body = http.StatusUnauthorized, wire.Error{Error: "missing, invalid or expired bearer token"}
	case errors.Is(err, errForbidden), errors.Is(err, store.ErrForbidden):
		msg := strings.TrimSuffix(strings.TrimSuffix(err.Error(), ": "+errForbidden.Error()), ": "+store.ErrForbidden.Error())
		status, body = http.StatusForbidden, wire.Error{Error: msg}
	case errors.Is(err, store.ErrStale):
		status, body = http.StatusConflict, wire.Error{Error: strings.TrimSuffix(err.Error(), ": "+store.ErrStale.Error())}
	case errors.Is(err, store.ErrNotFound):
		status, body = http.StatusNotFound, wire.Error{Error: err.Error()}
	case errors.Is(err, store.ErrConflict):
		// The sentinel's own text ("conflict") adds nothing to the message.
		msg := strings.TrimSuffix(strings.TrimSuffix(err.Error(), ": conflict"), " (conflict)")
		status, body = http.StatusConflict, wire.Error{Error: msg}
	}
	return status, body
}

// writeJSON answers v (nil: no body), indented for people reading it with
// curl; a value that cannot be encoded is a 500 problem, not a truncated
// 200.
func writeJSON(w http.ResponseWriter, status int, v any) {
	if v == nil {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(status)
		return
	}
	if writeBody(w, status, "application/json", v) != nil {
		writeProblem(w, http.StatusInternalServerError, wire.Error{Error: "the answer could not be encoded"})
	}
}

// writeBody encodes v first and then writes it in one piece with its
// Content-Length, so that the answer can leave before the access log's
// line is written (the server's logRequests flushes it first) and nothing
// is written when v cannot be encoded.
func writeBody(w http.ResponseWriter, status int, contentType string, v any) error {
	buf := jsonBuffers.Get().(*bytes.Buffer)
	defer putJSONBuffer(buf)
	buf.Reset()
	enc := json.NewEncoder(buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	// A failed write is a client gone: nothing left to tell it.
	_, _ = w.Write(buf.Bytes())
	return nil
}

// jsonBuffers recycles writeJSON's buffers; one grown past maxPooledJSON
// (a large listing) is left to the collector rather than kept.
var jsonBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

const maxPooledJSON = 1 << 20

func putJSONBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooledJSON {
		jsonBuffers.Put(b)
	}
}

// decode reads exactly one JSON object into v, refusing unknown fields and
// oversized bodies.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return &inputError{status: http.StatusUnsupportedMediaType, msg: "Content-Type must be application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.Is(err, os.ErrDeadlineExceeded):
			return errBodyTimeout
		case errors.Is(err, io.EOF):
			return badRequest("request body is empty; expected a JSON object")
		case errors.As(err, &se):
			return badRequest("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return badRequest("field %q must be %s, not %s", te.Field, te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return badRequest("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		}
		return badRequest("malformed JSON: %v", err)
	}
	// dec.More would miss a stray ']' or '}' after the value: only the end
	// of the body may follow it.
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errBodyTimeout
		}
		return badRequest("request body holds more than one JSON value")
	}
	return nil
}

func notFound(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, store.ErrNotFound)...)
}
