package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/jitgate/jitgate/internal/text"
)

// jsonOut reports whether --output json was asked for.
func (a *app) jsonOut() bool { return a.output == "json" }

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error { return printJSONTo(a.stdout, v) }

func printJSONTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table returns a tabwriter on stdout with the header written; Flush it.
func (a *app) table(header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

// row writes one table row. Cells are escaped (text.Escape): a newline or
// tab inside a value from the server cannot forge a row or a column.
func row(w io.Writer, cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		cells[i] = text.Escape(cells[i])
	}
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// progress is where progress lines go: stdout for people, stderr when
// stdout carries JSON.
func (a *app) progress() io.Writer {
	if a.jsonOut() {
		return a.stderr
	}
	return a.stdout
}

// esc escapes one value from the server for a line of plain text.
func esc(s string) string { return text.Escape(s) }

// fmtTime writes an instant in UTC.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// fmtClock writes an instant as a time of day in UTC, with the date when it
// is not on now's (UTC) day.
func fmtClock(t, now time.Time) string {
	t, now = t.UTC(), now.UTC()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04:05 UTC")
	}
	return t.Format("2006-01-02 15:04:05 UTC")
}

// fmtRelative writes "in 59m" or "3m ago".
func fmtRelative(t, now time.Time) string {
	d := t.Sub(now)
	if d >= 0 {
		return "in " + fmtDuration(d)
	}
	return fmtDuration(-d) + " ago"
}

// fmtDuration writes a duration rounded to the second without zero units:
// 1h30m, 45s, 3h.
func fmtDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// fmtMap writes k=v pairs sorted by key.
func fmtMap[V any](m map[string]V) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
	}
	return strings.Join(parts, ",")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// durationValue is a flag holding a positive Go duration, with a clear
// message for anything else ("1d" included).
type durationValue struct{ d *time.Duration }

var _ pflag.Value = durationValue{}

func newDuration(p *time.Duration, def time.Duration) durationValue {
	*p = def
	return durationValue{p}
}

func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		if strings.HasSuffix(s, "d") || strings.HasSuffix(s, "w") {
			return fmt.Errorf("use a Go duration in hours, minutes or seconds, such as 24h, 90m or 1h30m (days and weeks are not units)")
		}
		return fmt.Errorf("use a Go duration such as 90s, 45m or 1h30m")
	}
	if d <= 0 {
		return fmt.Errorf("must be positive")
	}
	*v.d = d
	return nil
}

func (v durationValue) String() string {
	if v.d == nil || *v.d == 0 {
		return ""
	}
	return fmtDuration(*v.d)
}

func (v durationValue) Type() string { return "duration" }
