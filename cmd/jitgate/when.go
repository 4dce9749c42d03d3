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
// An instant is a date, a date and time, a time of day or a duration
// (parseInstant): --since 1d is a day ago, --start 2h in two hours, and
// --since 2026-12-07 or --start 22:00 are local times, as people type them.

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

// zonedLayouts carry their zone; localLayouts are read in now's zone (the
// person's local time, as they typed it).
var (
	zonedLayouts = []string{time.RFC3339Nano}
	localLayouts = []string{"2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02T15:04", "2006-01-02 15:04", time.DateOnly}
	clockLayouts = []string{"15:04", "15:04:05"}
)

// errInPast is an instant that should be in the future and is not.
var errInPast = errors.New("in the past")

// parseInstant reads an instant: a date (2026-12-07: midnight), a date and
// time (2026-12-07 15:04, RFC 3339; without a zone in now's zone), a time of
// day (22:00: its next occurrence for the future, its last for the past),
// or a duration (1d, 2h; "+30m" is explicitly ahead, "-1h" explicitly
// back). A bare duration counts back from now when past is true (--since
// 1d), forward otherwise (--start 2h). For the future, an explicit "-" is
// errInPast.
func parseInstant(s string, now time.Time, past bool) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, ok := parseAbsolute(s, now.Location()); ok {
		return t, nil
	}
	for _, layout := range clockLayouts {
		c, err := time.ParseInLocation(layout, s, now.Location())
		if err != nil {
			continue
		}
		at := time.Date(now.Year(), now.Month(), now.Day(), c.Hour(), c.Minute(), c.Second(), 0, now.Location())
		switch {
		case !past && !at.After(now):
			at = at.AddDate(0, 0, 1)
		case past && at.After(now):
			at = at.AddDate(0, 0, -1)
		}
		return at, nil
	}
	sign := 0
	rest := s
	if r, ok := strings.CutPrefix(s, "+"); ok {
		sign, rest = 1, r
	} else if r, ok := strings.CutPrefix(s, "-"); ok {
		sign, rest = -1, r
	}
	d, err := parseDuration(rest)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: use a date such as 2026-12-07, a date and time such as 2026-12-07 15:04 or RFC 3339, a time of day such as 22:00, or a duration such as 2h or 1d", s)
	}
	if sign == 0 {
		sign = 1
		if past {
			sign = -1
		}
	}
	if sign < 0 && !past {
		return time.Time{}, fmt.Errorf("%q: %w", s, errInPast)
	}
	return now.Add(time.Duration(sign) * d), nil
}

// parseAbsolute reads a date, or a date and time (zone-less in loc).
func parseAbsolute(s string, loc *time.Location) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, layout := range zonedLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	for _, layout := range localLayouts {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
