package main

import (
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/wire"
)

// TestScheduleCommands (issue 15, item 3): jitgate schedule add, list and
// remove; a missing flag is a usage error, a field the server refuses one
// error line naming it.
func TestScheduleCommands(t *testing.T) {
	c, _ := gatedWeb01(t)
	add := func(more ...string) []string {
		return append([]string{"schedule", "add", "user:alice", "web-01", "--port", "22", "--source", "198.51.100.7",
			"--duration", "1h", "--reason", "nightly"}, more...)
	}
	sc := decode[wire.Schedule](t, c.ok(add("--cron", "0 22 * * 1-5", "--timezone", "Europe/Berlin", "-o", "json")...).stdout)
	if sc.ID == "" || sc.NextAt == nil || sc.TimeZone != "Europe/Berlin" {
		t.Fatalf("schedule add: %+v", sc)
	}
	if out := c.ok("schedule", "list").stdout; !strings.Contains(out, sc.ID) || !strings.Contains(out, "0 22 * * 1-5") {
		t.Errorf("schedule list lacks the schedule:\n%s", out)
	}
	bad := c.run(add()...)
	if bad.code != exitUsage {
		t.Errorf("schedule add without --cron: exit %d, want %d", bad.code, exitUsage)
	}
	checkErrorLine(t, bad, 2, "--cron is required")
	checkOneLineError(t, c.run(add("--cron", "0 22 * * *", "--timezone", "Mars/Olympus")...), "timezone", "not an IANA time zone")
	checkOneLineError(t, c.run(add("--cron", "0 25 * * *")...), "cron", "five fields")
	if out := c.ok("schedule", "rm", sc.ID, "--yes").stdout; !strings.Contains(out, "removed") {
		t.Errorf("schedule rm: %q", out)
	}
	checkOneLineError(t, c.run("schedule", "rm", sc.ID, "--yes"), "not found")
}
