package apaleo

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// creds_status.go is what creds/ lists of each credential (state, last error, next
// attempt, expiry) and the credentials gauge of the metrics, from memory where it can.

// Credential states, as creds/ lists them.
const (
	stateOK                 = "ok"
	stateNoToken            = "no_token"
	stateFailing            = "failing"
	stateNeedsAuthorization = "needs_authorization"
)

// statuses lists creds/ with each credential's status, from memory where it can: no
// token request, and a storage read only for entries not yet in memory.
func (b *backend) statuses(ctx context.Context, s logical.Storage) ([]string, map[string]credStatus, error) {
	names, err := s.List(ctx, credsPrefix)
	if err != nil {
		return nil, nil, err
	}
	now := b.now()
	out := make(map[string]credStatus, len(names))
	for _, n := range names {
		cred, err := b.cred(ctx, s, n)
		if err != nil {
			return nil, nil, err
		}
		if cred == nil {
			continue
		}
		cfg, err := b.config(ctx, s, cred.Config)
		if err != nil {
			return nil, nil, err
		}
		out[n] = b.status(n, cred, cfg, now)
	}
	return names, out, nil
}

// credentialCounts is the credentials gauge: config -> state -> count, at scrape time,
// from memory only, so a scrape reads no storage (listing and loading 10,000 entries
// took seconds). Memory holds every credential written, read or listed since the start;
// loadCredentials fills in the rest once.
func (b *backend) credentialCounts() map[string]*stateCounts {
	now := b.now()
	out := map[string]*stateCounts{}
	b.creds.each(func(name string, cred *credential) {
		if u := b.unsavedOf(name); u != nil {
			cred = u
		}
		cfg, _ := b.configs.get(cred.Config)
		s := b.status(name, cred, cfg, now)
		c := out[s.config]
		if c == nil {
			c = new(stateCounts)
			out[s.config] = c
		}
		c.add(s.state)
	})
	return out
}

// loadCredentials brings every credential and config into memory, for the gauge.
func (b *backend) loadCredentials() {
	if b.storage == nil {
		return
	}
	if _, _, err := b.statuses(context.Background(), b.storage); err != nil {
		b.Logger().Warn("loading credentials for the metrics failed", "error", err)
	}
}

// credStatus is what creds/ lists of one credential.
type credStatus struct {
	config, grantType, accountCode, state, lastError    string
	scopes                                              []string // of a narrowed credential
	expiresAt, nextAttempt, lastRefreshed, authorizedAt time.Time
}

func (b *backend) status(name string, cred *credential, cfg *apaleoConfig, now time.Time) credStatus {
	s := credStatus{config: cred.Config, grantType: cred.GrantType, accountCode: cred.AccountCode, state: stateNoToken}
	switch cred.Kind {
	case kindAuthorized:
		s.authorizedAt = cred.CreatedAt
	case kindNarrowed:
		s.scopes = cred.Scopes
	}
	if t := cred.Token; t != nil {
		s.lastRefreshed = t.IssuedAt
		if s.accountCode == "" {
			s.accountCode = t.AccountCode
		}
		if cfg != nil && t.valid(cfg, now) {
			s.expiresAt = t.ExpiresAt
			s.state = stateOK
		}
	}
	if f := b.standing(name, cred, cfg); f != nil {
		s.state = stateFailing
		if f.kind == failUntilAuthorize || f.kind == failOtherApp {
			s.state = stateNeedsAuthorization
		}
		s.lastError = f.err.Error()
		s.nextAttempt = f.next
	}
	if until, cause, held := b.holdOf(cred.Config, now); held && s.state != stateNeedsAuthorization {
		// The app's 429 holds every name of the config.
		s.state = stateFailing
		s.lastError = fmt.Sprintf("%v; no token request of config/%s goes out until then", cause, cred.Config)
		s.nextAttempt = until
	}
	if err := outsideConfig(name, cred, cfg); err != nil {
		s.state = stateFailing
		s.lastError = err.Error()
	}
	return s
}

func (s credStatus) keyInfo() map[string]any {
	m := map[string]any{
		"config":       s.config,
		"grant_type":   s.grantType,
		"account_code": s.accountCode,
		"state":        s.state,
	}
	for k, t := range map[string]time.Time{"expires_at": s.expiresAt, "next_attempt_at": s.nextAttempt, "last_refreshed_at": s.lastRefreshed, "authorized_at": s.authorizedAt} {
		if !t.IsZero() {
			m[k] = t.UTC().Format(time.RFC3339)
		}
	}
	if s.lastError != "" {
		m["last_error"] = s.lastError
	}
	if len(s.scopes) > 0 {
		m["scopes"] = s.scopes
	}
	return m
}
