package devidp

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"

	"github.com/ory/fosite"
)

// login.go: the login and consent pages of Options.Interactive, apaleo's own pages in
// miniature, so that a browser test walks the authorization as a hotel admin does.
// Without Interactive the authorize endpoint consents at once, as before.

// TestPassword is the password of TestUser on the login page.
const TestPassword = "dev-password"

// Form fields of the pages, beside the authorize request's own parameters, which the
// forms carry along as hidden fields.
const (
	fieldStep     = "devidp_step" // "login" or "consent"
	fieldUsername = "username"
	fieldPassword = "password"
	fieldConsent  = "consent" // "allow" or "deny"
	sessionCookie = "devidp_session"
)

// interact runs the login and consent steps of an authorize request. It answers the
// browser itself (a page, or the access_denied redirect) and returns false, or returns
// true once the user has logged in and allowed the request.
func (s *Server) interact(w http.ResponseWriter, r *http.Request, ar fosite.AuthorizeRequester, account string) bool {
	step := r.PostFormValue(fieldStep)
	if r.Method == http.MethodPost && step == "login" {
		user, pass := r.PostFormValue(fieldUsername), r.PostFormValue(fieldPassword)
		if subtle.ConstantTimeCompare([]byte(user), []byte(TestUser))&subtle.ConstantTimeCompare([]byte(pass), []byte(TestPassword)) != 1 {
			s.renderPage(w, http.StatusUnauthorized, loginPage, pageData{Form: authorizeParams(r), Error: "Unknown user or wrong password.", User: TestUser, Password: TestPassword})
			return false
		}
		token := randomToken(24)
		s.sessions.Store(token, TestUser)
		// SameSite=Lax keeps the cookie off cross-site form posts: no other site can
		// consent in the user's name.
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: token, Path: "/connect/", HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, PathAuthorize+"?"+authorizeParams(r).Encode(), http.StatusSeeOther)
		return false
	}
	if !s.loggedIn(r) {
		s.renderPage(w, http.StatusOK, loginPage, pageData{Form: authorizeParams(r), User: TestUser, Password: TestPassword})
		return false
	}
	if r.Method != http.MethodPost || step != "consent" {
		s.renderPage(w, http.StatusOK, consentPage, pageData{
			Form: authorizeParams(r), User: TestUser, Client: ar.GetClient().GetID(), Account: account,
			Scopes: ar.GetRequestedScopes(),
		})
		return false
	}
	if r.PostFormValue(fieldConsent) != "allow" {
		s.provider.WriteAuthorizeError(r.Context(), w, ar, fosite.ErrAccessDenied.WithHint("The user denied access to the app."))
		return false
	}
	return true
}

func (s *Server) loggedIn(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return false
	}
	_, ok := s.sessions.Load(c.Value)
	return ok
}

// authorizeParams are the authorize request's parameters without the pages' own fields.
func authorizeParams(r *http.Request) url.Values {
	v := url.Values{}
	for k, vs := range r.Form {
		switch k {
		case fieldStep, fieldUsername, fieldPassword, fieldConsent:
			continue
		}
		v[k] = vs
	}
	return v
}

type pageData struct {
	Form                   url.Values
	Error                  string
	User, Password         string
	Client, Account        string
	Scopes                 []string
	Title, ActionAuthorize string
}

// pagesStyle is the pages' only style, allowed by its hash in their Content-Security-Policy.
const pagesStyle = `body{font:16px/1.5 system-ui,sans-serif;color:#1d2330;background:#eef1f5;margin:0}` +
	`header{background:#22304a;color:#fff;padding:.75em 1.5em;font-weight:600}` +
	`main{max-width:26em;margin:3em auto;padding:2em;background:#fff;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12)}` +
	`h1{font-size:1.4em;margin:0 0 1em}label{display:block;margin:.75em 0 .25em;font-weight:600}` +
	`input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5em;font:inherit;border:1px solid #aab;border-radius:4px}` +
	`button{font:inherit;padding:.5em 1.25em;margin:1.25em .5em 0 0;border-radius:4px;border:1px solid #22304a;background:#22304a;color:#fff;cursor:pointer}` +
	`button.secondary{background:#fff;color:#22304a}.error{color:#b00020}.hint{color:#5a6270;font-size:.9em}code{background:#eef1f5;padding:0 .25em}`

var pagesCSP = func() string {
	sum := sha256.Sum256([]byte(pagesStyle))
	// No form-action: the consent form's answer redirects to the client's redirect_uri,
	// which Chromium checks against form-action too.
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; base-uri 'none'; frame-ancestors 'none'"
}()

const pageHead = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · apaleo dev identity server</title>
<style>` + pagesStyle + `</style>
</head>
<body>
<header>apaleo dev identity server (development and tests only)</header>
<main>
<h1>{{.Title}}</h1>
`

const hiddenFields = `{{range $k, $vs := .Form}}{{range $vs}}<input type="hidden" name="{{$k}}" value="{{.}}">
{{end}}{{end}}`

var loginPage = template.Must(template.New("login").Parse(pageHead + `{{with .Error}}<p class="error" role="alert">{{.}}</p>
{{end}}<form method="post" action="{{.ActionAuthorize}}">
` + hiddenFields + `<input type="hidden" name="devidp_step" value="login">
<label for="username">User name</label>
<input type="text" id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit" id="login">Log in</button>
</form>
<p class="hint">The dev server knows one user: <code>{{.User}}</code> with password <code>{{.Password}}</code>.</p>
</main>
</body>
</html>
`))

var consentPage = template.Must(template.New("consent").Parse(pageHead + `<p><strong>{{.Client}}</strong> asks for access to apaleo account <strong>{{.Account}}</strong> on behalf of {{.User}}:</p>
<ul>
{{range .Scopes}}<li><code>{{.}}</code></li>
{{end}}</ul>
<form method="post" action="{{.ActionAuthorize}}">
` + hiddenFields + `<input type="hidden" name="devidp_step" value="consent">
<button type="submit" id="allow" name="consent" value="allow">Allow</button>
<button type="submit" id="deny" name="consent" value="deny" class="secondary">Deny</button>
</form>
</main>
</body>
</html>
`))

func (s *Server) renderPage(w http.ResponseWriter, status int, page *template.Template, d pageData) {
	d.ActionAuthorize = PathAuthorize
	d.Title = "Log in"
	if page == consentPage {
		d.Title = "Allow access"
	}
	var b strings.Builder
	if err := page.Execute(&b, d); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pagesCSP)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}
