package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/wire"
)

// BenchmarkCreateRequest measures the API call of a request, through HTTP,
// authorization, policy evaluation and the store's transaction (with its
// audit event), against a real SQLite file.
func BenchmarkCreateRequest(b *testing.B) {
	e := newEnv(b)
	e.addTarget(b, "web-01")
	e.setPolicy(b, "web-01", wire.Policy{Rules: []wire.PortRule{{Port: 22}}})
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		src := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if _, err := e.c.CreateRequest(ctx, wire.RequestCreate{Target: "web-01", Ports: []string{"22"}, Source: src, Duration: wire.Duration(time.Hour), Reason: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
}
