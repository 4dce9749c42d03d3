package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// One parser for every time the CLI takes: durations (--duration, --ttl,
// --wait-timeout, --max …) and instants (--since, --until, and anything
// that names a moment, such as a scheduled start).
//
// A duration is a Go duration, optionally led by whole days and weeks:
// 90s, 45m, 1h30m, 1d, 7d, 2w, 1d12h. A day is 24 hours (no calendar, no
// daylight saving: a grant of 1d lasts 24 hours).
//
// An instant is a date (2026-12-07: midnight UTC that day, as the CLI
// prints every time in UTC), a date and time (2026-12-07 15:04 or
// 2026-12-07T15:04:05Z, RFC 3339, without a zone read as UTC), or a
// duration: before now for past instants (--since 1d: a day ago), after
// now for future ones (--start 2h: in two hours).

// parseDuration reads a duration as above; it must be positive.
func parseDuration(s string) (time.Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 || i == len(s) || (s[i] != 'd' && s[i] != 'w') {
			break
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n > 10000 {
			return 0, fmt.Errorf("%q: too long", orig)
		}
		unit := 24 * time.Hour
		if s[i] == 'w' {
			unit *= 7
		}
		total += time.Duration(n) * unit
		s = s[i+1:]
	}
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
			return 0, fmt.Errorf("%q: use a duration such as 90s, 45m, 1h30m, 1d or 7d", orig)
		}
		total += d
	}
	if total <= 0 {
		if orig == "" {
			return 0, errors.New("empty: use a duration such as 90s, 45m, 1h30m, 1d or 7d")
		}
		return 0, fmt.Errorf("%q: must be positive", orig)
	}
	return total, nil
}

// instantLayouts are the absolute forms an instant may take, zone-less
// ones read as UTC.
var instantLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly}

// parseInstant reads an instant as above. A duration counts back from now
// when past is true, forward otherwise.
func parseInstant(s string, now time.Time, past bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, ok := parseAbsolute(s); ok {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		dir := "in 2h"
		if past {
			dir = "2h ago"
		}
		return time.Time{}, fmt.Errorf("%q: use a date such as 2026-12-07, a time such as 2026-12-07T15:04:05Z, or a duration such as 2h or 1d (%s)", s, dir)
	}
	if past {
		return now.Add(-d), nil
	}
	return now.Add(d), nil
}

// parseAbsolute reads a date or a date and time.
func parseAbsolute(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, layout := range instantLayouts {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
