package store

import (
	"context"
	"testing"
)

// TestMigration0013 upgrades a database whose failed deliveries kept the
// receiver's answer body: only the status stays; other errors are untouched.
func TestMigration0013(t *testing.T) {
	ctx := context.Background()
	s := remigrate(t, "0013_webhook_error_scrub",
		`INSERT INTO outbox (id, webhook_id, event_id, event, payload, last_error, created_at) VALUES
			(1, 'wh-1', 1, 'request.revoked', '{}', 'the receiver answered 502 Bad Gateway: internal stack trace: db password', 0),
			(2, 'wh-1', 2, 'request.revoked', '{}', 'no answer within 10s', 0),
			(3, 'wh-1', 3, 'request.revoked', '{}', 'the receiver answered 404 Not Found', 0)`,
	)
	want := map[int]string{1: "the receiver answered 502 Bad Gateway", 2: "no answer within 10s", 3: "the receiver answered 404 Not Found"}
	for id, w := range want {
		var got string
		if err := s.db.QueryRowContext(ctx, `SELECT last_error FROM outbox WHERE id = $1`, id).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != w {
			t.Errorf("delivery %d: last_error %q, want %q", id, got, w)
		}
	}
}
