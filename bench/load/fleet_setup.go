package main

// fleet_setup.go: the fleet's credentials, authorized at the dev identity server and
// imported into Vault.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"golang.org/x/oauth2"
)

// refreshToken gets a refresh token straight from the dev identity server, which
// consents on its own: the authorize URL (PKCE S256) without following its redirect,
// then the code exchange.
func (a *idpAdmin) refreshToken(ctx context.Context, cfg *oauth2.Config) (string, error) {
	verifier := oauth2.GenerateVerifier()
	state := randHex(16)
	noRedirect := &http.Client{Transport: a.hc.Transport, Timeout: a.hc.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)))
	if err != nil {
		return "", err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode/100 != 3 {
		return "", fmt.Errorf("authorize: HTTP %d, no redirect", resp.StatusCode)
	}
	q := loc.Query()
	if q.Get("state") != state || q.Get("code") == "" {
		return "", fmt.Errorf("authorize: redirect without code or with another state (error %q)", q.Get("error"))
	}
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, a.hc), q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		return "", fmt.Errorf("code exchange: %w", err)
	}
	if tok.RefreshToken == "" {
		return "", errors.New("code exchange: no refresh token")
	}
	return tok.RefreshToken, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
