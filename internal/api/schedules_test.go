package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestScheduleRefusals (issue 15, item 3): a schedule with a bad field is
// refused with a 4xx naming it, and nothing is recorded.
func TestScheduleRefusals(t *testing.T) {
	e := newEnv(t)
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	good := map[string]any{"principal": "user:carol", "target": "web-01", "ports": []string{"22"}, "source": "198.51.100.9",
		"cron": "0 22 * * 1-5", "timezone": "Europe/Berlin", "duration": "1h", "reason": "nightly"}
	tests := []struct {
		name   string
		field  string
		value  any
		status int
		field2 string // the field named in the answer
		says   string
	}{
		{"a group", "principal", "group:ops", 422, "principal", "a group cannot hold a request"},
		{"no kind", "principal", "carol", 422, "principal", "user:NAME"},
		{"bad cron", "cron", "61 22 * * *", 422, "cron", "five fields"},
		{"four fields", "cron", "0 22 * *", 422, "cron", "five fields"},
		{"@every", "cron", "@every 1m", 422, "cron", "@every is not supported"},
		{"never", "cron", "0 22 30 2 *", 422, "cron", "never occurs"},
		{"no zone", "timezone", "", 422, "timezone", "required"},
		{"bad zone", "timezone", "Mars/Olympus", 422, "timezone", "not an IANA time zone"},
		{"my-ip", "source", "my-ip", 422, "source", "not an address or a CIDR prefix"},
		{"no duration", "duration", "0s", 422, "duration", "required"},
		{"no ports", "ports", []string{}, 422, "ports", "1 to 64 ports"},
		{"bad port", "ports", []string{"99999"}, 422, "ports[0]", ""},
		{"over the rule's maximum", "duration", "3h", 403, "", "exceeds the maximum"},
		{"outside the allowed sources", "source", "203.0.113.9", 403, "", "not inside any allowed prefix"},
		{"no such target", "target", "web-09", 404, "", "web-09"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := map[string]any{}
			for k, v := range good {
				in[k] = v
			}
			in[tt.field] = tt.value
			body, _ := json.Marshal(in)
			status, out := e.raw(t, http.MethodPost, "/api/v1/schedules", e.admin, "application/json", strings.NewReader(string(body)))
			var msg wire.Error
			if err := json.Unmarshal(out, &msg); err != nil || status != tt.status || msg.Field != tt.field2 || !strings.Contains(msg.Error, tt.says) {
				t.Fatalf("%s=%v: %d %s; want %d naming field %q, saying %q", tt.field, tt.value, status, out, tt.status, tt.field2, tt.says)
			}
			if scs, err := e.st.ListSchedules(context.Background()); err != nil || len(scs) != 0 {
				t.Fatalf("a refused schedule recorded %d schedules (%v)", len(scs), err)
			}
		})
	}
}

// TestScheduleVisibility: a schedule's principal sees and may delete it
// without any policy role; a reader of the target sees nothing and may not
// delete it.
func TestScheduleVisibility(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addTarget(t, "web-01")
	e.setPolicy(t, "web-01", sshPolicy("198.51.100.0/24"))
	sc, err := e.c.CreateSchedule(ctx, wire.ScheduleCreate{Principal: "user:carol", Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.9",
		Cron: "30 6 * * *", TimeZone: "America/New_York", Duration: wire.Duration(time.Hour), Reason: "backups"})
	if err != nil {
		t.Fatal(err)
	}
	if sc.NextAt == nil || sc.NextAt.In(mustZone(t, "America/New_York")).Hour() != 6 {
		t.Fatalf("next occurrence %v, want 06:30 in New York", sc.NextAt)
	}
	carol := e.requester(t, "carol")
	if _, err := e.st.CreateBinding(ctx, store.Actor{Name: "test"}, authz.Binding{Principal: "user:bob", Role: authz.Reader, Scope: authz.Everywhere}, time.Now()); err != nil {
		t.Fatal(err)
	}
	bobSecret, _, err := e.st.CreateToken(ctx, store.Actor{Name: "test"}, store.TokenSpec{Kind: store.KindPersonal, Subject: "bob", TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bob := e.c.WithToken(bobSecret)
	if got, err := bob.Schedules(ctx); err != nil || len(got) != 0 {
		t.Fatalf("a reader sees %v, %v; want none", got, err)
	}
	if err := bob.DeleteSchedule(ctx, sc.ID); err == nil || !strings.Contains(err.Error(), "policy.write") {
		t.Fatalf("a reader deleting a schedule: %v, want a refusal naming policy.write", err)
	}
	if got, err := carol.Schedules(ctx); err != nil || len(got) != 1 || got[0].ID != sc.ID {
		t.Fatalf("the principal sees %v, %v; want its schedule", got, err)
	}
	if err := carol.DeleteSchedule(ctx, sc.ID); err != nil {
		t.Fatalf("the principal deleting its schedule: %v", err)
	}
	if got, err := e.c.Schedules(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after the delete: %v, %v", got, err)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
