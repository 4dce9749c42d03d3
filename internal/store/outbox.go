package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/jitgate/jitgate/internal/access"
	"github.com/jitgate/jitgate/internal/audit"
	"github.com/jitgate/jitgate/internal/policy"
	"github.com/jitgate/jitgate/internal/random"
)

// The webhook events, each reported from one audit action.
const (
	EventRequestPending   = "request.pending" // awaits approval
	EventRequestApproved  = "request.approved"
	EventRequestDenied    = "request.denied"
	EventRequestActivated = "request.activated"
	EventRequestExpiring  = "request.expiring"
	EventRequestExpired   = "request.expired"
	EventRequestRevoked   = "request.revoked"
	// EventAttackSuspected reports a possible brute force: many blocked
	// attempts from one source on a protected port.
	EventAttackSuspected = "attack.suspected"
	// The bastion's session events.
	EventSessionStarted = "session.started"
	EventSessionEnded   = "session.ended"
	EventSessionKilled  = "session.killed"
	// EventBreakGlassOpened and EventBreakGlassUsed report a break-glass
	// (online, offline): sent to every webhook, whatever it subscribed to.
	EventBreakGlassOpened = "breakglass.opened"
	EventBreakGlassUsed   = "breakglass.used"
)

// mandatoryEvents reach every webhook whatever its event filter: an
// emergency opening must not be filtered out of anyone's view.
var mandatoryEvents = map[string]bool{EventBreakGlassOpened: true, EventBreakGlassUsed: true}

// WebhookEvents lists every event a webhook can subscribe to.
func WebhookEvents() []string {
	return []string{EventRequestPending, EventRequestApproved, EventRequestDenied, EventRequestActivated,
		EventRequestExpiring, EventRequestExpired, EventRequestRevoked, EventAttackSuspected,
		EventSessionStarted, EventSessionEnded, EventSessionKilled, EventBreakGlassOpened, EventBreakGlassUsed}
}

// webhookEventOf maps audit actions to the events they are reported as.
// request.created is reported only when the request awaits approval (an
// automatically approved request is next reported when it is active).
// Every approval is reported, with the count given and required in its
// details.
var webhookEventOf = map[audit.Action]string{
	audit.RequestCreated:      EventRequestPending,
	audit.RequestApproved:     EventRequestApproved,
	audit.RequestDenied:       EventRequestDenied,
	audit.RequestActivated:    EventRequestActivated,
	audit.RequestExpiring:     EventRequestExpiring,
	audit.RequestExpired:      EventRequestExpired,
	audit.RequestRevoked:      EventRequestRevoked,
	audit.BruteForceSuspected: EventAttackSuspected,
	audit.SessionStarted:      EventSessionStarted,
	audit.SessionEnded:        EventSessionEnded,
	audit.SessionKilled:       EventSessionKilled,
	audit.BreakGlassOpened:    EventBreakGlassOpened,
	audit.BreakGlassUsed:      EventBreakGlassUsed,
}

// Webhook formats.
const (
	FormatGeneric = "generic" // the JSON payload notify builds from the event, signed
	FormatSlack   = "slack"   // {"text": "..."}
)

// Webhook is a receiver of notifications. Secret is set only on input to
// CreateWebhook and on claimed deliveries: nothing lists it.
type Webhook struct {
	ID        string
	URL       string
	Format    string
	Secret    string
	Events    []string // empty: all
	CreatedAt time.Time
	CreatedBy string
}

// Wants reports whether the webhook subscribes to event.
func (w Webhook) Wants(event string) bool {
	return len(w.Events) == 0 || slices.Contains(w.Events, event)
}

func newWebhookID() string { return random.ID("wh-", 8) }

// redactURL keeps a URL's scheme and host: the path of many webhook URLs
// (Slack's among them) is itself a secret, and the audit trail is widely read.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host + "/…"
}

// CreateWebhook stores a webhook; the caller has validated it. It receives
// the events committed after it.
func (s *Store) CreateWebhook(ctx context.Context, actor Actor, w Webhook, now time.Time) (Webhook, error) {
	if w.Secret == "" {
		return Webhook{}, errors.New("creating webhook: no signing secret")
	}
	w.ID = newWebhookID()
	if w.Events == nil {
		w.Events = []string{}
	}
	events, _ := json.Marshal(w.Events)
	w.CreatedAt, w.CreatedBy = fromMS(ms(now)), actor.Name
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhooks (id, url, format, secret, events, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			w.ID, w.URL, w.Format, w.Secret, string(events), ms(now), actor.Name); err != nil {
			return fmt.Errorf("inserting webhook: %w", err)
		}
		// The events after it, in this transaction too, are its.
		forgetAuditHead(tx)
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.WebhookCreated,
			Details: map[string]any{"webhook": w.ID, "url": redactURL(w.URL), "format": w.Format, "events": w.Events}})
	})
	if err != nil {
		return Webhook{}, err
	}
	w.Secret = ""
	return w, nil
}

const webhookColumns = `id, url, format, events, created_at, created_by`

func scanWebhook(r scanner) (Webhook, error) {
	var (
		w       Webhook
		events  string
		created int64
	)
	if err := r.Scan(&w.ID, &w.URL, &w.Format, &events, &created, &w.CreatedBy); err != nil {
		return Webhook{}, err
	}
	if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
		return Webhook{}, fmt.Errorf("decoding events of webhook %s: %w", w.ID, err)
	}
	w.CreatedAt = fromMS(created)
	return w, nil
}

// GetWebhook returns one webhook, without its secret.
func (s *Store) GetWebhook(ctx context.Context, id string) (Webhook, error) {
	w, err := scanWebhook(s.db.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Webhook{}, fmt.Errorf("webhook %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Webhook{}, fmt.Errorf("reading webhook %s: %w", id, err)
	}
	return w, nil
}

// ListWebhooks returns every webhook, oldest first, without secrets.
func (s *Store) ListWebhooks(ctx context.Context) ([]Webhook, error) {
	return s.ListWebhooksAfter(ctx, nil, -1)
}

// ListWebhooksAfter is a page of ListWebhooks (keyset paging): at most
// limit webhooks (all for limit < 0) after the one after (nil: from the
// start).
func (s *Store) ListWebhooksAfter(ctx context.Context, after *Webhook, limit int) ([]Webhook, error) {
	q, args := `SELECT `+webhookColumns+` FROM webhooks`, []any{}
	if after != nil {
		args = append(args, ms(after.CreatedAt), after.ID)
		q += ` WHERE (created_at, id) > ($1, $2)`
	}
	q += ` ORDER BY created_at, id`
	if limit >= 0 {
		args = append(args, limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("listing webhooks: %w", err)
	}
	defer rows.Close()
	var out []Webhook
	for rows.Next() {
		w, err := scanWebhook(rows)
		if err != nil {
			return nil, fmt.Errorf("reading webhook: %w", err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// DeleteWebhook removes a webhook and its deliveries, done or not: nothing
// more is sent to it.
func (s *Store) DeleteWebhook(ctx context.Context, actor Actor, id string, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		var u string
		err := tx.QueryRowContext(ctx, `SELECT url FROM webhooks WHERE id = $1`, id).Scan(&u)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("webhook %q: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("reading webhook %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE webhook_id = $1`, id); err != nil {
			return fmt.Errorf("deleting deliveries of webhook %s: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE id = $1`, id); err != nil {
			return fmt.Errorf("deleting webhook %s: %w", id, err)
		}
		forgetAuditHead(tx)
		return s.writeAudit(ctx, tx, audit.Event{At: now, Actor: actor.Name, ClientAddr: actor.ClientAddr, Action: audit.WebhookDeleted,
			Details: map[string]any{"webhook": id, "url": redactURL(u)}})
	})
}

// enqueueWebhooks writes, inside the transaction of audit event id, one
// outbox row per webhook subscribed to the event the action is reported as
// (none for most actions). The rows commit or roll back with the change.
func enqueueWebhooks(ctx context.Context, tx auditTx, id int64, e audit.Event) error {
	event, ok := webhookEventOf[e.Action]
	if !ok {
		return nil
	}
	q, ok := tx.(interface {
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	})
	if !ok {
		return errors.New("enqueueing webhooks: the transaction cannot list webhooks")
	}
	rows, err := q.QueryContext(ctx, `SELECT id, events FROM webhooks ORDER BY id`)
	if err != nil {
		return fmt.Errorf("listing webhooks: %w", err)
	}
	var targets []string
	for rows.Next() {
		var w Webhook
		var events string
		if err := rows.Scan(&w.ID, &events); err != nil {
			rows.Close()
			return fmt.Errorf("reading webhook: %w", err)
		}
		if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
			rows.Close()
			return fmt.Errorf("decoding events of webhook %s: %w", w.ID, err)
		}
		if w.Wants(event) || mandatoryEvents[event] {
			targets = append(targets, w.ID)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("listing webhooks: %w", err)
	}
	if len(targets) == 0 {
		return nil
	}
	snap := WebhookEvent{Event: event, ID: id, At: fromMS(ms(e.At)), Actor: e.Actor, Target: e.Target, RequestID: e.RequestID,
		Reason: e.Reason, Details: e.Details}
	if e.RequestID != "" {
		r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+requestColumns+` FROM requests WHERE id = $1`, e.RequestID))
		if err != nil {
			return fmt.Errorf("reading request %s for its webhooks: %w", e.RequestID, err)
		}
		if e.Action == audit.RequestCreated && r.State != access.PendingApproval {
			return nil
		}
		snap.Request = &WebhookRequest{Requester: r.Requester, Source: r.Source, Ports: r.Ports, Duration: r.Duration,
			Reason: r.Reason, State: r.State, ExpiresAt: r.ExpiresAt, ApprovalsRequired: r.ApprovalsRequired}
	} else if e.Action == audit.RequestCreated {
		return nil
	}
	body, err := encodeSnapshot(snap)
	if err != nil {
		return err
	}
	for _, w := range targets {
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (webhook_id, event_id, event, payload, next_attempt_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $5)`, w, id, event, string(body), ms(e.At)); err != nil {
			return fmt.Errorf("enqueueing %s for webhook %s: %w", event, w, err)
		}
	}
	return nil
}

// WebhookEvent is what the outbox keeps of an event for its webhooks: the
// audit event and, when it concerns a request, the request as it stood
// after the change. It is taken inside the change's transaction, so a
// delivery reports that state even when it is sent much later; the notify
// package turns it into the body each format sends (the store knows no
// payload format).
type WebhookEvent struct {
	Event string `json:"event"` // EventRequestPending, ...
	// ID is the audit event's id: the same for every webhook.
	ID        int64          `json:"id"`
	At        time.Time      `json:"at"`
	Actor     string         `json:"actor"`
	Target    string         `json:"target,omitempty"`
	RequestID string         `json:"request_id,omitempty"`
	Reason    string         `json:"reason,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
	// Request is nil for events that concern no request.
	Request *WebhookRequest `json:"request,omitempty"`
}

// WebhookRequest is what a WebhookEvent keeps of its request.
type WebhookRequest struct {
	Requester         string        `json:"requester"`
	Source            netip.Prefix  `json:"source"`
	Ports             []policy.Port `json:"ports"`
	Duration          time.Duration `json:"duration_ns"`
	Reason            string        `json:"reason,omitempty"`
	State             access.State  `json:"state"`
	ExpiresAt         time.Time     `json:"expires_at"`
	ApprovalsRequired int           `json:"approvals_required,omitempty"`
}

// snapshotVersion marks the outbox rows holding a WebhookEvent (the JSON
// above, with "snapshot" set). Rows written before hold the generic body
// the store used to build, and are delivered as they are (Legacy).
const snapshotVersion = 1

type storedSnapshot struct {
	Snapshot int `json:"snapshot"`
	WebhookEvent
}

func encodeSnapshot(e WebhookEvent) (string, error) {
	b, err := json.Marshal(storedSnapshot{Snapshot: snapshotVersion, WebhookEvent: e})
	if err != nil {
		return "", fmt.Errorf("encoding webhook event %d: %w", e.ID, err)
	}
	return string(b), nil
}

func decodeSnapshot(stored string) (WebhookEvent, []byte, error) {
	var v struct {
		Snapshot int `json:"snapshot"`
	}
	if err := json.Unmarshal([]byte(stored), &v); err != nil {
		return WebhookEvent{}, nil, fmt.Errorf("decoding webhook event: %w", err)
	}
	switch v.Snapshot {
	case 0:
		return WebhookEvent{}, []byte(stored), nil
	case snapshotVersion:
		var s storedSnapshot
		if err := json.Unmarshal([]byte(stored), &s); err != nil {
			return WebhookEvent{}, nil, fmt.Errorf("decoding webhook event: %w", err)
		}
		return s.WebhookEvent, nil, nil
	}
	return WebhookEvent{}, nil, fmt.Errorf("webhook event of unknown version %d", v.Snapshot)
}

// OutboxItem is a claimed delivery: what to send where, and how to sign it.
type OutboxItem struct {
	ID        int64
	WebhookID string
	URL       string
	Format    string
	Secret    string
	EventID   int64
	Event     string
	// Snapshot is the event as it stood when the change committed (it was
	// taken in that transaction); the notify package builds the body from
	// it. Zero when Legacy is set.
	Snapshot WebhookEvent
	// Legacy is the generic body of a delivery enqueued before the outbox
	// kept snapshots (the store then built the payload itself), to be sent
	// as it is; nil otherwise.
	Legacy []byte
	// Attempt numbers this attempt, from 1.
	Attempt   int
	CreatedAt time.Time
}

// ClaimOutbox claims the deliveries due at now, at most limit per webhook
// and none of the webhooks in skip (those the caller is busy with), oldest
// due first. A claimed delivery is not due again until now+lease, so a
// deliverer that crashes mid-delivery has it re-delivered after the lease:
// deliveries are at least once. When nothing is due it does not write.
func (s *Store) ClaimOutbox(ctx context.Context, now time.Time, lease time.Duration, limit int, skip ...string) ([]OutboxItem, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM outbox WHERE next_attempt_at <= $1 LIMIT 1`, ms(now)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking for due deliveries: %w", err)
	}
	args := []any{ms(now), limit}
	cond := ""
	if len(skip) > 0 {
		ph := make([]string, len(skip))
		for i, w := range skip {
			args = append(args, w)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		cond = " AND webhook_id NOT IN (" + strings.Join(ph, ", ") + ")"
	}
	var out []OutboxItem
	err = s.tx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, `SELECT o.id, o.webhook_id, w.url, w.format, w.secret, o.event_id, o.event, o.payload, o.attempts, o.created_at
			FROM (SELECT id, webhook_id, event_id, event, payload, attempts, created_at, next_attempt_at,
				row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at, id) AS rn
				FROM outbox WHERE next_attempt_at <= $1`+cond+`) o
			JOIN webhooks w ON w.id = o.webhook_id
			WHERE o.rn <= $2 ORDER BY o.next_attempt_at, o.id`, args...)
		if err != nil {
			return fmt.Errorf("selecting due deliveries: %w", err)
		}
		for rows.Next() {
			var (
				it       OutboxItem
				payload  string
				attempts int
				created  int64
			)
			if err := rows.Scan(&it.ID, &it.WebhookID, &it.URL, &it.Format, &it.Secret, &it.EventID, &it.Event, &payload, &attempts, &created); err != nil {
				rows.Close()
				return fmt.Errorf("reading due delivery: %w", err)
			}
			if it.Snapshot, it.Legacy, err = decodeSnapshot(payload); err != nil {
				rows.Close()
				return fmt.Errorf("reading delivery %d: %w", it.ID, err)
			}
			it.Attempt, it.CreatedAt = attempts+1, fromMS(created)
			out = append(out, it)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("selecting due deliveries: %w", err)
		}
		for _, it := range out {
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET next_attempt_at = $1, attempts = attempts + 1 WHERE id = $2`,
				ms(now.Add(lease)), it.ID); err != nil {
				return fmt.Errorf("claiming delivery %d: %w", it.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AckOutbox records that delivery id arrived; it is never sent again. A
// delivery deleted meanwhile (with its webhook) is ErrNotFound.
func (s *Store) AckOutbox(ctx context.Context, id int64, now time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE outbox SET delivered_at = $1, next_attempt_at = NULL WHERE id = $2`, ms(now), id)
		if err != nil {
			return fmt.Errorf("recording delivery %d: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("delivery %d: %w", id, ErrNotFound)
		}
		return nil
	})
}

// maxErrorLen bounds the stored error of a failed attempt.
const maxErrorLen = 500

// FailOutbox records a failed attempt of delivery id: it is due again at
// next, or, when next is zero, never (given up; the row stays, failed). A
// delivery that arrived meanwhile (a retry after a lease ran out) stays
// delivered.
func (s *Store) FailOutbox(ctx context.Context, id int64, errMsg string, next time.Time) error {
	if len(errMsg) > maxErrorLen {
		errMsg = errMsg[:maxErrorLen] + "…"
	}
	var at sql.NullInt64
	if !next.IsZero() {
		at = sql.NullInt64{Int64: ms(next), Valid: true}
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE outbox SET last_error = $1, next_attempt_at = $2 WHERE id = $3 AND delivered_at IS NULL`, errMsg, at, id)
		if err != nil {
			return fmt.Errorf("recording failed delivery %d: %w", id, err)
		}
		return nil
	})
}

// NextOutboxAttempt returns when the earliest undelivered delivery is due
// (claimed ones: when their lease ends), or zero when none is.
func (s *Store) NextOutboxAttempt(ctx context.Context) (time.Time, error) {
	var next sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT min(next_attempt_at) FROM outbox`).Scan(&next); err != nil {
		return time.Time{}, fmt.Errorf("finding next delivery: %w", err)
	}
	if !next.Valid {
		return time.Time{}, nil
	}
	return fromMS(next.Int64), nil
}

// PruneOutbox deletes at most limit deliveries that are done (delivered,
// or given up) and were created before before, oldest first, and returns
// how many. Deliveries still due are never deleted. Like PruneExpiredTokens
// it works in bounded batches: the caller repeats while a full batch came
// back.
func (s *Store) PruneOutbox(ctx context.Context, before time.Time, limit int) (int64, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE id IN
			(SELECT id FROM outbox WHERE next_attempt_at IS NULL AND created_at < $1 ORDER BY id LIMIT $2)`, ms(before), limit)
		if err != nil {
			return fmt.Errorf("pruning deliveries: %w", err)
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Delivery states.
const (
	DeliveryPending   = "pending"   // not tried yet
	DeliveryRetrying  = "retrying"  // tried, due again (or being tried)
	DeliveryDelivered = "delivered" // arrived
	DeliveryFailed    = "failed"    // given up
)

// Delivery is one event's delivery to one webhook, as listed.
type Delivery struct {
	ID            int64
	WebhookID     string
	EventID       int64
	Event         string
	State         string
	Attempts      int
	NextAttemptAt *time.Time
	LastError     string
	DeliveredAt   *time.Time
	CreatedAt     time.Time
}

// ListDeliveries returns the newest deliveries of a webhook, at most limit.
func (s *Store) ListDeliveries(ctx context.Context, webhookID string, limit int) ([]Delivery, error) {
	return s.ListDeliveriesBefore(ctx, webhookID, 0, limit)
}

// ListDeliveriesBefore is a page of ListDeliveries (keyset paging): the
// deliveries with an id below before (0: from the newest).
func (s *Store) ListDeliveriesBefore(ctx context.Context, webhookID string, before int64, limit int) ([]Delivery, error) {
	if _, err := s.GetWebhook(ctx, webhookID); err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 1001 { // the API asks a page of at most 1,000 and one more
		limit = 100
	}
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, webhook_id, event_id, event, attempts, next_attempt_at, last_error, delivered_at, created_at
		FROM outbox WHERE webhook_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`, webhookID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("listing deliveries of webhook %s: %w", webhookID, err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		var (
			d               Delivery
			next, delivered sql.NullInt64
			created         int64
		)
		if err := rows.Scan(&d.ID, &d.WebhookID, &d.EventID, &d.Event, &d.Attempts, &next, &d.LastError, &delivered, &created); err != nil {
			return nil, fmt.Errorf("reading delivery: %w", err)
		}
		d.NextAttemptAt, d.DeliveredAt, d.CreatedAt = fromNullMS(next), fromNullMS(delivered), fromMS(created)
		switch {
		case d.DeliveredAt != nil:
			d.State = DeliveryDelivered
		case d.NextAttemptAt == nil:
			d.State = DeliveryFailed
		case d.Attempts == 0:
			d.State = DeliveryPending
		default:
			d.State = DeliveryRetrying
		}
		out = append(out, d)
	}
	return out, rows.Err()
}
