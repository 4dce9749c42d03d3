package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Server-Timing metric names on the answers of POST /api/v1/requests (W3C
// Server Timing; dur in milliseconds). A create with ?wait= answers only
// once its request is active (or the wait ends), so a client's own clock
// cannot tell the call from the activation; with these it can:
//
//   - commit: from the handler's start (the caller already authenticated) to
//     the create's durable commit: the request exists and could have been
//     answered from then on.
//   - wait: the time then spent waiting for the request to leave pending
//     (0 without ?wait=, or for a request that is not pending).
//
// A client's total minus wait is what the call would have taken without the
// wait (the bench's "API call", bench/load_test.go).
const (
	timingCommit = "commit"
	timingWait   = "wait"
)

// setCreateTiming sets the Server-Timing header of a create's answer.
func setCreateTiming(h http.Header, commit, wait time.Duration) {
	var b strings.Builder
	b.Grow(40)
	b.WriteString(timingCommit)
	b.WriteString(";dur=")
	b.WriteString(durMS(commit))
	b.WriteString(", ")
	b.WriteString(timingWait)
	b.WriteString(";dur=")
	b.WriteString(durMS(wait))
	h.Set("Server-Timing", b.String())
}

// durMS is d in milliseconds, to the microsecond.
func durMS(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}
