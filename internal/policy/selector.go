package policy

import (
	"fmt"
	"sort"
	"strings"

	"github.com/jitgate/jitgate/internal/text"
)

// Selector picks targets by their labels, as kubectl's equality-based label
// selectors do: "env=prod,team=db" matches a target carrying both labels;
// "env!=prod" one whose env label is missing or another value. Every
// requirement must hold. The one parser of the API's ?selector= parameter,
// the policy enable body and the CLI's -l flag.
type Selector []Requirement

// Requirement is one KEY=VALUE (or KEY!=VALUE) of a Selector.
// MaxSelectorTerms bounds a selector's requirements: a listing matches
// every row it reads against each of them, so an unbounded selector (an
// 880 KB query of always-true terms) multiplied the cost of a listing by
// a hundred for anyone with a token.
const MaxSelectorTerms = 64

type Requirement struct {
	Key, Value string
	// Not inverts the match: the label is absent or has another value.
	Not bool
}

// ParseSelector reads KEY=VALUE[,KEY!=VALUE...] ("==" is "="). An empty
// string is the selector that matches everything.
func ParseSelector(s string) (Selector, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if err := text.Check(s); err != nil {
		return nil, &FieldError{"selector", err.Error()}
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxSelectorTerms {
		return nil, &FieldError{"selector", fmt.Sprintf("at most %d requirements (got %d)", MaxSelectorTerms, len(parts))}
	}
	var sel Selector
	for _, part := range parts {
		part = strings.TrimSpace(part)
		var r Requirement
		var ok bool
		if k, v, found := strings.Cut(part, "!="); found {
			r, ok = Requirement{Key: k, Value: v, Not: true}, true
		} else if k, v, found := strings.Cut(part, "=="); found {
			r, ok = Requirement{Key: k, Value: v}, true
		} else if k, v, found := strings.Cut(part, "="); found {
			r, ok = Requirement{Key: k, Value: v}, true
		}
		r.Key, r.Value = strings.TrimSpace(r.Key), strings.TrimSpace(r.Value)
		if !ok || r.Key == "" || r.Value == "" || strings.ContainsAny(r.Value, "=! ") {
			return nil, &FieldError{"selector", fmt.Sprintf("%q: use KEY=VALUE[,KEY=VALUE...] (or KEY!=VALUE), such as env=prod,team=db", s)}
		}
		if !labelKey.MatchString(r.Key) {
			return nil, &FieldError{"selector", fmt.Sprintf("key %q must be 1-63 lowercase letters, digits, '.', '_', '/', '-'", r.Key)}
		}
		if text.Len(r.Value) > 63 {
			return nil, &FieldError{"selector", fmt.Sprintf("the value of %q is longer than a label's 63 characters", r.Key)}
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		v, ok := labels[r.Key]
		if (ok && v == r.Value) == r.Not {
			return false
		}
	}
	return true
}

// String is the selector in its canonical form, requirements sorted.
func (s Selector) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		op := "="
		if r.Not {
			op = "!="
		}
		parts[i] = r.Key + op + r.Value
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
