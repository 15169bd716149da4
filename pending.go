package apaleo

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// pending.go is the domain of a pending authorization: the storage entry authorize/<name>
// writes under a hash of its state, for callback or exchange to consume once.

// pendingAuthorization is the storage entry pending/<sha256(state)>: one authorize/<name>
// waiting for its callback. It is stored, not kept in memory, so a callback that lands
// after a restart or on another node still finds it; only a hash of state names it.
// Entries stored before account_code and replace existed read as neither: the
// authorization must then yield the account an existing credential holds.
type pendingAuthorization struct {
	Name        string    `json:"name"`
	Config      string    `json:"config"`
	Verifier    string    `json:"verifier"`
	Scopes      []string  `json:"scopes"`
	RedirectURI string    `json:"redirect_uri"`
	ExpiresAt   time.Time `json:"expires_at"`
	// AccountCode, when set, is the only apaleo account the authorization may yield.
	AccountCode string `json:"account_code,omitempty"`
	// Replace allows the authorization to replace an existing credential of another account.
	Replace bool `json:"replace,omitempty"`
}

func pendingKey(state string) string {
	sum := sha256.Sum256([]byte(state))
	return pendingPrefix + hex.EncodeToString(sum[:])
}
