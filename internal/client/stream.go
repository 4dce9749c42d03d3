package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/jitgate/jitgate/internal/wire"
)

// wholeDesiredMax is the largest desired-state answer, by its
// Content-Length, that is read whole and decoded in one json.Unmarshal
// (decodeDesiredWhole) rather than token by token (decodeDesired): the
// agent's answer to a grant is a delta of a few hundred bytes, on the path
// from the commit to the kernel, where the token-by-token decoding cost ~3x
// the time and ~10x the allocations (a raw copy of each member, then
// json.Marshal and json.Unmarshal of them again). A snapshot is streamed
// without a length and stays on decodeDesired, a grant at a time.
const wholeDesiredMax = 256 << 10

// decodeDesiredWhole decodes a desired state of exactly n bytes from r (an
// answer with its Content-Length) as decodeDesired would: io.EOF when n is
// 0, an error for anything but a JSON object or data after it, and out
// written only when the whole answer decoded.
func decodeDesiredWhole(r io.Reader, n int64, out *wire.DesiredState) error {
	if n == 0 {
		return io.EOF
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if i := bytes.IndexFunc(buf, func(r rune) bool { return !unicode.IsSpace(r) }); i < 0 || buf[i] != '{' {
		return errors.New("a desired state must be a JSON object")
	}
	var ds wire.DesiredState
	if err := json.Unmarshal(buf, &ds); err != nil {
		return err
	}
	*out = ds
	return nil
}

// decodeAnswer decodes one JSON value from r into out, refusing data after
// it; io.EOF when r is empty. A desired state is decoded by decodeDesired,
// and written to out only once nothing follows it: an answer with more
// after its object (a snapshot as lines labelled JSON, whose head alone is
// a desired state without grants; a body longer than it should be, cut
// off) is refused whole, and leaves nothing behind for a caller to take.
func decodeAnswer(r io.Reader, out any) error {
	dec := json.NewDecoder(r)
	var (
		err  error
		got  wire.DesiredState
		ds   *wire.DesiredState
		isDS bool
	)
	if ds, isDS = out.(*wire.DesiredState); isDS {
		err = decodeDesired(dec, &got)
	} else {
		err = dec.Decode(out)
	}
	if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	if isDS {
		*ds = got
	}
	return nil
}

// decodeDesired decodes a desired state token by token, the grants one at a
// time as they arrive: json.Decoder.Decode reads a whole value into its
// buffer before decoding it (~90 MB of JSON at a million grants, beside
// what it decodes to); here the buffer holds one grant's text at a time.
// The other members (a few, small) are gathered raw, in the order they
// came, and decoded with json.Unmarshal, so they mean exactly what they
// meant: a member repeated, or repeated under another case ("Since" and
// "since" are one field to json.Unmarshal), ends as its last occurrence
// says, and a "Grants" after the grants replaces them, as when the same
// answer is read whole (decodeDesiredWhole). (Gathered in a map, they were
// re-encoded in the order of their keys: {"since":3,"Since":0} was a delta
// here and a snapshot read whole.) out is written only
// once the whole object was read: a cut answer leaves it untouched. An
// empty body is io.EOF, as from Decode.
func decodeDesired(dec *json.Decoder, out *wire.DesiredState) error {
	tok, err := dec.Token()
	if err != nil {
		return err // io.EOF: no body
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("a desired state must be a JSON object")
	}
	unexpected := func(err error) error {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	rest := []byte{'{'}
	var (
		grants    []wire.GrantEntry
		sawGrants bool
	)
	for dec.More() {
		if tok, err = dec.Token(); err != nil {
			return unexpected(err)
		}
		key, _ := tok.(string)
		// json.Unmarshal matches a key to a field as bytes.EqualFold does.
		if !strings.EqualFold(key, "grants") {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return unexpected(err)
			}
			k, err := json.Marshal(key)
			if err != nil {
				return err
			}
			if len(rest) > 1 {
				rest = append(rest, ',')
			}
			rest = append(append(append(rest, k...), ':'), raw...)
			continue
		}
		if tok, err = dec.Token(); err != nil {
			return unexpected(err)
		}
		sawGrants = true
		if tok == nil { // "grants": null
			grants = nil
			continue
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return fmt.Errorf("grants: want an array, got %v", tok)
		}
		grants = []wire.GrantEntry{}
		for dec.More() {
			var g wire.GrantEntry
			if err := dec.Decode(&g); err != nil {
				return fmt.Errorf("grants[%d]: %w", len(grants), unexpected(err))
			}
			grants = append(grants, g)
		}
		if _, err := dec.Token(); err != nil { // ]
			return unexpected(err)
		}
	}
	if _, err := dec.Token(); err != nil { // }
		return unexpected(err)
	}
	var ds wire.DesiredState
	if err := json.Unmarshal(append(rest, '}'), &ds); err != nil {
		return err
	}
	if sawGrants {
		ds.Grants = grants
	}
	*out = ds
	return nil
}
