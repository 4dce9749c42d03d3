package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/jitgate/jitgate/internal/wire"
)

func (a *app) newWebhookCmd() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "webhook",
		Short: "Send notifications of requests to webhooks (admin)",
		Long: `Webhooks receive an HTTP POST when a request awaits approval, is approved,
denied, activated, about to expire, expired or revoked, and when an attack is
suspected (many blocked attempts from one source). Requests are signed the
Standard Webhooks way: webhook-signature is "v1," and the base64 HMAC-SHA256,
keyed with the webhook's secret, of "webhook-id.webhook-timestamp.body"
(docs/webhooks.md shows how to verify). The slack format is a one-line
{"text": ...} for Slack-compatible incoming webhooks. Deliveries are retried
with backoff for 24 hours, and may arrive more than once: de-duplicate on the
webhook-id header. URLs on loopback, link-local and private addresses are
refused unless the server runs with --webhook-allow-private.`,
	})
	a.addConnFlags(cmd)
	var (
		format string
		secret string
		events []string
		limit  int
	)
	add := &cobra.Command{
		Use:   "add URL [--format generic|slack] [--secret S] [--event E ...]",
		Short: "Add a webhook; a generated signing secret is shown once",
		Example: `  jitgate webhook add https://hooks.example.com/jitgate --event request.pending --event request.activated
  jitgate webhook add https://hooks.slack.com/services/T000/B000/XXXX --format slack`,
		Args: oneArg("URL"),
	}
	add.Flags().StringVar(&format, "format", "generic", "body format: generic (signed JSON) or slack")
	add.Flags().StringVar(&secret, "secret", "", "signing secret (16 to 256 characters); default: generated")
	add.Flags().StringArrayVar(&events, "event", nil, "send only this event (repeatable): request.pending, request.approved, request.denied, request.activated, request.expiring, request.expired, request.revoked; default: all")
	add.RunE = a.runE(func(ctx context.Context, args []string) error {
		if format != "generic" && format != "slack" {
			return usagef("--format %q: must be generic or slack", format)
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		out, err := c.CreateWebhook(ctx, wire.WebhookCreate{URL: args[0], Format: format, Secret: secret, Events: events})
		if err != nil {
			return err
		}
		if a.jsonOut() {
			if secret != "" {
				out.Secret = "" // the caller has it; do not echo it into logs
			}
			return a.printJSON(out)
		}
		fmt.Fprintf(a.stdout, "webhook %s added: %s (%s, %s)\n", esc(out.Webhook.ID), esc(out.Webhook.URL), esc(out.Webhook.Format), esc(eventList(out.Webhook.Events)))
		if secret == "" {
			fmt.Fprintf(a.stdout, "\nSigning secret (shown once):\n  %s\n", out.Secret)
		}
		return nil
	})
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List webhooks", Args: noArgs}
	list.RunE = a.runE(func(ctx context.Context, _ []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		hooks, err := c.Webhooks(ctx)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(hooks))
		}
		tw := a.table("ID", "FORMAT", "EVENTS", "URL", "CREATED", "BY")
		for _, h := range hooks {
			row(tw, h.ID, h.Format, eventList(h.Events), h.URL, fmtTime(h.CreatedAt), h.CreatedBy)
		}
		return tw.Flush()
	})
	remove := &cobra.Command{Use: "remove ID [--yes] [--dry-run]", Aliases: []string{"rm"}, Short: "Remove a webhook and its pending deliveries", Args: oneArg("webhook ID")}
	var cf confirmFlags
	addConfirmFlags(remove, &cf)
	remove.RunE = a.runE(func(ctx context.Context, args []string) error {
		c, _, err := a.client()
		if err != nil {
			return err
		}
		if done, err := a.guard(cf, "remove webhook "+args[0]+" and its pending deliveries"); done || err != nil {
			return err
		}
		if err := c.DeleteWebhook(ctx, args[0]); err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(map[string]any{"id": args[0], "removed": true})
		}
		fmt.Fprintf(a.stdout, "webhook %s removed\n", args[0])
		return nil
	})
	deliveries := &cobra.Command{Use: "deliveries ID [--limit N]", Short: "Show a webhook's recent deliveries, newest first", Args: oneArg("webhook ID")}
	deliveries.Flags().IntVar(&limit, "limit", 20, "how many (1 to 1000)")
	deliveries.RunE = a.runE(func(ctx context.Context, args []string) error {
		if limit < 1 || limit > 1000 {
			return usagef("--limit %d: must be 1 to 1000", limit)
		}
		c, _, err := a.client()
		if err != nil {
			return err
		}
		ds, err := c.WebhookDeliveries(ctx, args[0], limit)
		if err != nil {
			return err
		}
		if a.jsonOut() {
			return a.printJSON(nonNil(ds))
		}
		tw := a.table("DELIVERY", "EVENT", "STATE", "ATTEMPTS", "CREATED", "NEXT ATTEMPT", "LAST ERROR")
		for _, d := range ds {
			next := ""
			if d.NextAttemptAt != nil && d.State != "delivered" {
				next = fmtTime(*d.NextAttemptAt)
			}
			row(tw, strconv.FormatInt(d.ID, 10), d.Event, d.State, strconv.Itoa(d.Attempts), fmtTime(d.CreatedAt), next, d.LastError)
		}
		return tw.Flush()
	})
	cmd.AddCommand(add, list, remove, deliveries)
	return cmd
}

// eventList renders a webhook's events; none means all.
func eventList(events []string) string {
	if len(events) == 0 {
		return "all events"
	}
	return strings.Join(events, ",")
}
