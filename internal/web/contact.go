package web

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/jitgate/jitgate/internal/text"
)

// maxContact bounds the configured contact (characters).
const maxContact = 200

// Contact is whom people signed in without a role are told to ask, besides
// the admins the API names (server flag --contact): an e-mail address, an
// http(s) URL, or a line of text such as "the service desk, extension 4242".
type Contact struct {
	// Text is the contact as configured; templates escape it.
	Text string
	// Href is the link it makes: mailto: for an address, the URL itself
	// for a URL, "" for text.
	Href string
}

// ParseContact checks a configured contact and says how to show it. A
// value that looks like a URL (a scheme and no spaces) must be http://,
// https:// or mailto:, so that the page never links to javascript: or
// data:; control and formatting characters (bidi overrides among them)
// are refused, so the text shown is the text configured; an address (plain
// or mailto:) must be one bare address (bareAddress), so the link mails
// whom the page names and no one else, with no subject or body of its own.
func ParseContact(s string) (Contact, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Contact{}, nil
	}
	if !utf8.ValidString(s) {
		return Contact{}, errors.New("contact: not UTF-8 text")
	}
	if n := utf8.RuneCountInString(s); n > maxContact {
		return Contact{}, fmt.Errorf("contact: %d characters; at most %d", n, maxContact)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return Contact{}, fmt.Errorf("contact: holds the control or formatting character %U", r)
		}
	}
	// One-line text as everywhere else (text.Check): besides, no more
	// than text.MaxMarks combining marks in a row, which would draw over
	// the lines around them.
	if err := text.Check(s); err != nil {
		return Contact{}, fmt.Errorf("contact: %w", err)
	}
	if strings.ContainsAny(s, " \t") {
		return Contact{Text: s}, nil
	}
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		switch strings.ToLower(u.Scheme) {
		case "http", "https":
			if u.Host == "" {
				return Contact{}, fmt.Errorf("contact: %q has no host", s)
			}
			return Contact{Text: s, Href: u.String()}, nil
		case "mailto":
			if !bareAddress(u.Opaque) || u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(s, "?#%") {
				return Contact{}, fmt.Errorf("contact: %q is not a mailto: link to one address (no ?cc=, ?bcc=, ?subject=, ?body=, # or %%-escapes)", s)
			}
			return Contact{Text: u.Opaque, Href: s}, nil
		default:
			return Contact{}, fmt.Errorf("contact: %q: a URL must be http://, https:// or mailto: (or write text with a space)", s)
		}
	}
	if a, err := mail.ParseAddress(s); err == nil && a.Address == s {
		if !bareAddress(s) {
			return Contact{}, fmt.Errorf("contact: the address %q holds ?, # or %% (a mailto: link would read them as headers or escapes)", s)
		}
		return Contact{Text: s, Href: "mailto:" + s}, nil
	}
	return Contact{Text: s}, nil
}

// bareAddress reports whether s is one e-mail address that a mailto: link
// mails as shown. RFC 5322 lets an address's local part hold ?, # and %,
// but in a mailto: URL (RFC 6068) ? starts headers (cc, bcc, subject,
// body), # a fragment and % an escape: "ops?cc=evil%40example.net&a=@example.com"
// is a valid address whose link mails "ops" and copies evil@example.net.
func bareAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && !strings.ContainsAny(s, "?#%")
}
