package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/store"
)

// TestDurableAnswersCoverAnEmptyAnswer: a handler that writes nothing (no
// status, no body) still answers: net/http sends 200 with the headers it
// set, which may say what it read (an ETag, a revision). durableAnswers
// waits for the sync before that answer too. Before, the empty answer went
// out with a commit's sync held (the test failed on "answered before the
// sync").
//
// A request that only says it upgrades (Upgrade: websocket) to a handler
// that does not hijack is no upgraded connection: its empty answer waits
// too. Before, durableAnswers trusted the request's header and let net/http
// send that answer, with the sync held (the "upgrade header" case failed on
// "answered before the sync").
func TestDurableAnswersCoverAnEmptyAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		upgrade bool
	}{{"plain", false}, {"upgrade header", true}} {
		t.Run(tc.name, func(t *testing.T) { testDurableEmptyAnswer(t, tc.upgrade) })
	}
}

func testDurableEmptyAnswer(t *testing.T, upgrade bool) {
	ctx := context.Background()
	was := store.SetPipelinedDurability(true)
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "j.db"), store.DefaultConfig())
	store.SetPipelinedDurability(was)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	st.SyncWith(func(f *os.File) error {
		once.Do(func() { close(entered) })
		<-release
		return f.Sync()
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	defer releaseOnce()
	wrote := make(chan error, 1)
	go func() {
		_, _, err := st.CreateTarget(ctx, store.Actor{Name: "alice"}, "web-1", nil, time.Now(), time.Hour)
		wrote <- err
	}()
	<-entered

	srv := httptest.NewServer(durableAnswers(st, slog.New(slog.DiscardHandler), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"rev-2"`) // as read, unsynced
	})))
	defer srv.Close()
	waits0 := st.DurableWaits()
	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if upgrade {
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	for deadline := time.Now().Add(10 * time.Second); st.DurableWaits() == waits0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
	}
	select {
	case code := <-answered:
		t.Fatalf("an empty answer went out before the sync: %d", code)
	default:
	}
	releaseOnce()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if code := <-answered; code != http.StatusOK {
		t.Errorf("the empty answer after the sync: %d, want 200", code)
	}
}
