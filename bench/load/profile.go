package main

// profile.go: with -pprof, the instrumented plugin (bench/profplugin): its counters of
// round trips to Vault, and its pprof profiles.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// vars returns the instrumented plugin's expvar counters (bench/profplugin).
func (c *common) vars() (counters, error) {
	resp, err := c.vault.Get(c.pprof + "/debug/vars")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct {
		Bench map[string]int64 `json:"apaleo_bench"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, err
	}
	return v.Bench, nil
}

// saveProfile fetches a pprof profile of the plugin into profileDir/name.
func (c *common) saveProfile(profile, name string) error {
	if c.pprof == "" || c.profileDir == "" {
		return nil
	}
	resp, err := c.vault.Get(c.pprof + "/debug/pprof/" + profile)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: HTTP %d", profile, resp.StatusCode)
	}
	f, err := os.Create(filepath.Join(c.profileDir, name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

type counters map[string]int64

func (a counters) add(b, minus counters) {
	for k, v := range b {
		a[k] += v - minus[k]
	}
}

// breakdown prints where the plugin's time went per op of class ("read creds").
func (a counters) breakdown(class string, ops int) string {
	per := func(k string) (float64, float64) {
		return float64(a[k+" count"]) / float64(ops), float64(a[k+" ns"]) / float64(ops) / 1e6
	}
	var sb strings.Builder
	n, total := per(class)
	fmt.Fprintf(&sb, "| in the plugin's HandleRequest (`%s`) | %.2f | %.3f |\n", class, n, total)
	rest := total
	for _, k := range []string{class + ": storage get", class + ": storage put", class + ": storage list", class + ": storage delete", "system replication_state"} {
		if a[k+" count"] == 0 {
			continue
		}
		n, t := per(k)
		rest -= t
		fmt.Fprintf(&sb, "| - of which round trips to Vault: %s | %.2f | %.3f |\n", strings.TrimPrefix(k, class+": "), n, t)
	}
	fmt.Fprintf(&sb, "| - of which the rest (plugin code, token request to the identity server) | | %.3f |\n", rest)
	return sb.String()
}
