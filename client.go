package apaleo

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/hashicorp/go-cleanhttp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// client.go talks to apaleo's identity server. It knows nothing of Vault: the backend
// hands it a clientSettings and gets tokens or *upstreamError back.

const (
	tokenPath      = "/connect/token"
	authorizePath  = "/connect/authorize"
	revocationPath = "/connect/revocation"

	// defaultTokenLifetime is assumed when a token response carries no expires_in:
	// apaleo's (IdentityServer's) access tokens live 3600 s.
	defaultTokenLifetime = time.Hour
)

// clientSettings is what the identity client needs of a config.
type clientSettings struct {
	ClientID      string
	ClientSecret  string
	IdentityURL   string
	CACertificate string
	RedirectURI   string
}

// retryPolicy bounds the time spent on one logical token request.
type retryPolicy struct {
	Total      time.Duration // all attempts and waits together
	PerAttempt time.Duration // one HTTP round trip
	BaseDelay  time.Duration // first backoff, doubled per retry
	MaxDelay   time.Duration
	Attempts   int // at most this many attempts; 0 for as many as fit in Total
	// random draws the retry delays' jitter in [0, n); nil for math/rand's.
	random func(n int64) int64
}

var defaultRetryPolicy = retryPolicy{
	Total:      30 * time.Second,
	PerAttempt: 10 * time.Second,
	BaseDelay:  250 * time.Millisecond,
	MaxDelay:   4 * time.Second,
}

// tokenResult is a token response, normalised.
type tokenResult struct {
	AccessToken  string
	TokenType    string
	RefreshToken string
	IssuedAt     time.Time
	Expiry       time.Time
	Scopes       []string // as granted; the requested ones when the server does not say
	AccountCode  string   // from the JWT's claims, when present
	ClientID     string
}

// identityServer is what the backend calls; tests may substitute it.
type identityServer interface {
	ClientCredentials(ctx context.Context, scopes []string, p retryPolicy) (*tokenResult, error)
	Refresh(ctx context.Context, refreshToken string, p retryPolicy) (*tokenResult, error)
	Exchange(ctx context.Context, code, verifier string, scopes []string, p retryPolicy) (*tokenResult, error)
	Revoke(ctx context.Context, refreshToken string, p retryPolicy) error
	AuthCodeURL(state, verifier string, scopes []string) string
}

// identityClient is an identityServer over golang.org/x/oauth2.
type identityClient struct {
	settings   clientSettings
	httpClient *http.Client
	now        func() time.Time
}

func newIdentityClient(s clientSettings, now func() time.Time, transports *transportPool) (*identityClient, error) {
	transport, err := transports.get(s.CACertificate)
	if err != nil {
		return nil, err
	}
	return &identityClient{
		settings: s,
		httpClient: &http.Client{
			Transport: transport,
			// Per-attempt timeouts come from contexts; this only guards a body that never ends.
			Timeout: 2 * time.Minute,
			// A redirect would re-send the form, client_secret and refresh_token included,
			// to a host that escaped identity_url's https and ca_certificate rules.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		now: now,
	}, nil
}

// transportPool shares HTTP transports, and so their connections, among all configs
// with the same trust roots: thousands of configs against one identity server keep a
// handful of connections, not one each.
type transportPool struct {
	mu   sync.Mutex
	byCA map[[sha256.Size]byte]*http.Transport
}

func (p *transportPool) get(caPEM string) (*http.Transport, error) {
	key := sha256.Sum256([]byte(caPEM))
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.byCA[key]; ok {
		return t, nil
	}
	t := cleanhttp.DefaultPooledTransport()
	if caPEM != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(caPEM)) {
			return nil, errors.New("ca_certificate holds no PEM certificate")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if p.byCA == nil {
		p.byCA = map[[sha256.Size]byte]*http.Transport{}
	}
	p.byCA[key] = t
	return t, nil
}

func (p *transportPool) closeIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.byCA {
		t.CloseIdleConnections()
	}
}

func (c *identityClient) endpoint(path string) string {
	return strings.TrimRight(c.settings.IdentityURL, "/") + path
}

// ClientCredentials runs the client credentials grant with HTTP Basic client authentication.
func (c *identityClient) ClientCredentials(ctx context.Context, scopes []string, p retryPolicy) (*tokenResult, error) {
	cc := clientcredentials.Config{
		ClientID:     c.settings.ClientID,
		ClientSecret: c.settings.ClientSecret,
		TokenURL:     c.endpoint(tokenPath),
		Scopes:       scopes,
		AuthStyle:    oauth2.AuthStyleInHeader,
	}
	return c.retrieve(ctx, p, scopes, c.redactor(), "", func(ctx context.Context) (*oauth2.Token, error) {
		return cc.Token(ctx)
	})
}

// oauthConfig is the authorization-code client: apaleo's docs send client_id and
// client_secret in the form body for the code exchange and refreshes.
func (c *identityClient) oauthConfig(scopes []string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.settings.ClientID,
		ClientSecret: c.settings.ClientSecret,
		Endpoint: oauth2.Endpoint{
			AuthURL:   c.endpoint(authorizePath),
			TokenURL:  c.endpoint(tokenPath),
			AuthStyle: oauth2.AuthStyleInParams,
		},
		RedirectURL: c.settings.RedirectURI,
		Scopes:      scopes,
	}
}

// Refresh runs the refresh token grant. The result's RefreshToken is the rotated one, or
// the same one when the server did not rotate it.
func (c *identityClient) Refresh(ctx context.Context, refreshToken string, p retryPolicy) (*tokenResult, error) {
	cfg := c.oauthConfig(nil)
	return c.retrieve(ctx, p, nil, c.redactor(refreshToken), "refresh token", func(ctx context.Context) (*oauth2.Token, error) {
		return cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	})
}

// Exchange redeems an authorization code with its PKCE verifier.
func (c *identityClient) Exchange(ctx context.Context, code, verifier string, scopes []string, p retryPolicy) (*tokenResult, error) {
	cfg := c.oauthConfig(scopes)
	return c.retrieve(ctx, p, scopes, c.redactor(code, verifier), "authorization code", func(ctx context.Context) (*oauth2.Token, error) {
		return cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	})
}

// AuthCodeURL is the /connect/authorize URL an account admin opens.
func (c *identityClient) AuthCodeURL(state, verifier string, scopes []string) string {
	return c.oauthConfig(scopes).AuthCodeURL(state, oauth2.S256ChallengeOption(verifier))
}

// Revoke revokes a refresh token (RFC 7009).
func (c *identityClient) Revoke(ctx context.Context, refreshToken string, p retryPolicy) error {
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	r := c.redactor(refreshToken)
	_, err := withRetries(ctx, p, func(ctx context.Context) (struct{}, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint(revocationPath), strings.NewReader(form.Encode()))
		if err != nil {
			return struct{}{}, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(url.QueryEscape(c.settings.ClientID), url.QueryEscape(c.settings.ClientSecret))
		resp, err := c.httpClient.Do(req)
		if err != nil {
			return struct{}{}, r.clean(classifyTransportError(err))
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return struct{}{}, nil
		}
		return struct{}{}, r.clean(upstreamFromStatus(resp, ""))
	})
	return err
}

// retrieve runs a token request under p. oneTime names the secret the request carries
// that the server spends on receipt (a refresh token under rotation, an authorization
// code), if any: a 2xx answer that cannot be read is then final, since sending the secret
// again would only earn invalid_grant, or look like token theft to the server.
func (c *identityClient) retrieve(ctx context.Context, p retryPolicy, requested []string, r *redactor, oneTime string, fetch func(context.Context) (*oauth2.Token, error)) (*tokenResult, error) {
	return withRetries(ctx, p, func(ctx context.Context) (*tokenResult, error) {
		started := c.now()
		tok, err := fetch(context.WithValue(ctx, oauth2.HTTPClient, c.httpClient))
		if err != nil {
			ue := r.clean(classifyOAuthError(err))
			if ue.Unreadable && oneTime != "" {
				ue.Spent, ue.spentWhat, ue.Temporary = true, oneTime, false
			}
			return nil, ue
		}
		res, refused := newTokenResult(tok, started, requested)
		if refused != nil {
			// Read, but not to be cached. A refresh token it carries is live at apaleo
			// (the one sent may be spent): it goes with the error, never dropped.
			refused.rotated = tok.RefreshToken
			return nil, r.clean(refused)
		}
		return res, nil
	})
}

// newTokenResult checks a token answer and normalises it; an answer that fails the
// check is refused (an *upstreamError naming the field), never cached.
func newTokenResult(tok *oauth2.Token, issued time.Time, requested []string) (*tokenResult, *upstreamError) {
	if !strings.EqualFold(tok.TokenType, "bearer") && tok.TokenType != "" {
		return nil, refusedAnswer(fmt.Sprintf("token_type %q is not Bearer", truncate(printable(tok.TokenType), maxCode)))
	}
	lifetime, err := answerLifetime(tok.Extra("expires_in"))
	if err != nil {
		return nil, refusedAnswer(err.Error())
	}
	res := &tokenResult{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.Type(),
		RefreshToken: tok.RefreshToken,
		IssuedAt:     issued,
		Expiry:       issued.Add(lifetime),
		Scopes:       requested,
	}
	if s, ok := tok.Extra("scope").(string); ok && strings.TrimSpace(s) != "" {
		res.Scopes = strings.Fields(s)
	}
	res.AccountCode, res.ClientID = tokenClaims(tok.AccessToken)
	return res, nil
}

// maxTokenLifetime bounds how long an access token is cached, whatever expires_in says.
const maxTokenLifetime = 24 * time.Hour

// answerLifetime reads expires_in as the server sent it. oauth2's own reading clamps a
// JSON number at 2^31 s and multiplies a form-encoded one into an overflow (9300000000 s
// came out as the year 1737), so the raw value is read here: absent, an hour (apaleo's);
// 0 or less, or not a number, refused; over 24 h, 24 h.
func answerLifetime(raw any) (time.Duration, error) {
	var secs float64
	switch v := raw.(type) {
	case nil:
		return defaultTokenLifetime, nil
	case float64: // a JSON number, or a form value with a decimal point
		secs = v
	case int64: // a form value
		secs = float64(v)
	case string: // a JSON string (some servers), or a form value too long for an int64
		s := strings.TrimSpace(v)
		if s == "" {
			return defaultTokenLifetime, nil
		}
		// Decimal digits only: ParseFloat also takes "Inf", "NaN" and hex. Too many
		// digits for a float64 is +Inf, so capped below.
		f, err := strconv.ParseFloat(s, 64)
		if strings.Trim(s, "0123456789.+-eE") != "" || err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("expires_in %q is not a number", truncate(printable(s), maxCode))
		}
		secs = f
	default:
		return 0, fmt.Errorf("expires_in is not a number")
	}
	switch {
	case math.IsNaN(secs):
		return 0, fmt.Errorf("expires_in is not a number")
	case secs <= 0:
		return 0, fmt.Errorf("expires_in %v: the token would be expired on arrival", secs)
	case secs > maxTokenLifetime.Seconds():
		return maxTokenLifetime, nil
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// refusedAnswer is a 2xx token answer that was read and fails the checks: apaleo's error
// (a 502), not retried at once, and not a lost answer, since it arrived.
func refusedAnswer(what string) *upstreamError {
	return &upstreamError{Status: http.StatusOK, Answered: true, cause: "token answer refused: " + what}
}

// tokenClaims reads account_code and client_id from a JWT access token. They are shown
// in responses and listings, and account_code decides one thing: an authorization pinned
// to an account (authorize/<name> account_code=..., or the account a re-authorized
// credential holds) is stored only if the token names that account. The signature is not
// checked: the token came straight from the identity server over TLS, the same server
// whose answer the whole credential rests on.
func tokenClaims(raw string) (accountCode, clientID string) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{
		jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
		jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
	})
	if err != nil {
		return "", ""
	}
	var claims struct {
		AccountCode string `json:"account_code"`
		ClientID    string `json:"client_id"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return "", ""
	}
	return claims.AccountCode, claims.ClientID
}

// upstreamError is a failed call to the identity server. Its message never holds a
// credential: it is built from the status, the OAuth error code and description only.
type upstreamError struct {
	Status      int           // HTTP status, 0 for transport errors
	Code        string        // OAuth "error"
	Description string        // OAuth "error_description"
	RetryAfter  time.Duration // from a 429's Retry-After
	Temporary   bool          // worth retrying
	Timeout     bool
	Answered    bool // the server sent an answer, if an unusable one
	// Unreadable: the server answered 2xx, but with no token the client could read.
	Unreadable bool
	// Spent: an Unreadable answer to a request that carried a refresh token or an
	// authorization code. The server has most likely spent that one-time secret, so the
	// request is not retried and the credential may need a new authorization.
	Spent     bool
	spentWhat string // "refresh token" or "authorization code"
	// notSent: the connection could not be made, so the request never left.
	notSent bool
	// final: not retried, whatever its class says (the request policy ended the request).
	final bool
	// lostBefore: this refusal of a refresh token followed an attempt of the same request
	// whose answer was lost (it says how), so apaleo most likely spent the token then.
	lostBefore string
	// rotated: the refresh token a refused 2xx answer carried (newTokenResult). A secret,
	// never in the message: the engine stores it (a refresh) or revokes it (a flow).
	rotated string
	cause   string
	body    []byte // a non-OAuth error body, until clean turns it into cause
}

func (e *upstreamError) Error() string {
	var b strings.Builder
	b.WriteString("apaleo identity server")
	if e.Status != 0 {
		fmt.Fprintf(&b, " answered HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": %s", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	} else if e.cause != "" {
		fmt.Fprintf(&b, ": %s", e.cause)
	}
	if e.Spent {
		fmt.Fprintf(&b, "; not retried at once: the %s sent with it may be spent at apaleo", e.spentWhat)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; retry after %s", e.RetryAfter.Round(time.Second))
	}
	return b.String()
}

// lostAnswer reports whether the request may have reached apaleo and its answer been
// lost on the way back: no answer in time, a dropped connection, a 5xx (a proxy's as
// likely as apaleo's), or a 2xx that cannot be read.
func (e *upstreamError) lostAnswer() bool {
	if e.notSent {
		return false
	}
	return e.Timeout || e.Unreadable || e.Status >= 500 || (!e.Answered && e.Temporary)
}

// lostWhat says how the answer was lost, for messages.
func (e *upstreamError) lostWhat() string {
	switch {
	case e.Timeout:
		return "no answer in time"
	case e.Unreadable:
		return "an answer that could not be read"
	case e.Status >= 500:
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return "the connection failed: " + e.cause
}

// refusedGrant reports a refusal of the grant itself: for a refresh, the refresh token
// (invalid_request is what apaleo answers an old one after the app's scopes changed).
func (e *upstreamError) refusedGrant() bool {
	return e.Code == "invalid_grant" || e.Code == "invalid_request"
}

func classifyOAuthError(err error) *upstreamError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		ue := upstreamFromStatus(re.Response, re.ErrorCode, re.ErrorDescription)
		if ue.Code == "" && ue.cause == "" {
			ue.body = re.Body
		}
		return ue
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return classifyTransportError(err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return classifyTransportError(err)
	}
	// A 2xx that oauth2 could not use: unparsable JSON, no access_token.
	return &upstreamError{Temporary: true, Answered: true, Unreadable: true,
		cause: "unusable token response: " + strings.TrimPrefix(err.Error(), "oauth2: ")}
}

func classifyTransportError(err error) *upstreamError {
	ue := &upstreamError{Temporary: true}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		ue.Timeout = true
		ue.cause = "no answer in time"
	case errors.Is(err, context.Canceled):
		ue.Temporary = false
		ue.cause = "request cancelled"
	default:
		var ce *tls.CertificateVerificationError
		var ua x509.UnknownAuthorityError
		var hn x509.HostnameError
		if errors.As(err, &ce) || errors.As(err, &ua) || errors.As(err, &hn) {
			ue.Temporary = false
			ue.cause = "TLS certificate not trusted (set ca_certificate for a private CA): " + rootCause(err)
		} else {
			ue.cause = rootCause(err)
		}
		var op *net.OpError
		ue.notSent = errors.As(err, &op) && op.Op == "dial"
	}
	return ue
}

// rootCause drops the wrapping url.Error, whose text repeats method and URL.
func rootCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func upstreamFromStatus(resp *http.Response, fields ...string) *upstreamError {
	ue := &upstreamError{Status: resp.StatusCode, Answered: true}
	if len(fields) > 0 {
		ue.Code = fields[0]
	}
	if len(fields) > 1 {
		ue.Description = fields[1]
	}
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		ue.Temporary = true
		ue.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if ue.Code == "" {
			ue.Code = "rate_limited"
		}
	case resp.StatusCode >= 500:
		ue.Temporary = true
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		ue.cause = "redirected to " + redirectHost(resp) + "; redirects are not followed, set identity_url to the server itself"
	}
	return ue
}

func redirectHost(resp *http.Response) string {
	if u, err := resp.Location(); err == nil {
		return u.Scheme + "://" + u.Host
	}
	return "an unknown location"
}

// parseRetryAfter reads delay-seconds or an HTTP date (RFC 9110 10.2.3).
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// attemptObserver is told of every attempt withRetries makes (every HTTP request sent),
// with its error (nil on success) and duration: the backend counts token requests there.
type attemptObserver func(err error, d time.Duration)

type attemptObserverKey struct{}

func withAttemptObserver(ctx context.Context, f attemptObserver) context.Context {
	return context.WithValue(ctx, attemptObserverKey{}, f)
}

// attemptGuard is asked before every attempt withRetries makes (an error stops the
// request there, nothing sent) and told of each attempt's outcome: the backend charges
// its request budget there.
type attemptGuard interface {
	before(ctx context.Context) error
	after(err error)
}

type attemptGuardKey struct{}

func withAttemptGuard(ctx context.Context, g attemptGuard) context.Context {
	return context.WithValue(ctx, attemptGuardKey{}, g)
}

// withoutAttemptObserver hides the observer and the guard from an outer retry loop whose
// attempts are inner calls that report (and are charged for) their requests themselves.
func withoutAttemptObserver(ctx context.Context) context.Context {
	return context.WithValue(context.WithValue(ctx, attemptObserverKey{}, nil), attemptGuardKey{}, nil)
}

// withRetries runs attempt until it succeeds, fails for good, or p.Total runs out.
// 5xx, transport errors and 429 are retried; a 429's Retry-After is honoured when it
// fits in the time left, otherwise the error says when to come back.
func withRetries[T any](ctx context.Context, p retryPolicy, attempt func(context.Context) (T, error)) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, p.Total)
	defer cancel()
	delay := p.BaseDelay
	var seen attemptsSeen
	var last error
	guard, _ := ctx.Value(attemptGuardKey{}).(attemptGuard)
	for n := 1; ; n++ {
		if guard != nil {
			if err := guard.before(ctx); err != nil {
				if last != nil {
					// A retry the guard did not let go: the attempt before says what failed.
					return zero, fmt.Errorf("%w (gave up after %d attempt(s): %v)", last, n-1, err)
				}
				return zero, err
			}
		}
		v, err := observed(ctx, p, guard, attempt)
		last = err
		if err == nil {
			return v, nil
		}
		var ue *upstreamError
		if !errors.As(err, &ue) || !ue.Temporary || ue.final {
			return zero, err
		}
		ue = seen.report(ctx, ue)
		if p.Attempts > 0 && n >= p.Attempts {
			return zero, err
		}
		if !p.sleep(ctx, ue, delay) {
			return zero, fmt.Errorf("%w (gave up after %d attempt(s) in %s)", ue, n, p.Total)
		}
		if delay *= 2; delay > p.MaxDelay {
			delay = p.MaxDelay
		}
	}
}

// observed runs one attempt within p.PerAttempt, and tells the observer and the guard.
func observed[T any](ctx context.Context, p retryPolicy, guard attemptGuard, attempt func(context.Context) (T, error)) (T, error) {
	actx, acancel := context.WithTimeout(ctx, p.PerAttempt)
	started := time.Now()
	v, err := attempt(actx)
	acancel()
	if observe, ok := ctx.Value(attemptObserverKey{}).(attemptObserver); ok {
		observe(err, time.Since(started))
	}
	if guard != nil {
		guard.after(err)
	}
	return v, err
}

// attemptsSeen remembers the attempts that tell most about a request that failed.
type attemptsSeen struct {
	answered     *upstreamError // the last attempt the server answered
	failedBefore *upstreamError // the last attempt that failed other than by time-out
}

// report is what to report of ue: where the bound cut it short, what the server said
// before, or how the attempt before failed (a refused connection, say), tells more.
func (s *attemptsSeen) report(ctx context.Context, ue *upstreamError) *upstreamError {
	switch {
	case ue.Answered:
		s.answered = ue
	case ue.Timeout && ctx.Err() != nil && s.answered != nil:
		ue = s.answered
	case ue.Timeout && ctx.Err() != nil && s.failedBefore != nil:
		ue = s.failedBefore
	}
	if !ue.Timeout {
		s.failedBefore = ue
	}
	return ue
}

// sleep waits before the next attempt after ue: the backoff delay with jitter, or a
// 429's Retry-After; false when that does not fit in what is left of p.Total.
func (p retryPolicy) sleep(ctx context.Context, ue *upstreamError, delay time.Duration) bool {
	random := p.random
	if random == nil {
		random = rand.Int64N
	}
	wait := delay + time.Duration(random(int64(delay/2+1)))
	if ue.RetryAfter > 0 {
		wait = ue.RetryAfter
	}
	deadline, _ := ctx.Deadline()
	if ctx.Err() != nil || time.Until(deadline) < wait {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
