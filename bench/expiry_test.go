//go:build bench

package bench

import (
	"context"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/testlab"
	"github.com/jitgate/jitgate/internal/wire"
)

const (
	expiryTrials    = 12
	expiryGrant     = 2 * time.Second
	expiryPeriod    = 5 * time.Millisecond
	expiryDial      = 3 * time.Millisecond
	expiryAfter     = 300 * time.Millisecond // polling continues this long past the deadline
	targetRefusalMS = 100.0
)

// Expiry is what TestExpiryAfterKill writes to results/expiry.json.
type Expiry struct {
	Trials        int     `json:"trials"`
	GrantSeconds  float64 `json:"grant_s"`
	PollPeriodMS  float64 `json:"poll_period_ms"`
	DialTimeoutMS float64 `json:"dial_timeout_ms"`
	// Per trial, milliseconds relative to the request's deadline (expires_at):
	// the start of the last attempt that connected, and of the first
	// attempt that was dropped with no success after it.
	LastSuccessMS  []float64 `json:"last_success_minus_deadline_ms"`
	FirstRefusalMS []float64 `json:"first_refusal_minus_deadline_ms"`
	// KilledBeforeMS is how long before the deadline both processes were dead.
	KilledBeforeMS []float64 `json:"killed_before_deadline_ms"`
	// SpuriousFailures counts dropped attempts followed by a success (timing
	// noise on the poller's side, not the firewall).
	SpuriousFailures int     `json:"spurious_failures"`
	LastSuccess      Summary `json:"last_success_summary"`
	FirstRefusal     Summary `json:"first_refusal_summary"`
	TargetMS         float64 `json:"target_refused_within_ms"`
	Met              bool    `json:"met"`
}

// TestExpiryAfterKill grants 2 s through the server and the agent, kills
// both with SIGKILL, and polls from the granted source every 5 ms around the
// deadline: the kernel alone must close the grant.
func TestExpiryAfterKill(t *testing.T) {
	l := testlab.New(t)
	serve(t, l.ServerNS, benchPort)
	api := setupJitgate(t, l)
	ctx := context.Background()
	res := Expiry{Trials: expiryTrials, GrantSeconds: expiryGrant.Seconds(), PollPeriodMS: ms(expiryPeriod),
		DialTimeoutMS: ms(expiryDial), TargetMS: targetRefusalMS}
	src := testlab.Client1
	var lastOK, firstNo []time.Duration
	for i := range expiryTrials {
		if i > 0 {
			l.StartServer()
			api = l.APIClient()
			l.StartAgent("")
			waitAgent(t, l, api)
		}
		req, err := api.CreateRequest(ctx, wire.RequestCreate{Target: target, Ports: []string{"2222/tcp"},
			Source: src.String(), Duration: wire.Duration(expiryGrant), Reason: "bench: expiry"})
		if err != nil {
			t.Fatal(err)
		}
		if req, err = api.WaitRequest(ctx, req.ID, "pending", 5*time.Second); err != nil || req.State != "active" {
			t.Fatalf("request %s: %v %s %s; want active", req.ID, err, req.State, req.Message)
		}
		l.Agent.Kill()
		l.Server.Kill()
		deadline := req.ExpiresAt
		res.KilledBeforeMS = append(res.KilledBeforeMS, ms(time.Until(deadline)))

		type attempt struct {
			at time.Time
			ok bool
		}
		var attempts []attempt
		err = l.ClientNS.Do(func() error {
			next := time.Now()
			for next.Before(deadline.Add(expiryAfter)) {
				time.Sleep(time.Until(next))
				at := time.Now()
				err := dialOnce(src, testlab.ServerIP, benchPort, expiryDial)
				if err != nil && !isTimeout(err) {
					return err
				}
				attempts = append(attempts, attempt{at, err == nil})
				next = next.Add(expiryPeriod)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		last := -1
		for j, a := range attempts {
			if a.ok {
				last = j
			}
		}
		if last < 0 || last == len(attempts)-1 {
			t.Fatalf("trial %d: no success, or no refusal after the last success (%d attempts)", i, len(attempts))
		}
		for _, a := range attempts[:last] {
			if !a.ok {
				res.SpuriousFailures++
			}
		}
		lastOK = append(lastOK, attempts[last].at.Sub(deadline))
		firstNo = append(firstNo, attempts[last+1].at.Sub(deadline))
		res.LastSuccessMS = append(res.LastSuccessMS, ms(lastOK[i]))
		res.FirstRefusalMS = append(res.FirstRefusalMS, ms(firstNo[i]))
		t.Logf("trial %2d: killed %.0f ms before the deadline; last success %+.2f ms, first refusal %+.2f ms", i+1,
			res.KilledBeforeMS[i], ms(lastOK[i]), ms(firstNo[i]))
	}
	res.LastSuccess, res.FirstRefusal = summarize(lastOK), summarize(firstNo)
	res.Met = res.FirstRefusal.Max <= targetRefusalMS
	t.Logf("last success - deadline:  %s", res.LastSuccess)
	t.Logf("first refusal - deadline: %s", res.FirstRefusal)
	t.Logf("target: refused within %.0f ms after the deadline: %v (%d spurious failures)", targetRefusalMS, res.Met, res.SpuriousFailures)
	writeResult(t, "expiry", res)
}
