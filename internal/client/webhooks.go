package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/jitgate/jitgate/internal/wire"
)

// CreateWebhook adds a webhook; the signing secret is in the answer, once.
func (c *Client) CreateWebhook(ctx context.Context, in wire.WebhookCreate) (wire.WebhookCreated, error) {
	var out wire.WebhookCreated
	err := c.do(ctx, http.MethodPost, "/api/v1/webhooks", nil, in, &out)
	return out, err
}

// Webhooks lists the webhooks.
func (c *Client) Webhooks(ctx context.Context) ([]wire.Webhook, error) {
	return listAll[wire.Webhook](ctx, c, "/api/v1/webhooks", nil)
}

// DeleteWebhook removes a webhook and its deliveries.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/webhooks/"+url.PathEscape(id), nil, nil, nil)
}

// WebhookDeliveries lists a webhook's recent deliveries, newest first.
func (c *Client) WebhookDeliveries(ctx context.Context, id string, limit int) ([]wire.WebhookDelivery, error) {
	var q url.Values
	if limit > 0 {
		q = url.Values{"limit": {itoa(int64(limit))}}
	}
	var out []wire.WebhookDelivery
	err := c.do(ctx, http.MethodGet, "/api/v1/webhooks/"+url.PathEscape(id)+"/deliveries", q, nil, &out)
	return out, err
}
