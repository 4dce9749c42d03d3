package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

func TestWebhooks(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// A non-admin (an approver everywhere) may not touch webhooks.
	bob := e.approverEverywhere(t, "bob")
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/api/v1/webhooks", ""},
		{"POST", "/api/v1/webhooks", `{"url": "https://hooks.example.com/x"}`},
		{"DELETE", "/api/v1/webhooks/wh-x", ""},
		{"GET", "/api/v1/webhooks/wh-x/deliveries", ""},
	} {
		if code, body := e.raw(t, c.method, c.path, bob, "application/json", strings.NewReader(c.body)); code != http.StatusForbidden {
			t.Errorf("%s %s as an approver: %d, want 403 (%s)", c.method, c.path, code, body)
		}
	}

	// Input is validated, naming the field.
	for _, c := range []struct {
		in    wire.WebhookCreate
		field string
	}{
		{wire.WebhookCreate{URL: "ftp://hooks.example.com/x"}, "url"},
		{wire.WebhookCreate{URL: "https:///x"}, "url"},
		{wire.WebhookCreate{URL: "hooks.example.com/x"}, "url"},
		{wire.WebhookCreate{}, "url"},
		{wire.WebhookCreate{URL: "https://hooks.example.com/x", Format: "teams"}, "format"},
		{wire.WebhookCreate{URL: "https://hooks.example.com/x", Events: []string{"request.activated", "request.exploded"}}, "events[1]"},
		{wire.WebhookCreate{URL: "https://hooks.example.com/x", Secret: "short"}, "secret"},
	} {
		_, err := e.c.CreateWebhook(ctx, c.in)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusUnprocessableEntity || ae.Body.Field != c.field {
			t.Errorf("CreateWebhook(%+v) = %v, want 422 on %s", c.in, err, c.field)
		}
	}

	created, err := e.c.CreateWebhook(ctx, wire.WebhookCreate{URL: "https://hooks.example.com/x", Format: "slack", Events: []string{"request.activated", "request.activated"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(created.Secret) < 32 || created.Webhook.Format != "slack" || len(created.Webhook.Events) != 1 || created.Webhook.CreatedBy != "alice" {
		t.Errorf("created = %+v, want a generated secret, slack, one event, by alice", created)
	}
	given, err := e.c.CreateWebhook(ctx, wire.WebhookCreate{URL: "http://192.0.2.1:9000/hook", Secret: "my-own-secret-123456"})
	if err != nil || given.Secret != "my-own-secret-123456" || given.Webhook.Format != "generic" || len(given.Webhook.Events) != 0 {
		t.Fatalf("created with a secret = %+v, %v", given, err)
	}

	// The secret is never shown again.
	code, body := e.raw(t, "GET", "/api/v1/webhooks", e.admin, "", nil)
	if code != http.StatusOK || bytes.Contains(body, []byte(created.Secret)) || bytes.Contains(body, []byte("my-own-secret")) || bytes.Contains(body, []byte(`"secret"`)) {
		t.Fatalf("GET /api/v1/webhooks = %d %s: want the list without secrets", code, body)
	}
	var list []wire.Webhook
	if err := json.Unmarshal(body, &list); err != nil || len(list) != 2 {
		t.Fatalf("list = %s, %v", body, err)
	}

	// A reported event shows up as a pending delivery.
	e.addTarget(t, "web-01", "192.0.2.5")
	e.setPolicy(t, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22, MaxDuration: wire.Duration(time.Hour), Approval: &wire.Approval{Mode: "manual", Approvals: 1}}}})
	if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: "198.51.100.7", Duration: wire.Duration(time.Hour), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	ds, err := e.c.WebhookDeliveries(ctx, given.Webhook.ID, 10)
	if err != nil || len(ds) != 1 || ds[0].Event != "request.pending" || ds[0].State != "pending" {
		t.Fatalf("deliveries of the all-events webhook = %+v, %v", ds, err)
	}
	if ds, err := e.c.WebhookDeliveries(ctx, created.Webhook.ID, 10); err != nil || len(ds) != 0 {
		t.Fatalf("deliveries of the activated-only webhook = %+v, %v", ds, err)
	}
	if code, _ := e.raw(t, "GET", "/api/v1/webhooks/"+given.Webhook.ID+"/deliveries?limit=0", e.admin, "", nil); code != http.StatusUnprocessableEntity {
		t.Errorf("limit=0: %d, want 422", code)
	}

	if err := e.c.DeleteWebhook(ctx, created.Webhook.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.c.DeleteWebhook(ctx, created.Webhook.ID); client.StatusOf(err) != http.StatusNotFound {
		t.Errorf("deleting twice: %v, want 404", err)
	}
	if _, err := e.c.WebhookDeliveries(ctx, created.Webhook.ID, 10); client.StatusOf(err) != http.StatusNotFound {
		t.Errorf("deliveries of a removed webhook: %v, want 404", err)
	}
}

// TestWebhookPrivateURL: a webhook aimed at loopback, link-local or private
// addresses (or localhost) is refused, naming the field and the flag, unless
// the server allows private destinations.
func TestWebhookPrivateURL(t *testing.T) {
	urls := []string{"http://127.0.0.1:8080/hook", "http://[::1]/hook", "https://localhost/hook",
		"http://169.254.169.254/latest/meta-data/", "https://10.0.0.7/hook", "http://[fe80::1]/x", "http://0.0.0.0/x"}
	e := newEnv(t)
	for _, u := range urls {
		code, body := e.raw(t, "POST", "/api/v1/webhooks", e.admin, "application/json", strings.NewReader(`{"url": "`+u+`"}`))
		var we wire.Error
		_ = json.Unmarshal(body, &we)
		if code != http.StatusUnprocessableEntity || we.Field != "url" || !strings.Contains(we.Error, "--webhook-allow-private") {
			t.Errorf("POST webhook %s = %d %s, want 422 on url naming --webhook-allow-private", u, code, body)
		}
	}
	if hs, err := e.c.Webhooks(context.Background()); err != nil || len(hs) != 0 {
		t.Errorf("webhooks after refusals = %+v, %v", hs, err)
	}
	allowed := newEnvWith(t, func(d *api.Deps) { d.WebhookAllowPrivate = true })
	for _, u := range urls {
		if _, err := allowed.c.CreateWebhook(context.Background(), wire.WebhookCreate{URL: u}); err != nil {
			t.Errorf("with private destinations allowed, %s: %v", u, err)
		}
	}
}
