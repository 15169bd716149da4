package main

// fleet_setup.go: the fleet's credentials, authorized at the dev identity server and
// imported into Vault.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

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

// fleetImport sets up the fleet's apps: per identity server, an app (a client with a
// redirect URI to Vault), its config, and n credentials imported from refresh tokens.
type fleetImport struct {
	c                        *common
	mount, redirect          string
	n, workers               int
	firstImport, firstExpiry time.Time // when the first credential was imported; its token's expiry
}

// app sets up one app under config cfgName, credentials prefix00000 on; minTTL 0 leaves
// the config's default.
func (f *fleetImport) app(a *idpAdmin, caFile, cfgName, prefix string, minTTL int) ([]string, time.Duration, error) {
	secret := randHex(16)
	clientID := cfgName + "-app"
	if _, err := a.call(http.MethodPost, "/_admin/clients", map[string]any{
		"id": clientID, "secret": secret, "account_code": "FLEET",
		"scopes": []string{"reservations.read"}, "redirect_uris": []string{f.redirect},
	}, http.StatusNoContent); err != nil {
		return nil, 0, err
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, 0, err
	}
	cfg := map[string]any{"client_id": clientID, "client_secret": secret, "grant_type": "authorization_code",
		"redirect_uri": f.redirect, "identity_url": a.url, "ca_certificate": string(ca), "scopes": "reservations.read",
		"max_token_requests_per_second": 0, "refresh_ahead": true}
	if minTTL > 0 {
		cfg["min_ttl"] = minTTL
	}
	if _, err := f.c.api.Must(http.MethodPost, f.mount+"/config/"+cfgName, cfg, http.StatusOK, http.StatusNoContent); err != nil {
		return nil, 0, err
	}
	oc := &oauth2.Config{ClientID: clientID, ClientSecret: secret, RedirectURL: f.redirect,
		Scopes:   []string{"reservations.read", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: a.url + "/connect/authorize", TokenURL: a.url + "/connect/token", AuthStyle: oauth2.AuthStyleInParams}}
	names := make([]string, f.n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	d, _, err := parallel(f.workers, names, func(name string) error {
		// A whole authorization again (a new code) after a failed one: a kept-alive
		// connection the identity server had just closed fails a POST, which Go's
		// transport does not retry.
		var rt string
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if rt, err = a.refreshToken(context.Background(), oc); err == nil {
				break
			}
		}
		if err != nil {
			return err
		}
		t0 := time.Now()
		b, err := f.c.api.Must(http.MethodPost, f.mount+"/creds/"+name, map[string]any{"config": cfgName, "refresh_token": rt}, http.StatusOK, http.StatusNoContent)
		if err == nil && name == names[0] && f.firstImport.IsZero() {
			var resp struct {
				Data struct {
					ExpiresAt time.Time `json:"expires_at"`
				} `json:"data"`
			}
			if err := json.Unmarshal(b, &resp); err != nil {
				return fmt.Errorf("import %s: %w", name, err)
			}
			f.firstImport, f.firstExpiry = t0, resp.Data.ExpiresAt
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	fmt.Fprintf(os.Stderr, "load: fleet: %d credentials imported under config/%s in %s\n", f.n, cfgName, d.Round(time.Millisecond))
	return names, d, nil
}
