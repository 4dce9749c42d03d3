package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"strconv"
	"strings"
	"time"
)

// DesiredLinesType is the media type of a desired-state snapshot written as
// lines (version 1), which an agent asks for with Accept; a server that does
// not know it answers JSON, and an agent that does not ask gets JSON.
//
// Why: at a million grants the JSON codec (reflection, a time text per
// grant) was the largest part of both sides' CPU in an agent's restart:
// ~0.9 s of the server's encoding and ~1.9 s of the agent's decoding
// (docs/benchmarks.md §24). A grant line costs a few integer and string
// copies each way.
//
// The body, in this order (every line ends with '\n'):
//
//	{head}       the DesiredState as JSON, without server_time and with
//	             "grants":[] (bastion absent): target, revision, protected,
//	             mode, published, break-glass members, as in JSON
//	<grant>...   one line per grant entry, in the snapshot's order:
//	             id source protocol port expires [destination]
//	             separated by one space: id the grant's id (decimal), source
//	             an address or prefix as JSON has it, protocol tcp or udp,
//	             port decimal, expires the deadline in Unix nanoseconds
//	             (decimal, UTC; clamped to 0 to 2^63-1, 1970 to 2262, as
//	             the agent clamps every deadline it holds), destination
//	             only in gateway mode; the texts are printable ASCII
//	{tail}       JSON: "bastion" (when any) and "server_time", stamped when
//	             the last grant was written (the clock-skew estimate)
//
// A body that does not end with its tail line (an answer cut short) is
// refused whole, as cut JSON is. Deltas stay JSON (they are small).
const DesiredLinesType = "application/vnd.jitgate.desired-lines.v1"

// AcceptsDesiredLines reports whether an Accept header value names
// DesiredLinesType (q is not weighed against JSON's: naming it at all is
// asking for it), but for q=0, which says the client cannot take it
// (RFC 9110 §12.4.2): such a client would refuse the answer, and ask again,
// without end.
func AcceptsDesiredLines(accept string) bool {
	for part := range strings.SplitSeq(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || mt != DesiredLinesType {
			continue
		}
		if q, err := strconv.ParseFloat(params["q"], 64); err == nil && q <= 0 {
			continue
		}
		return true
	}
	return false
}

// AppendGrantLine appends g's grant line (with its '\n') to b. The source,
// protocol and destination must hold no space or newline (they are an
// address or prefix, tcp or udp, an address); the server's entries are
// made from parsed values.
func AppendGrantLine(b []byte, g GrantEntry) []byte {
	b = strconv.AppendInt(b, g.ID, 10)
	b = append(b, ' ')
	b = append(b, g.Source...)
	b = append(b, ' ')
	b = append(b, g.Protocol...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(g.Port), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, lineDeadline(g.ExpiresAt), 10)
	if g.Destination != "" {
		b = append(b, ' ')
		b = append(b, g.Destination...)
	}
	return append(b, '\n')
}

// lineDeadline is t in Unix nanoseconds, clamped to what a line carries:
// t.UnixNano overflows past 2262 (a grant of a rule whose max duration is
// centuries), and a negative number would fail the agent's whole snapshot,
// which JSON carries. The agent clamps every deadline it holds to the same
// range (firewall.UnixNano), so both say the same to the kernel; a deadline
// before 1970 is long past either way.
func lineDeadline(t time.Time) int64 {
	switch {
	case t.After(maxLineDeadline):
		return math.MaxInt64
	case t.Before(epoch):
		return 0
	}
	return t.UnixNano()
}

var epoch, maxLineDeadline = time.Unix(0, 0), time.Unix(0, math.MaxInt64)

// ParseGrantLine parses one grant line (without its '\n'). The entry it
// returns is the one JSON would give for the same grant: the deadline in
// UTC, the texts as written.
func ParseGrantLine(line []byte) (GrantEntry, error) {
	var (
		g      GrantEntry
		fields [6][]byte
		n      int
	)
	for n < len(fields) {
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			fields[n] = line
			n++
			line = nil
			break
		}
		fields[n], line = line[:i], line[i+1:]
		n++
	}
	if line != nil || n < 5 {
		return g, fmt.Errorf("a grant line has 5 or 6 fields, got %q", line)
	}
	id, ok := parseDecimal(fields[0], math.MaxInt64)
	if !ok {
		return g, fmt.Errorf("id %q is not a number", fields[0])
	}
	port, ok := parseDecimal(fields[3], math.MaxUint16)
	if !ok {
		return g, fmt.Errorf("port %q is not a port number", fields[3])
	}
	exp, ok := parseDecimal(fields[4], math.MaxInt64)
	if !ok {
		return g, fmt.Errorf("expires %q is not a number of nanoseconds", fields[4])
	}
	if len(fields[1]) == 0 || len(fields[2]) == 0 || (n == 6 && len(fields[5]) == 0) {
		return g, errors.New("a grant line has an empty field")
	}
	for _, f := range [...][]byte{fields[1], fields[2], fields[5]} {
		if !printable(f) {
			return g, fmt.Errorf("a grant line's field %q is not printable ASCII", f)
		}
	}
	g = GrantEntry{ID: id, Source: string(fields[1]), Protocol: protocolText(fields[2]), Port: uint16(port), ExpiresAt: time.Unix(0, exp).UTC()}
	if n == 6 {
		g.Destination = string(fields[5])
	}
	return g, nil
}

// printable reports whether b holds only printable ASCII without a space,
// as every source, protocol and destination a server writes does. Anything
// else (a CR a proxy added, NUL, bytes that are not UTF-8, which JSON could
// not even carry) fails the line here rather than further on: the agent's
// parsing of addresses refuses such texts too, but a line must not carry
// what the same snapshot in JSON cannot.
func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// parseDecimal parses b as a decimal number from 0 to max: digits only, as
// AppendGrantLine writes them (strconv would copy b into a string first).
func parseDecimal(b []byte, max int64) (int64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > uint64(max) {
		return 0, false
	}
	return int64(n), true
}

// protocolText is p as a string, without an allocation for the two
// protocols every grant has.
func protocolText(p []byte) string {
	switch string(p) {
	case "tcp":
		return "tcp"
	case "udp":
		return "udp"
	}
	return string(p)
}

// desiredTail is the last line of a snapshot in lines.
type desiredTail struct {
	Bastion    []BastionGrant `json:"bastion,omitempty"`
	ServerTime time.Time      `json:"server_time"`
}

// AppendDesiredTail appends the tail line of a snapshot in lines (see
// DesiredLinesType).
func AppendDesiredTail(b []byte, bastion []BastionGrant, serverTime time.Time) ([]byte, error) {
	j, err := json.Marshal(desiredTail{Bastion: bastion, ServerTime: serverTime})
	if err != nil {
		return b, err
	}
	return append(append(b, j...), '\n'), nil
}

// maxGrantLine bounds one grant line (an IPv6 prefix, an IPv6 destination
// and four numbers take well under 200 bytes).
const maxGrantLine = 4 << 10

// DecodeDesiredLines decodes a snapshot written as lines (see
// DesiredLinesType) from r, the grants one line at a time, and writes out
// only once the whole body was read: a body cut short (no tail line, or a
// tail without its '\n'), a malformed line or data after the tail is an
// error and leaves out untouched. An empty body is io.EOF.
func DecodeDesiredLines(r io.Reader, out *DesiredState) error {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.ReadBytes('\n')
	if err != nil {
		if err == io.EOF && len(head) == 0 {
			return io.EOF
		}
		return cutShort(err)
	}
	var ds DesiredState
	if err := json.Unmarshal(head, &ds); err != nil {
		return fmt.Errorf("the snapshot's head: %w", err)
	}
	if len(ds.Grants) > 0 || len(ds.Bastion) > 0 || ds.Since != 0 {
		return errors.New("the snapshot's head holds grants or is a delta")
	}
	ds.Grants = []GrantEntry{}
	for {
		b, err := br.Peek(1)
		if err != nil {
			return cutShort(err)
		}
		if b[0] == '{' {
			break
		}
		line, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull) || len(line) > maxGrantLine:
			return fmt.Errorf("grants[%d]: a grant line longer than %d bytes", len(ds.Grants), maxGrantLine)
		case err != nil:
			return cutShort(err)
		}
		g, err := ParseGrantLine(line[:len(line)-1])
		if err != nil {
			return fmt.Errorf("grants[%d]: %w", len(ds.Grants), err)
		}
		ds.Grants = append(ds.Grants, g)
	}
	tailLine, err := br.ReadBytes('\n')
	if err != nil {
		return cutShort(err)
	}
	var tail desiredTail
	if err := json.Unmarshal(tailLine, &tail); err != nil {
		return fmt.Errorf("the snapshot's tail: %w", err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return errors.New("data after the snapshot's tail")
	}
	ds.Bastion, ds.ServerTime = tail.Bastion, tail.ServerTime
	*out = ds
	return nil
}

// cutShort turns the end of the body where more was due into
// io.ErrUnexpectedEOF.
func cutShort(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
