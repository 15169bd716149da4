package devidp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// AdminPrefix is where AdminHandler expects to be mounted.
const AdminPrefix = "/_admin/"

// AdminHandler serves a test-only control API under /_admin/ (mount it at
// AdminPrefix, with the full path). It has no authentication: expose it only
// on a loopback test server.
//
//	GET    /_admin/stats                   200, Stats as JSON
//	GET    /_admin/timeline                200, Timeline as JSON: a list of TokenRequest
//	POST   /_admin/reset                   204; zero the stats, empty the timeline, clear queued faults
//	POST   /_admin/faults                  204; body: a JSON list of faults (or one fault), appended
//	DELETE /_admin/faults                  204; clear queued faults
//	POST   /_admin/revoke?client_id=ID     204; RevokeRefreshTokens(ID)
//	POST   /_admin/clients                 204; body: a JSON Client or list of them; AddClient each
//	GET    /_admin/secrets                 200, Secrets as JSON (a test aid, see below)
//
// Errors are 4xx with {"error": "..."}.
//
// GET /_admin/secrets is a TEST AID for secret scanners: calling AdminHandler
// switches on recording of every client secret, authorization code, PKCE
// code_verifier and refresh token the server issues or receives from then on
// (see [Server.Secrets]), so that an end-to-end test can search its logs and
// responses for values that only the identity server and the client ever saw.
// The values are kept in memory for that purpose only (at most
// maxSecretsPerKind of each kind), are never logged, and go with the process.
func (s *Server) AdminHandler() http.Handler {
	s.secrets.on.Store(true)
	return http.HandlerFunc(s.serveAdmin)
}

func (s *Server) serveAdmin(w http.ResponseWriter, r *http.Request) {
	route := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(AdminPrefix, "/"))
	switch {
	case route == "/stats" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		writeJSON(w, http.StatusOK, s.Stats())
	case route == "/timeline" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		writeJSON(w, http.StatusOK, s.Timeline())
	case route == "/reset" && r.Method == http.MethodPost:
		s.ResetStats()
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case route == "/faults" && r.Method == http.MethodPost:
		var faults []Fault
		if err := decodeOneOrList(r.Body, &faults); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.InjectFaults(faults...)
		w.WriteHeader(http.StatusNoContent)
	case route == "/faults" && r.Method == http.MethodDelete:
		s.ClearFaults()
		w.WriteHeader(http.StatusNoContent)
	case route == "/revoke" && r.Method == http.MethodPost:
		id := r.URL.Query().Get("client_id")
		if id == "" {
			adminError(w, http.StatusBadRequest, "query parameter client_id is required")
			return
		}
		s.RevokeRefreshTokens(id)
		w.WriteHeader(http.StatusNoContent)
	case route == "/clients" && r.Method == http.MethodPost:
		var clients []Client
		if err := decodeOneOrList(r.Body, &clients); err != nil {
			adminError(w, http.StatusBadRequest, err.Error())
			return
		}
		for _, c := range clients {
			if _, err := c.normalize(); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		for _, c := range clients {
			if err := s.AddClient(c); err != nil {
				adminError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	case route == "/secrets" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		writeJSON(w, http.StatusOK, s.Secrets())
	case route == "/stats" || route == "/timeline" || route == "/reset" || route == "/faults" || route == "/revoke" || route == "/clients" || route == "/secrets":
		adminError(w, http.StatusMethodNotAllowed, "method not allowed")
	default:
		adminError(w, http.StatusNotFound, "no such admin route")
	}
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// decodeOneOrList decodes a JSON list, or a single object as a list of one,
// into *[]T. Unknown keys are an error.
func decodeOneOrList[T any](body io.Reader, out *[]T) error {
	data, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil {
		return err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return fmt.Errorf("empty body: want JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if data[0] == '[' {
		return dec.Decode(out)
	}
	var one T
	if err := dec.Decode(&one); err != nil {
		return err
	}
	*out = []T{one}
	return nil
}

// maxSecretsPerKind bounds each list of recorded secrets, so that a long
// benchmark against a server with the admin API does not grow without bound.
// Values beyond it are not recorded and Secrets.Truncated says so.
const maxSecretsPerKind = 20000

// Secrets is what GET /_admin/secrets answers: every secret value the server
// issued or received since recording began (see AdminHandler), each list in
// first-seen order without duplicates. A TEST AID, for secret scanners only.
type Secrets struct {
	// ClientSecrets: the secrets of the registered clients, then every other
	// client secret presented at /connect/token or /connect/revocation (wrong
	// ones included).
	ClientSecrets []string `json:"client_secrets"`
	// AuthorizationCodes: codes issued by /connect/authorize and codes
	// presented with the authorization_code grant.
	AuthorizationCodes []string `json:"authorization_codes"`
	// CodeVerifiers: PKCE code_verifier values presented at /connect/token.
	CodeVerifiers []string `json:"code_verifiers"`
	// RefreshTokens: refresh tokens issued, presented with the refresh_token
	// grant, or presented for revocation.
	RefreshTokens []string `json:"refresh_tokens"`
	// Truncated: some value was not recorded because a list was full.
	Truncated bool `json:"truncated"`
}

// Secrets returns the recorded secret values (see AdminHandler). Without the
// admin API nothing is recorded and only the registered client secrets are
// returned.
func (s *Server) Secrets() Secrets {
	var registered []string
	s.store.mu.RLock()
	for _, c := range s.store.clients {
		registered = append(registered, c.cfg.Secret)
	}
	s.store.mu.RUnlock()
	slices.Sort(registered)

	l := &s.secrets
	l.mu.Lock()
	defer l.mu.Unlock()
	out := Secrets{
		ClientSecrets:      slices.Compact(registered),
		AuthorizationCodes: slices.Clone(l.lists[secretCode].values),
		CodeVerifiers:      slices.Clone(l.lists[secretVerifier].values),
		RefreshTokens:      slices.Clone(l.lists[secretRefresh].values),
		Truncated:          l.truncated,
	}
	for _, v := range l.lists[secretClient].values {
		if !slices.Contains(out.ClientSecrets, v) {
			out.ClientSecrets = append(out.ClientSecrets, v)
		}
	}
	for _, p := range []*[]string{&out.ClientSecrets, &out.AuthorizationCodes, &out.CodeVerifiers, &out.RefreshTokens} {
		if *p == nil {
			*p = []string{}
		}
	}
	return out
}

type secretKind int

const (
	secretClient secretKind = iota
	secretCode
	secretVerifier
	secretRefresh
	numSecretKinds
)

// secretLog records secret values for GET /_admin/secrets once on is set.
type secretLog struct {
	on        atomic.Bool
	mu        sync.Mutex
	lists     [numSecretKinds]secretList
	truncated bool
}

type secretList struct {
	seen   map[string]struct{}
	values []string
}

func (l *secretLog) note(kind secretKind, v string) {
	if v == "" || !l.on.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	sl := &l.lists[kind]
	if _, ok := sl.seen[v]; ok {
		return
	}
	if len(sl.values) >= maxSecretsPerKind {
		l.truncated = true
		return
	}
	if sl.seen == nil {
		sl.seen = map[string]struct{}{}
	}
	sl.seen[v] = struct{}{}
	sl.values = append(sl.values, v)
}

// noteClientAuth records the client secret r presents (HTTP Basic, whose parts
// are form-encoded per RFC 6749 2.3.1, or client_secret in the parsed form).
func (l *secretLog) noteClientAuth(r *http.Request) {
	if !l.on.Load() {
		return
	}
	if _, secret, ok := r.BasicAuth(); ok {
		l.note(secretClient, secret)
		if un, err := url.QueryUnescape(secret); err == nil {
			l.note(secretClient, un)
		}
	}
	if r.PostForm != nil {
		l.note(secretClient, r.PostForm.Get("client_secret"))
	}
}

// noteTokenRequest records the secrets in a parsed /connect/token request.
func (l *secretLog) noteTokenRequest(r *http.Request) {
	if !l.on.Load() || r.PostForm == nil {
		return
	}
	l.noteClientAuth(r)
	switch r.PostForm.Get("grant_type") {
	case GrantAuthorizationCode:
		l.note(secretCode, r.PostForm.Get("code"))
		l.note(secretVerifier, r.PostForm.Get("code_verifier"))
	case GrantRefreshToken:
		l.note(secretRefresh, r.PostForm.Get("refresh_token"))
	}
}

// noteRevocation records the client secret and the token of a parsed
// /connect/revocation request (unless it is an access token: hinted as one,
// or a JWT).
func (l *secretLog) noteRevocation(r *http.Request) {
	if !l.on.Load() || r.PostForm == nil {
		return
	}
	l.noteClientAuth(r)
	tok := r.PostForm.Get("token")
	if r.PostForm.Get("token_type_hint") != "access_token" && strings.Count(tok, ".") != 2 {
		l.note(secretRefresh, tok)
	}
}
