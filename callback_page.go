package apaleo

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"

	"github.com/hashicorp/vault/sdk/logical"
)

// callback_page.go: the one page a hotel account's admin sees from Vault, after apaleo
// redirects the browser to callback. It is served from Vault's origin to someone who
// is not a Vault user, so it carries nothing but text: no script, no image, no font,
// no link elsewhere, and headers that keep it out of caches, referrers and frames.

// callbackPage is what the page says.
type callbackPage struct {
	status int
	OK     bool
	Title  string   // <title> and <h1>: what happened, in a few words
	Lead   string   // the sentence the admin needs
	Next   []string // what happens next, or what to do now
	// Detail is the technical reason, meant for the Vault operator the admin talks to.
	Detail string
}

// Page titles of the failures an admin can meet; tests look for them.
const (
	titleConnected     = "apaleo is connected to Vault"
	titleLinkUsed      = "This link was already used"
	titleLinkExpired   = "This link has expired"
	titleLinkReplaced  = "A newer link replaced this one"
	titleAccessDenied  = "Access was not granted"
	titleApaleoRefused = "apaleo did not complete the connection"
	titleFailed        = "The connection could not be completed"
)

// askForNewLink is the way out of every failure: the admin cannot start a flow alone.
const askForNewLink = "Nothing was stored in Vault. Ask your Vault operator for a new link, then open it once."

func successPage(mount, name, account string) callbackPage {
	p := callbackPage{status: http.StatusOK, OK: true, Title: titleConnected}
	if account != "" {
		p.Title = fmt.Sprintf("apaleo account %s is connected to Vault", account)
		p.Lead = fmt.Sprintf("Vault now holds the credential %s%s for apaleo account %s.", mount, "creds/"+name, account)
	} else {
		p.Lead = fmt.Sprintf("Vault now holds the credential %s%s.", mount, "creds/"+name)
	}
	p.Next = []string{
		"What happens next: Vault keeps this connection and gives short-lived access tokens to the applications your Vault operator allows. You do not need to do anything else.",
		"The connection lasts until your Vault operator removes it, or an admin of the account revokes the app's access in apaleo.",
		"You can close this window.",
	}
	return p
}

// failurePage shows an authError from the callback with the title that names its kind.
func failurePage(ae *authError) callbackPage {
	title := ae.title
	if title == "" {
		title = titleFailed
	}
	return callbackPage{status: ae.status, Title: title, Lead: leadFor(title), Next: []string{askForNewLink}, Detail: ae.msg}
}

// oauthErrorPage is apaleo's error redirect for a pending authorization of name.
// detail is already cut short and stripped of control characters.
func oauthErrorPage(name, oauthErr, detail string) callbackPage {
	title := titleApaleoRefused
	if oauthErr == "access_denied" {
		title = titleAccessDenied
	}
	return callbackPage{status: http.StatusBadRequest, Title: title, Lead: leadFor(title),
		Next: []string{askForNewLink}, Detail: fmt.Sprintf("apaleo answered %s; start again with authorize/%s.", detail, name)}
}

// unmatchedPage is an error redirect whose state matches no pending authorization:
// whatever else its query says came from whoever built the link, so none of it is shown.
func unmatchedPage() callbackPage {
	return callbackPage{status: http.StatusBadRequest, Title: titleFailed, Lead: unmatchedErrorPage, Next: []string{askForNewLink},
		Detail: "the link's state matches no pending authorization (unknown, expired or already used)."}
}

func leadFor(title string) string {
	switch title {
	case titleLinkUsed:
		return "This link to connect apaleo to Vault was used before, or it is not one Vault is waiting for. Each link works once."
	case titleLinkExpired:
		return "This link to connect apaleo to Vault was not completed within its 10 minutes."
	case titleLinkReplaced:
		return "A newer link to connect this apaleo account to Vault was made after this one, and only the newest works."
	case titleAccessDenied:
		return "The connection to Vault was declined at apaleo, so Vault has no access to the account."
	case titleApaleoRefused:
		return "apaleo ended the authorization with an error instead of a connection."
	}
	return "Vault could not finish connecting apaleo."
}

// pageStyle is the page's only style, allowed by its hash in the Content-Security-Policy.
const pageStyle = `body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;background:#f4f5f7;margin:0}` +
	`main{max-width:36em;margin:4em auto;padding:2em 2.25em;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12);border-top:6px solid #c0392b}` +
	`main.ok{border-top-color:#1e8e3e}h1{font-size:1.5em;line-height:1.25;margin:0 0 .75em}` +
	`.lead{font-size:1.1em}.detail{color:#5a6270;font-size:.9em;border-top:1px solid #e3e5e8;padding-top:1em;margin-top:1.5em;overflow-wrap:anywhere}`

var (
	styleHash = func() string {
		sum := sha256.Sum256([]byte(pageStyle))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}()
	// pageCSP allows the page's own style and nothing else: no script, image, font,
	// frame, form or base URL. frame-ancestors works only as a header, not in <meta>.
	pageCSP   = "default-src 'none'; style-src " + styleHash + "; base-uri 'none'; form-action 'none'"
	headerCSP = pageCSP + "; frame-ancestors 'none'"
)

// The <meta> tags repeat the headers: Vault passes a plugin's headers only for those a
// mount allows (allowed_response_headers), the page's own tags hold either way.
var callbackTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{.CSP}}">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex">
<title>{{.Title}}</title>
<style>` + pageStyle + `</style>
</head>
<body>
<main{{if .OK}} class="ok"{{end}}>
<h1>{{.Title}}</h1>
<p class="lead">{{.Lead}}</p>
{{range .Next}}<p>{{.}}</p>
{{end}}{{with .Detail}}<p class="detail">For your Vault operator: {{.}}</p>
{{end}}</main>
</body>
</html>
`))

// response renders the page as Vault's raw HTTP response.
func (p callbackPage) response() *logical.Response {
	var buf bytes.Buffer
	err := callbackTemplate.Execute(&buf, struct {
		callbackPage
		CSP string
	}{p, pageCSP})
	if err != nil {
		// The template and its data are ours: a failure is a bug, shown as plain text.
		buf.Reset()
		buf.WriteString(p.Title + "\n")
	}
	return &logical.Response{
		Data: map[string]any{
			logical.HTTPContentType:        "text/html; charset=utf-8",
			logical.HTTPStatusCode:         p.status,
			logical.HTTPRawBody:            buf.Bytes(),
			logical.HTTPCacheControlHeader: "no-store",
		},
		Headers: map[string][]string{
			"Content-Security-Policy": {headerCSP},
			"Referrer-Policy":         {"no-referrer"},
			"X-Content-Type-Options":  {"nosniff"},
		},
	}
}

// unmatchedErrorPage is the fixed text for an error redirect whose state matches no
// pending authorization: whatever else the query says came from whoever built the link.
const unmatchedErrorPage = "The authorization did not complete, and this link does not belong to an authorization Vault is waiting for."
