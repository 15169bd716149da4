package devidp

import (
	"context"
	"sync"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/pkce"
)

// maxAccessTokens bounds the access-token sessions kept for RFC 7009
// revocation, so that a long benchmark of client-credentials requests does not
// grow the process without bound. The oldest sessions are forgotten first
// (their JWTs stay valid until they expire, as JWTs do anyway).
const maxAccessTokens = 20000

// registeredClient is a client as configured plus the fosite view of it.
type registeredClient struct {
	cfg    Client
	fosite *fosite.DefaultClient
}

type codeEntry struct {
	active bool
	req    fosite.Requester
	// expires is the code's expiry, read from its session when it was stored: fosite
	// goes on writing that session's expiries (the tokens' ones) when the code is
	// redeemed, outside the store's lock, so the sweep must not read them.
	expires time.Time
}

type refreshEntry struct {
	active    bool
	requestID string
	clientID  string
	req       fosite.Requester
}

type accessEntry struct {
	requestID string
	req       fosite.Requester
}

// store is fosite storage kept in memory behind one lock. fosite's own
// storage.MemoryStore is not used because it cannot add clients at runtime
// without racing and it writes its refresh-token map under the wrong lock.
type store struct {
	mu sync.RWMutex

	clients map[string]*registeredClient
	codes   map[string]*codeEntry
	pkces   map[string]fosite.Requester

	refresh      map[string]*refreshEntry       // signature -> entry
	refreshByReq map[string]map[string]struct{} // request ID -> signatures

	access      map[string]*accessEntry        // signature -> entry
	accessByReq map[string]map[string]struct{} // request ID -> signatures
	accessOrder []string                       // FIFO of signatures, for the size bound
}

var (
	_ fosite.Storage                = (*store)(nil)
	_ oauth2.CoreStorage            = (*store)(nil)
	_ oauth2.TokenRevocationStorage = (*store)(nil)
	_ pkce.PKCERequestStorage       = (*store)(nil)
)

func newStore() *store {
	return &store{
		clients:      map[string]*registeredClient{},
		codes:        map[string]*codeEntry{},
		pkces:        map[string]fosite.Requester{},
		refresh:      map[string]*refreshEntry{},
		refreshByReq: map[string]map[string]struct{}{},
		access:       map[string]*accessEntry{},
		accessByReq:  map[string]map[string]struct{}{},
	}
}

func (s *store) setClient(c *registeredClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[c.cfg.ID] = c
}

func (s *store) client(id string) (*registeredClient, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.clients[id]
	return c, ok
}

// deleteRefreshTokensOf forgets every refresh token issued to clientID.
func (s *store) deleteRefreshTokensOf(clientID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for sig, e := range s.refresh {
		if e.clientID != clientID {
			continue
		}
		if e.active {
			n++
		}
		delete(s.refresh, sig)
		if set := s.refreshByReq[e.requestID]; set != nil {
			delete(set, sig)
			if len(set) == 0 {
				delete(s.refreshByReq, e.requestID)
			}
		}
	}
	return n
}

// --- fosite.ClientManager

func (s *store) GetClient(_ context.Context, id string) (fosite.Client, error) {
	c, ok := s.client(id)
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return c.fosite, nil
}

// ClientAssertionJWTValid: private_key_jwt client authentication is not
// offered, so no assertion is ever known.
func (s *store) ClientAssertionJWTValid(context.Context, string) error { return nil }

func (s *store) SetClientAssertionJWT(context.Context, string, time.Time) error { return nil }

// --- oauth2.AuthorizeCodeStorage

func (s *store) CreateAuthorizeCodeSession(_ context.Context, code string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Forget codes that can no longer be redeemed.
	now := time.Now()
	for k, e := range s.codes {
		if !e.expires.IsZero() && now.Sub(e.expires) > time.Hour {
			delete(s.codes, k)
		}
	}
	s.codes[code] = &codeEntry{active: true, req: req, expires: req.GetSession().GetExpiresAt(fosite.AuthorizeCode)}
	return nil
}

func (s *store) GetAuthorizeCodeSession(_ context.Context, code string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.codes[code]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if !e.active {
		// fosite needs the request to revoke the tokens issued for the code.
		return e.req, fosite.ErrInvalidatedAuthorizeCode
	}
	return e.req, nil
}

func (s *store) InvalidateAuthorizeCodeSession(_ context.Context, code string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.codes[code]
	if !ok {
		return fosite.ErrNotFound
	}
	e.active = false
	return nil
}

// --- pkce.PKCERequestStorage

func (s *store) CreatePKCERequestSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkces[sig] = req
	return nil
}

func (s *store) GetPKCERequestSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.pkces[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return r, nil
}

func (s *store) DeletePKCERequestSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pkces, sig)
	return nil
}

// --- oauth2.AccessTokenStorage

func (s *store) CreateAccessTokenSession(_ context.Context, sig string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.GetID()
	s.access[sig] = &accessEntry{requestID: id, req: req}
	set := s.accessByReq[id]
	if set == nil {
		set = map[string]struct{}{}
		s.accessByReq[id] = set
	}
	set[sig] = struct{}{}
	s.accessOrder = append(s.accessOrder, sig)
	for len(s.access) > maxAccessTokens && len(s.accessOrder) > 0 {
		old := s.accessOrder[0]
		s.accessOrder = s.accessOrder[1:]
		s.deleteAccessLocked(old)
	}
	if len(s.accessOrder) > 4*maxAccessTokens {
		// Drop queue entries of sessions deleted by other means.
		kept := make([]string, 0, len(s.access))
		for _, sig := range s.accessOrder {
			if _, ok := s.access[sig]; ok {
				kept = append(kept, sig)
			}
		}
		s.accessOrder = kept
	}
	return nil
}

func (s *store) deleteAccessLocked(sig string) {
	e, ok := s.access[sig]
	if !ok {
		return
	}
	delete(s.access, sig)
	if set := s.accessByReq[e.requestID]; set != nil {
		delete(set, sig)
		if len(set) == 0 {
			delete(s.accessByReq, e.requestID)
		}
	}
}

func (s *store) GetAccessTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.access[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return e.req, nil
}

func (s *store) DeleteAccessTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteAccessLocked(sig)
	return nil
}

// --- oauth2.RefreshTokenStorage

func (s *store) CreateRefreshTokenSession(_ context.Context, sig string, _ string, req fosite.Requester) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.GetID()
	s.refresh[sig] = &refreshEntry{active: true, requestID: id, clientID: req.GetClient().GetID(), req: req}
	set := s.refreshByReq[id]
	if set == nil {
		set = map[string]struct{}{}
		s.refreshByReq[id] = set
	}
	set[sig] = struct{}{}
	return nil
}

func (s *store) GetRefreshTokenSession(_ context.Context, sig string, _ fosite.Session) (fosite.Requester, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.refresh[sig]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	if !e.active {
		// fosite needs the request to revoke the whole token family on reuse.
		return e.req, fosite.ErrInactiveToken
	}
	return e.req, nil
}

func (s *store) DeleteRefreshTokenSession(_ context.Context, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	if !ok {
		return nil
	}
	delete(s.refresh, sig)
	if set := s.refreshByReq[e.requestID]; set != nil {
		delete(set, sig)
		if len(set) == 0 {
			delete(s.refreshByReq, e.requestID)
		}
	}
	return nil
}

// RotateRefreshToken retires the refresh token being used (and every other of
// its grant) and the grant's access-token sessions. It fails if the token was
// retired meanwhile, so one refresh token can never be redeemed twice.
func (s *store) RotateRefreshToken(_ context.Context, requestID string, sig string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.refresh[sig]
	if !ok {
		return fosite.ErrNotFound
	}
	if !e.active {
		return fosite.ErrInactiveToken
	}
	s.revokeRefreshLocked(requestID)
	s.revokeAccessLocked(requestID)
	return nil
}

// --- oauth2.TokenRevocationStorage

func (s *store) RevokeRefreshToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeRefreshLocked(requestID)
	return nil
}

func (s *store) RevokeAccessToken(_ context.Context, requestID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revokeAccessLocked(requestID)
	return nil
}

func (s *store) revokeRefreshLocked(requestID string) {
	for sig := range s.refreshByReq[requestID] {
		if e := s.refresh[sig]; e != nil {
			e.active = false
		}
	}
}

func (s *store) revokeAccessLocked(requestID string) {
	for sig := range s.accessByReq[requestID] {
		delete(s.access, sig)
	}
	delete(s.accessByReq, requestID)
}
