package store

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/jitgate/jitgate/internal/authz"
	"github.com/jitgate/jitgate/internal/policy"
)

// The JSON columns read on every request (a target's labels, addresses and
// policy; a token's groups and limits) are decoded once per distinct text,
// not on every read: decoding the policy was the largest single cost of a
// target read. The memo is keyed by the column's exact text, read in the
// caller's own statement, so it can never answer with anything but what
// json.Unmarshal of that text gives: it caches no decision and no row, only
// the decoding of bytes the caller just read (a changed policy or a revoked
// token is a different text, or no row at all). Every read gets its own
// copy, so callers may change what they get.

// maxDecoded bounds each memo (it is emptied beyond): one entry per target,
// or per distinct token groups/limits text.
const maxDecoded = 1 << 16

// memo maps a key to the text last decoded for it and the result.
type memo[T any] struct {
	mu sync.Mutex
	m  map[string]memoEntry[T]
}

type memoEntry[T any] struct {
	raw string
	v   T
}

// get returns clone(decode(raw)), decoding only when key last held another
// text.
func (m *memo[T]) get(key, raw string, decode func(string) (T, error), clone func(T) T) (T, error) {
	m.mu.Lock()
	e, ok := m.m[key]
	m.mu.Unlock()
	if ok && e.raw == raw {
		return clone(e.v), nil
	}
	v, err := decode(raw)
	if err != nil {
		return v, err
	}
	m.mu.Lock()
	if m.m == nil || len(m.m) >= maxDecoded {
		m.m = map[string]memoEntry[T]{}
	}
	m.m[key] = memoEntry[T]{raw: raw, v: v}
	m.mu.Unlock()
	return clone(v), nil
}

// targetJSON is a target's decoded JSON columns.
type targetJSON struct {
	labels map[string]string
	addrs  []string
	policy *policy.Policy // nil: no policy
}

var decodedTargets memo[targetJSON]

// targetJSONKey joins the three texts of a target (NUL never occurs in
// JSON text).
func targetJSONKey(labels, addrs string, pol *string) string {
	if pol == nil {
		return labels + "\x00" + addrs
	}
	return labels + "\x00" + addrs + "\x00\x00" + *pol
}

// decodeTargetJSON decodes a target's labels, addresses and policy (nil
// pol: none) through the memo.
func decodeTargetJSON(name, labels, addrs string, pol *string) (targetJSON, error) {
	return decodedTargets.get(name, targetJSONKey(labels, addrs, pol), func(string) (targetJSON, error) {
		var d targetJSON
		if err := json.Unmarshal([]byte(labels), &d.labels); err != nil {
			return d, fmt.Errorf("decoding labels of %s: %w", name, err)
		}
		if err := json.Unmarshal([]byte(addrs), &d.addrs); err != nil {
			return d, fmt.Errorf("decoding addresses of %s: %w", name, err)
		}
		if pol != nil {
			d.policy = new(policy.Policy)
			if err := json.Unmarshal([]byte(*pol), d.policy); err != nil {
				return d, fmt.Errorf("decoding policy of %s: %w", name, err)
			}
		}
		return d, nil
	}, func(d targetJSON) targetJSON {
		out := targetJSON{labels: maps.Clone(d.labels), addrs: slices.Clone(d.addrs)}
		if d.policy != nil {
			p := clonePolicy(*d.policy)
			out.policy = &p
		}
		return out
	})
}

// decodedPolicies memoizes the policies read alone (AgentTarget), apart
// from decodedTargets: an entry keyed by the three texts there would be
// replaced by the policy's text alone here, and decoded again on each
// alternation.
var decodedPolicies memo[*policy.Policy]

// decodePolicy decodes target name's policy text through its memo.
func decodePolicy(name, raw string) (*policy.Policy, error) {
	return decodedPolicies.get(name, raw, func(raw string) (*policy.Policy, error) {
		p := new(policy.Policy)
		if err := json.Unmarshal([]byte(raw), p); err != nil {
			return nil, fmt.Errorf("decoding policy of %s: %w", name, err)
		}
		return p, nil
	}, func(p *policy.Policy) *policy.Policy {
		c := clonePolicy(*p)
		return &c
	})
}

// clonePolicy is a deep copy of p.
func clonePolicy(p policy.Policy) policy.Policy {
	if p.Rules == nil {
		return p
	}
	rules := slices.Clone(p.Rules)
	for i := range rules {
		rules[i].AllowedSources = slices.Clone(rules[i].AllowedSources)
		rules[i].Logins = slices.Clone(rules[i].Logins)
		rules[i].Windows = slices.Clone(rules[i].Windows)
		rules[i].ApprovalGroups = slices.Clone(rules[i].ApprovalGroups)
	}
	return policy.Policy{Rules: rules}
}

// tokenJSON is a token's decoded groups and limits.
type tokenJSON struct {
	groups []string
	limits []authz.Grant
}

var decodedTokens memo[tokenJSON]

// decodeTokenJSON decodes a token's groups and limits through the memo,
// keyed by their text alone (many tokens share "null" and "[]").
func decodeTokenJSON(groups, limits string) (tokenJSON, error) {
	key := groups + "\x00" + limits
	return decodedTokens.get(key, key, func(string) (tokenJSON, error) {
		var d tokenJSON
		if err := json.Unmarshal([]byte(groups), &d.groups); err != nil {
			return d, fmt.Errorf("decoding token groups: %w", err)
		}
		if err := json.Unmarshal([]byte(limits), &d.limits); err != nil {
			return d, fmt.Errorf("decoding token limits: %w", err)
		}
		return d, nil
	}, func(d tokenJSON) tokenJSON {
		return tokenJSON{groups: slices.Clone(d.groups), limits: slices.Clone(d.limits)}
	})
}
