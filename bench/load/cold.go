package main

// cold.go: `load cold`, the cold path against the identity server's own time.

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"
)

type coldResult struct {
	N          int           `json:"n"`
	ColdP50    time.Duration `json:"cold_p50_ns"`
	ColdP90    time.Duration `json:"cold_p90_ns"`
	WarmP50    time.Duration `json:"warm_p50_ns"`
	DirectP50  time.Duration `json:"direct_p50_ns"`
	DirectP90  time.Duration `json:"direct_p90_ns"`
	AddedP50   time.Duration `json:"added_p50_ns"`
	OverHitP50 time.Duration `json:"added_over_hit_p50_ns"`
	TokenReqs  int           `json:"token_requests"`
	WantTokens int           `json:"want_token_requests"`
}

func runCold(args []string) error {
	fs, c := newFlagSet("cold")
	var (
		path     = fs.String("path", "apaleo/creds/hotel-muc", "credential to read cold")
		n        = fs.Int("n", 200, "cold reads (each preceded by a delete of the cached token)")
		clientID = fs.String("client-id", "", "the credential's client id, for direct token requests")
		secret   = fs.String("client-secret", "", "its client secret")
		scopes   = fs.String("scopes", "reservations.read setup.read", "its scopes")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > 10_000 || c.idpURL == "" || *clientID == "" || *secret == "" {
		return errors.New("cold: need -n 1..10000, -idp, -client-id, -client-secret")
	}
	if err := c.setup(2); err != nil {
		return err
	}
	before, err := c.idpStats()
	if err != nil {
		return err
	}
	if err := c.idp.directToken(*clientID, *secret, *scopes); err != nil { // open the connection
		return err
	}
	var cold, warm, direct dist
	coldVars, warmVars := counters{}, counters{}
	snap := func() counters {
		if c.pprof == "" {
			return nil
		}
		v, err := c.vars()
		if err != nil {
			fmt.Fprintln(os.Stderr, "load: expvar:", err)
		}
		return v
	}
	for range *n {
		// Alternate: drop the cached token (not timed), a cold read, a warm read, and the
		// same token request made directly to the identity server.
		if _, err := c.api.Must(http.MethodDelete, *path, nil, http.StatusOK, http.StatusNoContent); err != nil {
			return err
		}
		v0 := snap()
		t0 := time.Now()
		if _, err := c.api.Must(http.MethodGet, *path, nil, http.StatusOK); err != nil {
			return err
		}
		cold = append(cold, time.Since(t0))
		v1 := snap()
		t0 = time.Now()
		if _, err := c.api.Must(http.MethodGet, *path, nil, http.StatusOK); err != nil {
			return err
		}
		warm = append(warm, time.Since(t0))
		v2 := snap()
		if v0 != nil {
			coldVars.add(v1, v0)
			warmVars.add(v2, v1)
		}
		t0 = time.Now()
		if err := c.idp.directToken(*clientID, *secret, *scopes); err != nil {
			return err
		}
		direct = append(direct, time.Since(t0))
	}
	after, err := c.idpStats()
	if err != nil {
		return err
	}
	cold, warm, direct = cold.sorted(), warm.sorted(), direct.sorted()
	r := coldResult{N: *n, ColdP50: cold.pct(50), ColdP90: cold.pct(90), WarmP50: warm.pct(50),
		DirectP50: direct.pct(50), DirectP90: direct.pct(90),
		TokenReqs: after.TokenRequests - before.TokenRequests, WantTokens: 2**n + 1}
	r.AddedP50 = r.ColdP50 - r.DirectP50
	r.OverHitP50 = r.ColdP50 - r.DirectP50 - r.WarmP50
	fmt.Printf("### Cold reads through Vault\n\n")
	fmt.Printf("%d cold reads of `%s` (cached token dropped before each), alternating with a warm read and with the same\n", *n, *path)
	fmt.Printf("client credentials request sent straight to the identity server over a kept-alive TLS connection.\n\n")
	fmt.Printf("| | p50 ms | p90 ms |\n|---|---:|---:|\n")
	fmt.Printf("| cold read through Vault | %s | %s |\n", ms(r.ColdP50), ms(r.ColdP90))
	fmt.Printf("| identity server alone (direct) | %s | %s |\n", ms(r.DirectP50), ms(r.DirectP90))
	fmt.Printf("| warm read through Vault (cache hit) | %s | |\n", ms(r.WarmP50))
	fmt.Printf("| **added by Vault and the plugin** (cold - direct) | **%s** | |\n", ms(r.AddedP50))
	fmt.Printf("| **added by the cold path over a cache hit** (cold - direct - warm) | **%s** | |\n", ms(r.OverHitP50))
	fmt.Printf("\nToken requests the identity server saw: %d (%d cold reads + %d direct + 1 warm-up).\n\n", r.TokenReqs, *n, *n)
	if c.pprof != "" {
		fmt.Printf("Inside the plugin (bench/profplugin counters), per read, means:\n\n| | calls | ms |\n|---|---:|---:|\n")
		fmt.Printf("| **cold read** | | |\n%s", coldVars.breakdown("read creds", *n))
		fmt.Printf("| **warm read (cache hit)** | | |\n%s\n", warmVars.breakdown("read creds", *n))
	}
	return writeJSON(c.jsonOut, r)
}
