package devidp

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"maps"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/token/jwt"
)

// Paths served by Server.
const (
	PathToken      = "/connect/token"
	PathAuthorize  = "/connect/authorize"
	PathRevocation = "/connect/revocation"
	PathDiscovery  = "/.well-known/openid-configuration"
	PathJWKS       = "/.well-known/openid-configuration/jwks"
	PathHealth     = "/healthz"
)

// Options configures a Server.
type Options struct {
	Clients              []Client
	AccessTokenLifespan  time.Duration // default 1h; expires_in of token responses
	RefreshTokenLifespan time.Duration // default 30 days (Duende's absolute lifetime)
	// Logger, if set, gets one line per request: method, path, status,
	// grant type, client id, fault, duration. Never secrets, codes, tokens
	// or query strings.
	Logger *log.Logger
	// Issuer is the "iss" claim and the base of the discovery document's
	// endpoints. Default: scheme://Host of each request.
	Issuer string
	// SigningKey signs access tokens (RS256). Default: a fresh RSA 2048 key.
	SigningKey *rsa.PrivateKey
	// DuendeErrorStatus answers every 4xx token-endpoint error with 400, as
	// Duende IdentityServer does. Default (fosite): invalid_client is 401.
	DuendeErrorStatus bool
	// Interactive shows a login page (TestUser, TestPassword) and a consent page with
	// Allow and Deny at the authorize endpoint, instead of consenting at once (login.go).
	Interactive bool
}

// Stats counts what the server did since New or the last ResetStats.
type Stats struct {
	TokenRequests int            `json:"token_requests"` // every POST /connect/token, faulted ones included
	ByGrant       map[string]int `json:"by_grant"`       // by grant_type form value (faulted requests included)
	ByClient      map[string]int `json:"by_client"`      // by the client id the request names (faulted requests included), the first maxClientsCounted ids
	// ByScope counts client credentials requests by the scopes asked (the scope form
	// value, its words sorted and joined by one space): one client's narrowed uses apart.
	ByScope        map[string]int `json:"by_scope"`
	Issued         int            `json:"issued"`          // successful token responses (also those then truncated or dropped by a fault)
	Errors         map[string]int `json:"errors"`          // token-endpoint OAuth errors by code, e.g. "invalid_grant" (injected faults not counted)
	Revocations    int            `json:"revocations"`     // /connect/revocation requests answered 200
	Authorizations int            `json:"authorizations"`  // codes issued by /connect/authorize
	FaultsApplied  int            `json:"faults_applied"`  // faults consumed by token requests
	PendingFaults  int            `json:"pending_faults"`  // faults still queued
	RefreshRevoked int            `json:"refresh_revoked"` // active refresh tokens removed by RevokeRefreshTokens
	// RefreshTokenMostSent is the most times any one refresh token value came to the
	// token endpoint (faulted requests included): a client that sends a token again after
	// a lost answer shows here, whatever it reports of itself.
	RefreshTokenMostSent int `json:"refresh_token_most_sent"`
	// RequestTimes holds when each token request arrived (Unix milliseconds), the first
	// maxRequestTimes of them: tests measure request rates with it.
	RequestTimes []int64 `json:"request_times_ms"`
}

// TokenRequest is one POST /connect/token in the Timeline.
type TokenRequest struct {
	Arrived  int64  `json:"arrived_ms"`  // Unix milliseconds, when its form was read
	Answered int64  `json:"answered_ms"` // Unix milliseconds, when it was answered or dropped; 0 while under way
	Grant    string `json:"grant"`
	Client   string `json:"client_id"`
	// RefreshToken names the refresh token a refresh_token grant presented, by a
	// fingerprint (hex of its SHA-256's first 8 bytes), never the token itself: the
	// same token presented twice has the same fingerprint.
	RefreshToken string `json:"refresh_token_id,omitempty"`
	Status       int    `json:"status"` // the HTTP status answered; 0: none (connection dropped)
	Fault        string `json:"fault,omitempty"`
}

const (
	maxRequestTimes   = 100_000
	maxClientsCounted = 1000
)

// Server is the identity server. It is safe for concurrent use.
type Server struct {
	opts     Options
	config   *fosite.Config
	provider fosite.OAuth2Provider
	store    *store
	kid      string
	jwks     []byte
	pub      *rsa.PublicKey

	// grantMu serialises the grants and revocations that consume state
	// (authorization codes, refresh tokens), so a code or refresh token can
	// be redeemed only once even by concurrent requests. Client-credentials
	// requests do not take it.
	grantMu sync.Mutex

	mu    sync.Mutex // guards stats, refreshSent, timeline and faults
	stats Stats
	// refreshSent counts the token requests per refresh token, by its SHA-256.
	refreshSent map[[sha256.Size]byte]int
	timeline    []*TokenRequest // see Timeline; entries are completed when answered
	faults      []Fault

	secrets secretLog // for GET /_admin/secrets only (a test aid)

	sessions sync.Map // login session cookie value -> user name (Interactive only)

	closed    chan struct{}
	closeOnce sync.Once
}

// New creates a server with the given clients.
func New(opts Options) (*Server, error) {
	if opts.AccessTokenLifespan <= 0 {
		opts.AccessTokenLifespan = time.Hour
	}
	if opts.RefreshTokenLifespan <= 0 {
		opts.RefreshTokenLifespan = 30 * 24 * time.Hour
	}
	opts.Issuer = strings.TrimRight(opts.Issuer, "/")
	key := opts.SigningKey
	if key == nil {
		var err error
		if key, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("devidp: generating signing key: %w", err)
		}
	}
	globalSecret := make([]byte, 32)
	if _, err := rand.Read(globalSecret); err != nil {
		return nil, err
	}

	jwk := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.RS256), Use: "sig"}
	thumb, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("devidp: key thumbprint: %w", err)
	}
	jwk.KeyID = base64.RawURLEncoding.EncodeToString(thumb)
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
	if err != nil {
		return nil, err
	}

	cfg := &fosite.Config{
		AccessTokenLifespan:            opts.AccessTokenLifespan,
		RefreshTokenLifespan:           opts.RefreshTokenLifespan,
		AuthorizeCodeLifespan:          5 * time.Minute,
		GlobalSecret:                   globalSecret,
		ScopeStrategy:                  fosite.ExactScopeStrategy,
		EnforcePKCE:                    true,
		EnablePKCEPlainChallengeMethod: false,
		RefreshTokenScopes:             []string{ScopeOfflineAccess},
		JWTScopeClaimKey:               jwt.JWTScopeFieldString,
		ClientSecretsHasher:            secretHasher{},
		AccessTokenIssuer:              opts.Issuer,
	}
	st := newStore()
	keyGetter := func(context.Context) (interface{}, error) { return key, nil }
	strategy := compose.NewOAuth2JWTStrategy(keyGetter, compose.NewOAuth2HMACStrategy(cfg), cfg)
	provider := compose.Compose(cfg, st, strategy,
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2TokenRevocationFactory,
		compose.OAuth2PKCEFactory, // must come after the authorize-code handler
	)

	s := &Server{
		opts:     opts,
		config:   cfg,
		provider: provider,
		store:    st,
		kid:      jwk.KeyID,
		jwks:     jwks,
		pub:      &key.PublicKey,
		closed:   make(chan struct{}),
	}
	s.stats = newStats()
	for _, c := range opts.Clients {
		if err := s.AddClient(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func newStats() Stats {
	return Stats{ByGrant: map[string]int{}, ByClient: map[string]int{}, ByScope: map[string]int{}, Errors: map[string]int{}}
}

// AddClient registers c, replacing a client with the same ID. Tokens already
// issued to a replaced client stay valid.
func (s *Server) AddClient(c Client) error {
	rc, err := newRegisteredClient(c)
	if err != nil {
		return err
	}
	s.store.setClient(rc)
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.stats
	out.RequestTimes = slices.Clone(s.stats.RequestTimes)
	out.ByGrant = maps.Clone(s.stats.ByGrant)
	out.ByClient = maps.Clone(s.stats.ByClient)
	out.Errors = maps.Clone(s.stats.Errors)
	out.ByScope = maps.Clone(s.stats.ByScope)
	out.PendingFaults = len(s.faults)
	return out
}

// Timeline returns every token request since New or the last ResetStats, the first
// maxRequestTimes of them, in the order they arrived: who asked, with which refresh
// token, when it was answered and how. (Apart from Stats, which it would make large.)
func (s *Server) Timeline() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TokenRequest, len(s.timeline))
	for i, e := range s.timeline {
		out[i] = *e
	}
	return out
}

// ResetStats sets all counters to zero and empties the timeline. Queued faults stay.
func (s *Server) ResetStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats = newStats()
	s.timeline = nil
	s.refreshSent = nil
}

// RevokeRefreshTokens removes every refresh token of clientID, as an apaleo
// admin revoking the app's access would. Using one of them afterwards answers
// invalid_grant.
func (s *Server) RevokeRefreshTokens(clientID string) {
	s.grantMu.Lock()
	n := s.store.deleteRefreshTokensOf(clientID)
	s.grantMu.Unlock()
	s.mu.Lock()
	s.stats.RefreshRevoked += n
	s.mu.Unlock()
}

// Close releases requests held by Hang (they get no answer) and cuts short
// pending Delays. The server keeps answering; call Close before closing the
// http.Server or httptest.Server, whose Close waits for active requests.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closed) })
}

// PublicKey returns the key that verifies access tokens.
func (s *Server) PublicKey() *rsa.PublicKey { return s.pub }

// KeyID is the "kid" header of access tokens and of the JWKS entry.
func (s *Server) KeyID() string { return s.kid }

// reqLog collects what the request log line says besides method/path/status.
type reqLog struct {
	grant, client, fault string
}

// ServeHTTP serves the identity-server routes (see the package doc).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	var info reqLog
	if s.opts.Logger != nil {
		defer func() {
			status := "-"
			if sw.status != 0 {
				status = fmt.Sprint(sw.status)
			}
			var extra []string
			if info.grant != "" {
				extra = append(extra, "grant="+logSafe(info.grant))
			}
			if info.client != "" {
				extra = append(extra, "client_id="+logSafe(info.client))
			}
			if info.fault != "" {
				extra = append(extra, "fault="+info.fault)
			}
			s.opts.Logger.Printf("%s %s %s %s %s", r.Method, r.URL.Path, status, strings.Join(extra, " "), time.Since(start).Round(time.Microsecond))
		}()
	}
	switch r.URL.Path {
	case PathToken:
		s.handleToken(sw, r, &info)
	case PathAuthorize:
		s.handleAuthorize(sw, r, &info)
	case PathRevocation:
		s.handleRevocation(sw, r, &info)
	case PathDiscovery:
		s.handleDiscovery(sw, r)
	case PathJWKS:
		if !getOnly(sw, r) {
			return
		}
		sw.Header().Set("Content-Type", "application/json")
		_, _ = sw.Write(s.jwks)
	case PathHealth:
		if !getOnly(sw, r) {
			return
		}
		sw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = sw.Write([]byte("ok\n"))
	default:
		writeJSON(sw, http.StatusNotFound, map[string]string{"error": "not_found"})
	}
}

func getOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) issuer(r *http.Request) string {
	if s.opts.Issuer != "" {
		return s.opts.Issuer
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// logSafe keeps request-supplied values on one short log line.
func logSafe(v string) string {
	if len(v) > 64 {
		v = v[:64] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == ' ' {
			return '?'
		}
		return r
	}, v)
}

// requestClientID is the client id a request names (for the log only).
func requestClientID(r *http.Request) string {
	if id, _, ok := r.BasicAuth(); ok {
		return id
	}
	if r.PostForm != nil && r.PostForm.Get("client_id") != "" {
		return r.PostForm.Get("client_id")
	}
	return r.URL.Query().Get("client_id")
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request, info *reqLog) {
	if r.Method != http.MethodPost {
		// fosite answers invalid_request.
		s.token(r.Context(), w, r, "")
		return
	}
	_ = r.ParseForm() // fosite reports malformed bodies itself
	s.secrets.noteTokenRequest(r)
	grant := r.PostForm.Get("grant_type")
	info.grant, info.client = grant, requestClientID(r)

	fault, faulted, entry := s.takeFault(grant, info.client, r.PostForm.Get("scope"), r.PostForm.Get("refresh_token"))
	defer s.answered(entry, w)
	if !faulted {
		s.token(r.Context(), w, r, grant)
		return
	}
	info.fault = fault.String()
	if s.applyPreFault(w, r, fault) {
		return
	}
	if !fault.Truncate && !fault.NoExpiresIn && !fault.DropAfterHandle && len(fault.Set) == 0 {
		s.token(r.Context(), w, r, grant)
		return
	}
	rec := newRecorder()
	s.token(r.Context(), rec, r, grant)
	s.applyPostFault(w, rec, fault)
}

// token runs the token endpoint through fosite.
func (s *Server) token(ctx context.Context, w http.ResponseWriter, r *http.Request, grant string) {
	switch grant {
	case "", GrantClientCredentials:
	case GrantAuthorizationCode, GrantRefreshToken:
		s.grantMu.Lock()
		defer s.grantMu.Unlock()
	default:
		s.writeTokenError(ctx, w, nil, fosite.ErrUnsupportedGrantType.WithHintf("The grant type '%s' is not supported.", grant))
		return
	}

	ar, err := s.provider.NewAccessRequest(ctx, r, newSession())
	if err != nil {
		s.writeTokenError(ctx, w, ar, err)
		return
	}
	if err := s.prepareSession(ar, grant, s.issuer(r)); err != nil {
		s.writeTokenError(ctx, w, ar, err)
		return
	}
	resp, err := s.provider.NewAccessResponse(ctx, ar)
	if err != nil {
		s.writeTokenError(ctx, w, ar, err)
		return
	}
	if rt, ok := resp.GetExtra("refresh_token").(string); ok {
		s.secrets.note(secretRefresh, rt)
	}
	resp.SetTokenType("Bearer") // Duende's spelling; fosite says "bearer"
	if exp := ar.GetSession().GetExpiresAt(fosite.AccessToken); !exp.IsZero() {
		// fosite truncates (3599); Duende answers the configured 3600.
		resp.SetExpiresIn(time.Until(exp).Round(time.Second))
	}
	s.provider.WriteAccessResponse(ctx, w, ar, resp)
	s.mu.Lock()
	s.stats.Issued++
	s.mu.Unlock()
}

func (s *Server) writeTokenError(ctx context.Context, w http.ResponseWriter, ar fosite.AccessRequester, err error) {
	rfc := fosite.ErrorToRFC6749Error(err)
	s.mu.Lock()
	s.stats.Errors[rfc.ErrorField]++
	s.mu.Unlock()
	if s.opts.DuendeErrorStatus && rfc.CodeField >= 400 && rfc.CodeField < 500 && rfc.CodeField != http.StatusBadRequest {
		rfc = rfc.WithWrap(rfc.Unwrap()) // a copy: rfc may be one of fosite's globals
		rfc.CodeField = http.StatusBadRequest
	}
	s.provider.WriteAccessError(ctx, w, ar, rfc)
}

func newSession() *oauth2.JWTSession {
	return &oauth2.JWTSession{
		JWTClaims: &jwt.JWTClaims{Extra: map[string]interface{}{}},
		JWTHeader: &jwt.Headers{Extra: map[string]interface{}{}},
		ExpiresAt: map[fosite.TokenType]time.Time{},
	}
}

// prepareSession sets the claims of the access token about to be issued and,
// for client credentials, the granted scopes. The session is cloned: for the
// code and refresh grants it comes from storage.
func (s *Server) prepareSession(ar fosite.AccessRequester, grant, issuer string) error {
	js, ok := ar.GetSession().(*oauth2.JWTSession)
	if !ok {
		return fosite.ErrServerError.WithDebugf("unexpected session type %T", ar.GetSession())
	}
	js = js.Clone().(*oauth2.JWTSession)
	js.GetJWTClaims()
	claims := js.JWTClaims
	if claims.Extra == nil {
		claims.Extra = map[string]interface{}{}
	}
	claims.IssuedAt = time.Time{} // fresh iat, jti and iss on every token
	claims.JTI = ""
	claims.Issuer = issuer
	js.GetJWTHeader().Add("kid", s.kid)
	js.JWTHeader.Add("typ", "at+jwt")

	if grant == GrantClientCredentials {
		rc, ok := s.store.client(ar.GetClient().GetID())
		if !ok {
			return fosite.ErrInvalidClient
		}
		claims.Subject = rc.cfg.ID
		js.Subject = rc.cfg.ID
		claims.Extra["client_id"] = rc.cfg.ID
		if ac := rc.cfg.accountCode(grant); ac != "" {
			claims.Extra["account_code"] = ac
		}
		req, ok := ar.(*fosite.AccessRequest)
		if !ok {
			return fosite.ErrServerError.WithDebugf("unexpected request type %T", ar)
		}
		switch {
		case len(rc.cfg.GrantedScopes) > 0:
			req.GrantedScope = fosite.Arguments(slices.Clone(rc.cfg.GrantedScopes))
		case len(ar.GetRequestedScopes()) == 0:
			for _, sc := range rc.cfg.Scopes {
				ar.GrantScope(sc)
			}
		default:
			for _, sc := range ar.GetRequestedScopes() {
				ar.GrantScope(sc)
			}
		}
	}
	ar.SetSession(js)
	return nil
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request, info *reqLog) {
	ctx := r.Context()
	info.client = requestClientID(r)
	ar, err := s.provider.NewAuthorizeRequest(ctx, r)
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	rc, ok := s.store.client(ar.GetClient().GetID())
	if !ok {
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrInvalidClient)
		return
	}
	if !rc.cfg.has(GrantAuthorizationCode) {
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrUnauthorizedClient.WithHint("The client may not use the authorization_code grant."))
		return
	}
	requested := ar.GetRequestedScopes()
	if len(requested) == 0 {
		s.provider.WriteAuthorizeError(ctx, w, ar, fosite.ErrInvalidScope.WithHint("The 'scope' parameter is missing."))
		return
	}
	if s.opts.Interactive && !s.interact(w, r, ar, rc.cfg.accountCode(GrantAuthorizationCode)) {
		return
	}
	if len(rc.cfg.GrantedScopes) > 0 {
		for _, sc := range rc.cfg.GrantedScopes {
			ar.GrantScope(sc)
		}
		if requested.Has(ScopeOfflineAccess) {
			ar.GrantScope(ScopeOfflineAccess)
		}
	} else {
		for _, sc := range requested {
			ar.GrantScope(sc)
		}
	}

	sess := newSession()
	sess.Subject = TestUser
	sess.Username = TestUser
	sess.JWTClaims.Subject = TestUser
	sess.JWTClaims.Extra["client_id"] = rc.cfg.ID
	sess.JWTClaims.Extra["account_code"] = rc.cfg.accountCode(GrantAuthorizationCode)

	resp, err := s.provider.NewAuthorizeResponse(ctx, ar, sess)
	if err != nil {
		s.provider.WriteAuthorizeError(ctx, w, ar, err)
		return
	}
	s.secrets.note(secretCode, resp.GetCode())
	resp.AddParameter("session_state", randomToken(16)) // as Duende; clients ignore it
	s.provider.WriteAuthorizeResponse(ctx, w, ar, resp)
	s.mu.Lock()
	s.stats.Authorizations++
	s.mu.Unlock()
}

func (s *Server) handleRevocation(w http.ResponseWriter, r *http.Request, info *reqLog) {
	ctx := r.Context()
	s.grantMu.Lock()
	err := s.provider.NewRevocationRequest(ctx, r)
	s.grantMu.Unlock()
	s.secrets.noteRevocation(r)
	info.client = requestClientID(r)
	if err == nil {
		s.mu.Lock()
		s.stats.Revocations++
		s.mu.Unlock()
	}
	s.provider.WriteRevocationResponse(ctx, w, err)
}

func (s *Server) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	iss := s.issuer(r)
	s.store.mu.RLock()
	var scopes []string
	for _, c := range s.store.clients {
		for _, sc := range c.fosite.Scopes {
			if !slices.Contains(scopes, sc) {
				scopes = append(scopes, sc)
			}
		}
	}
	s.store.mu.RUnlock()
	sort.Strings(scopes)
	auth := []string{"client_secret_basic", "client_secret_post"}
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                     iss,
		"authorization_endpoint":                     iss + PathAuthorize,
		"token_endpoint":                             iss + PathToken,
		"revocation_endpoint":                        iss + PathRevocation,
		"jwks_uri":                                   iss + PathJWKS,
		"scopes_supported":                           scopes,
		"response_types_supported":                   []string{"code"},
		"response_modes_supported":                   []string{"query"},
		"grant_types_supported":                      []string{GrantAuthorizationCode, GrantClientCredentials, GrantRefreshToken},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      auth,
		"revocation_endpoint_auth_methods_supported": auth,
		"subject_types_supported":                    []string{"public"},
		"id_token_signing_alg_values_supported":      []string{string(jose.RS256)},
	})
}

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// statusWriter records the status for the log and passes Hijack through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("devidp: connection cannot be hijacked")
	}
	return hj.Hijack()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
