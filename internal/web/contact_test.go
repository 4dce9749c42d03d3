package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jitgate/jitgate/internal/web"
	"github.com/jitgate/jitgate/internal/wire"
)

// TestNoRolePageNamesContact: the page of someone signed in without a role
// names the configured contact (server flag --contact) with the admins: an
// address as a mailto: link, a URL as a link, text as text, all escaped;
// without a contact the page is as before, and a contact the console
// cannot show safely stops it from starting.
func TestNoRolePageNamesContact(t *testing.T) {
	tests := []struct {
		name, contact string
		want          []string // in the page's HTML
	}{
		{"address", "it-desk@example.com", []string{`<p id="contact">Ask <a href="mailto:it-desk@example.com">it-desk@example.com</a>`}},
		{"URL", "https://help.example.com/access?team=ops&x=1", []string{`<a href="https://help.example.com/access?team=ops&amp;x=1">https://help.example.com/access?team=ops&amp;x=1</a>`}},
		{"text, escaped", `the <b>service desk</b> & "ops", ext. 4242`, []string{`<p id="contact">Ask <strong>the &lt;b&gt;service desk&lt;/b&gt; &amp; &#34;ops&#34;, ext. 4242</strong>`}},
		{"none", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, false, func(d *web.Deps) { d.Contact = tt.contact })
			tc, err := e.api.CreateToken(context.Background(), wire.TokenCreate{User: "erin", Name: "no role", TTL: wire.Duration(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			c := e.browser(t)
			e.signin(t, c, tc.Secret)
			status, body, _ := get(t, c, e.srv.URL+"/ui/")
			if status != 200 || !strings.Contains(body, "You have no access yet") {
				t.Fatalf("erin's page: %d\n%s", status, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("erin's page lacks %s\n%s", w, body)
				}
			}
			// The command the page tells the admins to run is one the
			// CLI has (it used to say "jitgate access bind", which is not).
			if want := "<code>jitgate role bind user:erin --role requester --scope label:KEY=VALUE</code>"; !strings.Contains(body, want) {
				t.Errorf("erin's page lacks %s\n%s", want, body)
			}
			// The admins are named in any case.
			if !strings.Contains(body, `<ul id="admins"><li>user:admin</li></ul>`) {
				t.Errorf("erin's page does not name the admin\n%s", body)
			}
			if tt.contact == "" && strings.Contains(body, `id="contact"`) {
				t.Errorf("a contact shown though none is configured\n%s", body)
			}
			if strings.Contains(body, "<b>") {
				t.Errorf("the contact's markup reached the page\n%s", body)
			}
		})
	}
	for _, bad := range []string{"javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>x</script>", "ops\u202e@example.com", "a\nb",
		"it-desk\u200b@example.com",
		// Combining marks stacked past text.MaxMarks draw over the lines
		// around them (a contact of 200 characters held 199).
		"the service desk" + strings.Repeat("\u0301", 100),
		// A mailto: link showed the address alone but also copied,
		// blind-copied or wrote the mail: the link did more than the page said.
		"mailto:it-desk@example.com?bcc=evil@example.net", "mailto:it-desk@example.com?subject=x%0D%0ABcc:evil@example.net",
		"MAILTO:it-desk@example.com?body=send%20your%20password", "mailto:it-desk@example.com#x",
		// An address whose local part holds ? (allowed by RFC 5322) made a
		// link that mails "ops" with a copy to evil@example.net.
		"ops?cc=evil%40example.net&a=@example.com", "mailto:ops?cc=evil%40example.net&a=@example.com"} {
		if c, err := web.ParseContact(bad); err == nil {
			t.Errorf("contact %q accepted as %+v, want refused", bad, c)
			continue
		}
		if _, err := web.New(web.Deps{Contact: bad}); err == nil || !strings.Contains(err.Error(), "contact") {
			t.Errorf("web.New with contact %q: %v, want an error naming contact", bad, err)
		}
	}
}
