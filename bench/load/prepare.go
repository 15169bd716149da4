package main

// prepare.go: `load prepare`, the same response shape everywhere.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// runPrepare reads the credential once and shapes the floor plugin's fixed response and
// a KV v2 secret like it: the same fields, an access token of the same length.
func runPrepare(args []string) error {
	fs, c := newFlagSet("prepare")
	var (
		creds = fs.String("creds", "apaleo/creds/hotel-muc", "the credential to copy the shape of")
		fixed = fs.String("floor", "floor/fixed", "the floor plugin's fixed-response path")
		kv    = fs.String("kv", "secret/data/bench", "the KV v2 secret to write")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.setup(1); err != nil {
		return err
	}
	b, err := c.api.Must(http.MethodGet, *creds, nil, http.StatusOK)
	if err != nil {
		return err
	}
	var r struct {
		LeaseDuration int            `json:"lease_duration"`
		Data          map[string]any `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return err
	}
	tok, _ := r.Data["access_token"].(string)
	if tok == "" {
		return fmt.Errorf("%s: no access_token", *creds)
	}
	var scopes []string
	if l, ok := r.Data["scopes"].([]any); ok {
		for _, s := range l {
			scopes = append(scopes, fmt.Sprint(s))
		}
	}
	floor := map[string]any{"access_token_length": len(tok), "scopes": strings.Join(scopes, ",")}
	for _, k := range []string{"token_type", "expires_at", "account_code", "client_id", "config"} {
		if v, ok := r.Data[k]; ok {
			floor[k] = v
		}
	}
	if _, err := c.api.Must(http.MethodPost, *fixed, floor, http.StatusOK, http.StatusNoContent); err != nil {
		return err
	}
	data := map[string]any{}
	for k, v := range r.Data {
		data[k] = v
	}
	data["access_token"] = strings.Repeat("x", len(tok))
	if _, err := c.api.Must(http.MethodPost, *kv, map[string]any{"data": data}, http.StatusOK, http.StatusNoContent); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "load: floor and KV shaped like %s: access_token %d bytes, lease %d s\n", *creds, len(tok), r.LeaseDuration)
	return nil
}
