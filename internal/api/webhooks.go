package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/notify"
	"github.com/jitgate/jitgate/internal/random"
	"github.com/jitgate/jitgate/internal/store"
	"github.com/jitgate/jitgate/internal/text"
	"github.com/jitgate/jitgate/internal/wire"
)

// Bounds of a webhook's input.
const (
	maxWebhookURL    = 2048
	minWebhookSecret = 16
	maxWebhookSecret = 256
)

func toWireWebhook(w store.Webhook) wire.Webhook {
	events := w.Events
	if events == nil {
		events = []string{}
	}
	return wire.Webhook{ID: w.ID, URL: w.URL, Format: w.Format, Events: events, CreatedAt: w.CreatedAt, CreatedBy: w.CreatedBy}
}

// parseWebhook validates a new webhook and fills the defaults (format
// generic, a generated secret).
// A URL whose host is a literal non-public address (or localhost) is
// refused unless allowPrivate; names are checked again when each delivery
// dials.
func parseWebhook(in wire.WebhookCreate, allowPrivate bool) (store.Webhook, error) {
	raw := strings.TrimSpace(in.URL)
	if raw == "" {
		return store.Webhook{}, invalidField("url", "required")
	}
	if err := text.CheckLen(raw, maxWebhookURL); err != nil {
		return store.Webhook{}, invalidField("url", "%v", err)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return store.Webhook{}, invalidField("url", "%q must be an http:// or https:// URL with a host", raw)
	}
	if u.Fragment != "" {
		return store.Webhook{}, invalidField("url", "must not have a #fragment")
	}
	if err := notify.CheckURL(u, allowPrivate); err != nil {
		return store.Webhook{}, invalidField("url", "%v", err)
	}
	w := store.Webhook{URL: u.String(), Format: in.Format, Secret: in.Secret, Events: []string{}}
	switch w.Format {
	case "":
		w.Format = store.FormatGeneric
	case store.FormatGeneric, store.FormatSlack:
	default:
		return store.Webhook{}, invalidField("format", "%q: use generic or slack", in.Format)
	}
	known := store.WebhookEvents()
	for i, e := range in.Events {
		e = strings.TrimSpace(e)
		if !slices.Contains(known, e) {
			return store.Webhook{}, invalidField(fmt.Sprintf("events[%d]", i), "unknown event %q: use %s", e, strings.Join(known, ", "))
		}
		if !slices.Contains(w.Events, e) {
			w.Events = append(w.Events, e)
		}
	}
	switch {
	case w.Secret == "":
		w.Secret = "whsec_" + random.Secret()
	case text.Len(w.Secret) < minWebhookSecret || text.Len(w.Secret) > maxWebhookSecret:
		return store.Webhook{}, invalidField("secret", "must be %d to %d characters", minWebhookSecret, maxWebhookSecret)
	case strings.TrimSpace(w.Secret) != w.Secret:
		return store.Webhook{}, invalidField("secret", "must not begin or end with white space")
	}
	return w, nil
}

// createWebhook adds a webhook; the answer carries its secret, once.
func (a *api) createWebhook(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	var in wire.WebhookCreate
	if err := decode(w, r, &in); err != nil {
		return err
	}
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	hook, err := parseWebhook(in, a.WebhookAllowPrivate)
	if err != nil {
		return err
	}
	secret := hook.Secret
	if hook, err = a.Store.CreateWebhook(r.Context(), a.actor(r, p), hook, a.Now()); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, wire.WebhookCreated{Webhook: toWireWebhook(hook), Secret: secret})
	return nil
}

func (a *api) listWebhooks(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	// Keyset pages in creation order (paging.go).
	q := r.URL.Query()
	limit, err := pageLimit(q, defaultListPage, maxListPage)
	if err != nil {
		return err
	}
	var after *store.Webhook
	if ok, err := a.readCursor(r, p, &after); err != nil {
		return err
	} else if !ok {
		after = nil
	}
	hooks, err := a.Store.ListWebhooksAfter(r.Context(), after, limit+1)
	if err != nil {
		return err
	}
	if len(hooks) > limit {
		hooks = hooks[:limit]
		last := hooks[limit-1]
		if err := a.setNextCursor(w, r, p, store.Webhook{ID: last.ID, CreatedAt: last.CreatedAt}); err != nil {
			return err
		}
	}
	out := make([]wire.Webhook, len(hooks))
	for i, h := range hooks {
		out[i] = toWireWebhook(h)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) deleteWebhook(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	if err := a.Store.DeleteWebhook(r.Context(), a.actor(r, p), r.PathValue("id"), a.Now()); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// listDeliveries shows a webhook's recent deliveries, newest first
// (?limit=, default 100, at most 1000).
func (a *api) listDeliveries(w http.ResponseWriter, r *http.Request, p store.Principal) error {
	if err := a.require(r.Context(), p, authz.ManageAccess, nil); err != nil {
		return err
	}
	// Newest first, keyset pages by id: the next link continues with
	// ?before= the page's last delivery.
	q := r.URL.Query()
	limit, err := pageLimit(q, 100, 1000)
	if err != nil {
		return err
	}
	var before int64
	if s := q.Get("before"); s != "" {
		if before, err = strconv.ParseInt(s, 10, 64); err != nil || before < 1 {
			return invalidField("before", "must be a delivery id")
		}
	}
	ds, err := a.Store.ListDeliveriesBefore(r.Context(), r.PathValue("id"), before, limit+1)
	if err != nil {
		return err
	}
	if len(ds) > limit {
		ds = ds[:limit]
		setNext(w, r, "before", strconv.FormatInt(ds[limit-1].ID, 10))
	}
	out := make([]wire.WebhookDelivery, len(ds))
	for i, d := range ds {
		out[i] = wire.WebhookDelivery{ID: d.ID, EventID: d.EventID, Event: d.Event, State: d.State, Attempts: d.Attempts,
			NextAttemptAt: d.NextAttemptAt, LastError: d.LastError, DeliveredAt: d.DeliveredAt, CreatedAt: d.CreatedAt}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
