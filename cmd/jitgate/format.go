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

// durationValue is a flag holding a positive duration (parseDuration: 90s,
// 1h30m, 1d, 7d). With now set, a date or time is taken too, as the
// duration from now until it (--ttl 2026-12-31).
type durationValue struct {
	d   *time.Duration
	now func() time.Time
	// zeroOK takes "0" too (--wait 0: do not wait).
	zeroOK bool
}

var _ pflag.Value = durationValue{}

func newDuration(p *time.Duration, def time.Duration) durationValue {
	*p = def
	return durationValue{d: p}
}

// newDurationUntil is newDuration that also takes an instant in the future.
func newDurationUntil(p *time.Duration, def time.Duration, now func() time.Time) durationValue {
	*p = def
	return durationValue{d: p, now: now}
}

// newWaitDuration is newDuration that takes 0 too.
func newWaitDuration(p *time.Duration, def time.Duration) durationValue {
	*p = def
	return durationValue{d: p, zeroOK: true}
}

func (v durationValue) Set(s string) error {
	if v.zeroOK && strings.TrimSpace(s) == "0" {
		*v.d = 0
		return nil
	}
	d, err := parseDuration(s)
	if err != nil && v.now != nil {
		now := v.now()
		if t, ok := parseAbsolute(s, now.Location()); ok {
			if d = t.Sub(now); d <= 0 {
				return fmt.Errorf("%q is in the past", s)
			}
			err = nil
		} else {
			err = fmt.Errorf("%w, or a date such as 2026-12-07 (until then)", err)
		}
	}
	if err != nil {
		return err
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
