package api_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/jitgate/jitgate/internal/api"
	"github.com/jitgate/jitgate/internal/client"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestCreateWaitFaultAnswersTheCreated: a create that waits
// (POST /api/v1/requests?wait=) has committed its request before the wait;
// a database failure during the wait (here the requests table made
// unreadable behind the server, a real SQLite error) must not turn the
// answer into a 5xx, which says "not done, send it again": the person (or a
// script) retrying would create a second request and a second grant. The
// answer is 201 with the request as last read (pending), whose id the
// client follows. Before, the answer was 500 and the request existed.
func TestCreateWaitFaultAnswersTheCreated(t *testing.T) {
	var hub *api.Hub
	e := newEnvWith(t, func(d *api.Deps) { hub = d.Hub })
	ctx := context.Background()
	e.addTarget(t, "web-01") // its agent never reports: the request stays pending
	e.setPolicy(t, "web-01", sshPolicy())
	db, err := sql.Open("sqlite", e.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	broke := make(chan error, 1)
	go func() {
		if err := waiting(hub, "web-01"); err != nil {
			broke <- err
			return
		}
		_, err := db.ExecContext(ctx, `ALTER TABLE requests RENAME TO requests_away`)
		broke <- err
	}()
	body := `{"target":"web-01","ports":["22"],"source":"198.51.100.7","duration":"5m","reason":"fault during the wait"}`
	status, b := e.raw(t, http.MethodPost, "/api/v1/requests?wait=2s", e.admin, "application/json", strings.NewReader(body))
	if err := <-broke; err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE requests_away RENAME TO requests`); err != nil {
		t.Fatal(err)
	}
	var got wire.Request
	if status != http.StatusCreated || json.Unmarshal(b, &got) != nil || got.ID == "" || got.State != "pending" {
		t.Fatalf("create with wait, the database failing during the wait: %d %s; want 201 with the created request, pending", status, b)
	}
	rs, err := e.c.Requests(ctx, client.RequestFilter{Target: "web-01"})
	if err != nil || len(rs) != 1 || rs[0].ID != got.ID {
		t.Fatalf("requests after the create: %+v, %v; want the one answered", rs, err)
	}
}
