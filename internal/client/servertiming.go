package client

import (
	"strconv"
	"strings"
	"time"
)

// ServerTiming is an answer's Server-Timing header (W3C Server Timing): each
// metric's name and its dur (0 when it has none).
type ServerTiming map[string]time.Duration

// ParseServerTiming reads the values of Server-Timing headers: metrics
// separated by commas, each a name and parameters after semicolons, of which
// dur (milliseconds) is kept. A metric or parameter that does not parse is
// skipped, as the specification asks; the first of two metrics of one name
// is kept. Commas and semicolons inside quoted strings (desc="a, b") do not
// separate.
func ParseServerTiming(values []string) ServerTiming {
	out := ServerTiming{}
	for _, v := range values {
		for _, metric := range splitUnquoted(v, ',') {
			params := splitUnquoted(metric, ';')
			name := strings.TrimSpace(params[0])
			if name == "" || strings.ContainsAny(name, " \t\"=") {
				continue
			}
			if _, seen := out[name]; seen {
				continue
			}
			var dur time.Duration
			for _, p := range params[1:] {
				k, val, ok := strings.Cut(p, "=")
				if !ok || !strings.EqualFold(strings.TrimSpace(k), "dur") {
					continue
				}
				val = strings.Trim(strings.TrimSpace(val), `"`)
				if f, err := strconv.ParseFloat(val, 64); err == nil && f >= 0 && f < 1e12 {
					dur = time.Duration(f * float64(time.Millisecond))
				}
				break
			}
			out[name] = dur
		}
	}
	return out
}

// splitUnquoted splits s at sep outside double-quoted strings (a backslash
// escapes inside them).
func splitUnquoted(s string, sep byte) []string {
	var (
		out    []string
		quoted bool
		from   int
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[from:i])
			from = i + 1
		}
	}
	return append(out, s[from:])
}
