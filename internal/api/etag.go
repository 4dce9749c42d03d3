package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/jitgate/jitgate/internal/policy"
)

// Entity tags of policies. GET /api/v1/targets/{name}/policy answers the
// policy's ETag, and so does each target's policy_etag. A PUT must say
// which policy it replaces: If-Match with that ETag (or "*": whatever
// policy the target has), or If-None-Match: * when the target has none
// yet. Without either it is refused with 428 Precondition Required; when
// the policy is no longer the one named, with 412 Precondition Failed and
// nothing changes. The check runs in the store's write transaction
// (store.PolicyOptions.Precondition), so of two editors who read the same
// policy, the second to save is refused instead of silently undoing the
// first one's change. A dry run (?dry_run=true) needs no precondition and
// answers the ETag of the policy it compared against, which the real PUT
// then names. A DELETE may name the policy it removes with If-Match too
// (the CLI and the console name the one they showed when they asked):
// a policy changed since is not removed (412); without it, any is.
//
// The tag is a strong validator derived from the stored form of the policy
// (a hash of its JSON), so it needs no version column and is the same on
// every replica.

// policyETag is the quoted entity tag of p ("" for no policy).
func policyETag(p *policy.Policy) string {
	if p == nil {
		return ""
	}
	// The stored form: what a read of the database gives back.
	b, err := json.Marshal(p)
	if err != nil {
		return ""
	}
	var stored policy.Policy
	if json.Unmarshal(b, &stored) == nil {
		if b2, err := json.Marshal(stored); err == nil {
			b = b2
		}
	}
	sum := sha256.Sum256(b)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}

var (
	errPreconditionRequired = &inputError{status: http.StatusPreconditionRequired, field: "If-Match",
		msg: "If-Match: say which policy this replaces: send the ETag of GET /api/v1/targets/NAME/policy (or If-None-Match: * when the target has none), so that another editor's change is not overwritten"}
	errNoPolicyToMatch = &inputError{status: http.StatusPreconditionFailed, field: "If-Match",
		msg: "If-Match: the target has no policy any more (someone removed it since you read it); read it again and reapply your change"}
	errPolicyExists = &inputError{status: http.StatusPreconditionFailed, field: "If-None-Match",
		msg: "If-None-Match: the target has a policy now (someone set it since you read it); read it again and reapply your change"}
	errPolicyChanged = &inputError{status: http.StatusPreconditionFailed, field: "If-Match",
		msg: "If-Match: the policy changed since you read it (another editor saved first); read it again and reapply your change"}
)

// policyPrecondition reads If-Match and If-None-Match into the check the
// store runs on the policy it is about to replace. required: a request
// with neither is refused (428); otherwise it is not checked.
func policyPrecondition(r *http.Request, required bool) (func(old *policy.Policy) error, error) {
	im, inm := strings.TrimSpace(r.Header.Get("If-Match")), strings.TrimSpace(r.Header.Get("If-None-Match"))
	switch {
	case im == "" && inm == "":
		if required {
			return nil, errPreconditionRequired
		}
		return nil, nil
	case im != "" && inm != "":
		return nil, badRequest("send either If-Match or If-None-Match, not both")
	case inm != "":
		if inm != "*" {
			return nil, &inputError{status: http.StatusBadRequest, field: "If-None-Match", msg: `If-None-Match: only "*" (the target has no policy yet) is understood here`}
		}
		return func(old *policy.Policy) error {
			if old != nil {
				return errPolicyExists
			}
			return nil
		}, nil
	}
	tags := strings.Split(im, ",")
	for i := range tags {
		tags[i] = strings.TrimSpace(tags[i])
	}
	return func(old *policy.Policy) error {
		if old == nil {
			return errNoPolicyToMatch
		}
		current := policyETag(old)
		for _, t := range tags {
			// Strong comparison (RFC 9110 §13.1.1): a weak tag never matches.
			if t == "*" || t == current {
				return nil
			}
		}
		return errPolicyChanged
	}, nil
}
