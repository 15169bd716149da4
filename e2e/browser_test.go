//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// browser_test.go: the hotel account admin's walk in a real browser, headless Chromium
// driven over the DevTools protocol: auth_url, the identity server's login and consent
// pages, and the page Vault's callback answers, for a connection and for each way it
// can fail. A screenshot of every page goes to E2E_SCREENSHOT_DIR (default
// build/e2e-screenshots); docs/img/callback-success.png is the success page from here.

// chromiumBin is Debian's Chromium, as `make chromium` installs it. A missing browser
// fails the test: a developer without one opts out by name (E2E_SKIP_BROWSER=1), never
// under CI=true, where .ci/run installs it.
func chromiumBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("CHROMIUM_BIN")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if fileExists(p) {
		return p
	}
	msg := fmt.Sprintf("no Chromium at %s: run `make chromium` (as root: apt-get install chromium) or set CHROMIUM_BIN", p)
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatal(msg + " (CI=true: .ci/run installs it, so a missing browser is a broken set-up)")
	}
	if os.Getenv("E2E_SKIP_BROWSER") == "1" {
		t.Skip(msg + " (skipped: E2E_SKIP_BROWSER=1)")
	}
	t.Fatal(msg + "; E2E_SKIP_BROWSER=1 skips this test")
	return ""
}

// screenshotDir is where the test's screenshots go, kept after the test.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("E2E_SCREENSHOT_DIR")
	if dir == "" {
		dir = filepath.Join("..", "build", "e2e-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	t.Logf("screenshots in %s", abs)
	return dir
}

// startChromium starts a headless Chromium with an empty profile that trusts the
// identity server's certificate (by its key) and nothing else beyond the system's roots.
func startChromium(t *testing.T, bin string, idp *identity) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, idp)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 760),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser and its first tab
		t.Fatalf("starting %s: %v", bin, err)
	}
	return ctx
}

// spkiHash is the base64 SHA-256 of the identity server's certificate key, which
// Chromium's --ignore-certificate-errors-spki-list trusts alone.
func spkiHash(t *testing.T, idp *identity) string {
	t.Helper()
	u, err := url.Parse(idp.URL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, idp.http.Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sum := sha256.Sum256(conn.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// shownPage is what the browser shows after a navigation.
type shownPage struct {
	status  int64
	headers network.Headers
	url     string
	title   string
	lang    string
	text    string // as rendered (innerText)
	html    string
	fetched int // resources the page loaded besides itself
}

// load runs steps that navigate (a Navigate, a click), waits for the page, reads it and
// saves a screenshot as <dir>/<shot>.png.
func load(t *testing.T, ctx context.Context, dir, shot string, steps ...chromedp.Action[chromedp.Void]) shownPage {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		t.Fatalf("%s: %v", shot, err)
	}
	p := shownPage{status: resp.Status, headers: resp.Headers}
	for _, s := range []struct {
		into *string
		expr string
	}{
		{&p.url, "location.href"}, {&p.title, "document.title"}, {&p.lang, "document.documentElement.lang"},
		{&p.text, "document.body.innerText"}, {&p.html, "document.documentElement.outerHTML"},
	} {
		if *s.into, err = chromedp.Run(ctx, chromedp.Evaluate[string](s.expr)); err != nil {
			t.Fatalf("%s: %s: %v", shot, s.expr, err)
		}
	}
	if p.fetched, err = chromedp.Run(ctx, chromedp.Evaluate[int]("performance.getEntriesByType('resource').length")); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("%s: screenshot: %v", shot, err)
	}
	if err := os.WriteFile(filepath.Join(dir, shot+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p shownPage) header(name string) string {
	for k, v := range p.headers {
		if strings.EqualFold(k, name) {
			s, _ := v.(string)
			return s
		}
	}
	return ""
}

// checkVaultPage checks a page Vault's callback answered, as the admin's browser got it.
func checkVaultPage(t *testing.T, p shownPage, callback string, status int64, title string, texts ...string) {
	t.Helper()
	if !strings.HasPrefix(p.url, callback+"?") {
		t.Errorf("%q: the browser is at %s, not Vault's callback", title, p.url)
	}
	if p.status != status || p.title != title || p.lang != "en" {
		t.Errorf("page: status %d, title %q, lang %q; want %d, %q, en\n%s", p.status, p.title, p.lang, status, title, p.text)
	}
	for _, want := range texts {
		if !strings.Contains(p.text, want) {
			t.Errorf("%q: the page does not say %q:\n%s", title, want, p.text)
		}
	}
	if p.fetched != 0 {
		t.Errorf("%q: the page loaded %d other resources", title, p.fetched)
	}
	for h, want := range map[string]string{
		"Cache-Control":          "no-store",
		"Referrer-Policy":        "no-referrer",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := p.header(h); got != want {
			t.Errorf("%q: %s %q, want %q", title, h, got, want)
		}
	}
	if csp := p.header("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; style-src 'sha256-") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("%q: Content-Security-Policy %q", title, csp)
	}
}

func TestBrowser_AdminConnectsHotel(t *testing.T) {
	t.Parallel()
	bin := chromiumBin(t)
	start := time.Now()
	// raw_storage_endpoint lets the test age a pending authorization past its 10 minutes.
	v := startDevVaultHCL(t, "vault-browser", "info", "raw_storage_endpoint = true\n", nil)
	v.enablePlugin(t)
	v.must(t, "secrets", "tune", "-allowed-response-headers=Content-Security-Policy",
		"-allowed-response-headers=Referrer-Policy", "-allowed-response-headers=X-Content-Type-Options", mount+"/")
	callback := v.Addr + "/v1/" + mount + "/callback"
	secret := "browser-app-secret"
	idp := startIdentityFlags(t, "identity-browser", time.Hour, []string{"-login"},
		"connect-app:"+secret+":BER:reservations.read,account.read:"+callback)
	v.writeConfig(t, appConfig{name: "connect", clientID: "connect-app", secret: secret, idp: idp,
		grant: "authorization_code", redirect: callback, scopes: "reservations.read account.read"})
	dir := screenshotDir(t)
	ctx := startChromium(t, bin, idp)

	// The admin opens the link, logs in and allows: Vault's page says what was connected.
	authURL, _ := v.authorize(t, "hotel-ber", "connect")
	p := load(t, ctx, dir, "1-login", chromedp.Navigate(authURL.String()))
	if p.status != http.StatusOK || !strings.HasPrefix(p.title, "Log in") || p.lang != "en" || !strings.Contains(p.text, devidp.TestUser) {
		t.Fatalf("login page: %d %q:\n%s", p.status, p.title, p.text)
	}
	p = load(t, ctx, dir, "2-consent",
		chromedp.SendKeys(chromedp.ID("username"), devidp.TestUser),
		chromedp.SendKeys(chromedp.ID("password"), devidp.TestPassword),
		chromedp.Click(chromedp.ID("login")))
	if p.status != http.StatusOK || !strings.HasPrefix(p.title, "Allow access") || !strings.Contains(p.text, "connect-app asks for access to apaleo account BER") {
		t.Fatalf("consent page: %d %q:\n%s", p.status, p.title, p.text)
	}
	p = load(t, ctx, dir, "3-connected", chromedp.Click(chromedp.ID("allow")))
	checkVaultPage(t, p, callback, http.StatusOK, "apaleo account BER is connected to Vault",
		"Vault now holds the credential apaleo/creds/hotel-ber for apaleo account BER.",
		"What happens next", "You can close this window.")
	creds := v.read(t, mount+"/creds/hotel-ber")
	if creds.str("account_code") != "BER" {
		t.Fatalf("creds/hotel-ber: %v", creds.Data)
	}
	code := mustQuery(t, p.url).Get("code")
	var issued struct {
		RefreshTokens []string `json:"refresh_tokens"`
	}
	idp.admin(t, "secrets", &issued)
	secrets := append([]string{creds.str("access_token"), secret}, issued.RefreshTokens...)
	for _, s := range append(secrets, code) {
		if s == "" || strings.Contains(p.html, s) {
			t.Errorf("the success page shows the code, a token or the client secret (or it is empty: %q)", s)
		}
	}

	// The same link again (the admin reloads the page): refused, nothing changes.
	p = load(t, ctx, dir, "4-link-used", chromedp.Reload())
	checkVaultPage(t, p, callback, http.StatusBadRequest, "This link was already used",
		"Each link works once", "Nothing was stored in Vault. Ask your Vault operator for a new link")
	if again := v.read(t, mount+"/creds/hotel-ber"); again.str("access_token") != creds.str("access_token") {
		t.Error("the reused link changed creds/hotel-ber")
	}

	// An authorization left open too long. Logged in already, the admin goes straight to
	// consent; the pending authorization is aged in Vault's storage meanwhile.
	authURL, state := v.authorize(t, "hotel-late", "connect")
	load(t, ctx, dir, "5-consent-again", chromedp.Navigate(authURL.String()))
	expirePending(t, v, state)
	p = load(t, ctx, dir, "6-link-expired", chromedp.Click(chromedp.ID("allow")))
	checkVaultPage(t, p, callback, http.StatusBadRequest, "This link has expired",
		"was not completed within its 10 minutes", "Nothing was stored in Vault.")

	// The admin denies: apaleo redirects with error=access_denied.
	authURL, _ = v.authorize(t, "hotel-no", "connect")
	load(t, ctx, dir, "7-consent-deny", chromedp.Navigate(authURL.String()))
	p = load(t, ctx, dir, "8-access-denied", chromedp.Click(chromedp.ID("deny")))
	checkVaultPage(t, p, callback, http.StatusBadRequest, "Access was not granted",
		"declined at apaleo", "Nothing was stored in Vault.", "apaleo answered access_denied")
	if q := mustQuery(t, p.url); q.Get("error") != "access_denied" || q.Get("code") != "" {
		t.Errorf("the deny redirect was %s", p.url)
	}

	if got := v.list(t, mount+"/creds"); len(got) != 1 || got[0] != "hotel-ber" {
		t.Errorf("creds/ lists %v, want only hotel-ber", got)
	}
	t.Logf("the walk took %s", time.Since(start).Round(100*time.Millisecond))
}

func mustQuery(t *testing.T, u string) url.Values {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Query()
}

// expirePending moves the expiry of state's pending authorization an hour back, through
// Vault's raw storage (the plugin stores it as pending/<sha256(state)>).
func expirePending(t *testing.T, v *vault, state string) {
	t.Helper()
	mountInfo := v.read(t, "sys/mounts/"+mount)
	uuid := mountInfo.str("uuid")
	sum := sha256.Sum256([]byte(state))
	path := "sys/raw/logical/" + uuid + "/pending/" + hex.EncodeToString(sum[:])
	raw := v.read(t, path).str("value")
	var entry map[string]any
	if err := json.Unmarshal([]byte(raw), &entry); err != nil || entry["expires_at"] == nil {
		t.Fatalf("pending authorization at %s: %q (%v)", path, raw, err)
	}
	entry["expires_at"] = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	b, _ := json.Marshal(entry)
	file := writeFile(t, filepath.Join(v.dir, "pending.json"), string(b))
	v.must(t, "write", path, "value=@"+file)
}
