// Command load is the load and scale tool of `make bench` (see bench/run.sh). It talks
// to a Vault server's HTTP API on loopback with keep-alive connections; every loop it runs
// is bounded in count and in time.
//
//	load freeport                     print a free TCP port on 127.0.0.1
//	load prepare [flags]              shape the floor and KV responses like a creds read
//	load rw  [flags]                  read throughput: creds vs floor vs KV v2, alternating
//	load cold [flags]                 cold creds reads vs the identity server's own time
//	load scale [flags]                N configs: write, list, read cold and warm, plugin RSS
//	load fleet [flags]                1,000 authorized credentials with short token lives:
//	                                  refresh_ahead on vs off vs cache hits; an outage
//	load summary -dir DIR             the targets, judged from DIR/{rw,cold,scale}.json
//
// Each measuring subcommand prints a Markdown section to stdout and, with -json FILE,
// writes its figures as JSON.
//
// A file per subcommand: prepare.go, reads.go (rw), cold.go, scale.go, summary.go, and
// fleet.go with fleet_setup.go, fleet_measure.go, fleet_metrics.go, fleet_outage.go and
// fleet_report.go. Shared: this file (dispatch, flags), idp.go (the dev identity
// server), measure.go, profile.go; Vault's API through internal/vaultapi.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/vaultapi"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: load freeport|prepare|rw|cold|scale|fleet|summary [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "freeport":
		err = freePort()
	case "rw":
		err = runReads(args)
	case "cold":
		err = runCold(args)
	case "scale":
		err = runScale(args)
	case "prepare":
		err = runPrepare(args)
	case "summary":
		err = runSummary(args)
	case "fleet":
		err = runFleet(args)
	default:
		err = fmt.Errorf("unknown subcommand %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func freePort() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	return nil
}

type common struct {
	addr, token     string
	idpURL, idpCA   string
	jsonOut         string
	pprof           string
	profileDir      string
	api             *vaultapi.Client // Vault's HTTP API as -token
	vault           *http.Client
	idp             *idpAdmin // with -idp
	requestDeadline time.Duration
}

// newFlagSet is the flag set of a subcommand with the shared flags of common.
func newFlagSet(name string) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	c := &common{}
	c.flags(fs)
	return fs, c
}

func (c *common) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "", "Vault address, http://127.0.0.1:PORT")
	fs.StringVar(&c.token, "token", "root", "Vault token")
	fs.StringVar(&c.idpURL, "idp", "", "dev identity server base URL (with -admin)")
	fs.StringVar(&c.idpCA, "idp-ca", "", "the dev identity server's ca.pem")
	fs.StringVar(&c.jsonOut, "json", "", "write the figures as JSON to this file")
	fs.DurationVar(&c.requestDeadline, "request-timeout", 30*time.Second, "timeout of one HTTP request")
	fs.StringVar(&c.pprof, "pprof", "", "base URL of the instrumented plugin's pprof server (bench/profplugin), http://127.0.0.1:PORT")
	fs.StringVar(&c.profileDir, "profile-dir", "", "with -pprof: save profiles here")
}

func (c *common) setup(conns int) error {
	u, err := url.Parse(c.addr)
	if err != nil || u.Hostname() != "127.0.0.1" {
		return fmt.Errorf("-addr %q: want http://127.0.0.1:PORT (loopback only)", c.addr)
	}
	c.vault = &http.Client{Timeout: c.requestDeadline, Transport: &http.Transport{
		MaxIdleConns: conns + 8, MaxIdleConnsPerHost: conns + 8, IdleConnTimeout: time.Minute,
		DisableCompression: true, ForceAttemptHTTP2: false,
	}}
	c.api = vaultapi.New(c.addr, c.token, c.vault)
	if c.pprof != "" {
		if u, err := url.Parse(c.pprof); err != nil || u.Hostname() != "127.0.0.1" {
			return fmt.Errorf("-pprof %q: want http://127.0.0.1:PORT (loopback only)", c.pprof)
		}
	}
	if c.idpURL != "" {
		if c.idp, err = newIdpAdmin(c.idpURL, c.idpCA, c.requestDeadline, 4); err != nil {
			return fmt.Errorf("-idp: %w", err)
		}
	}
	return nil
}
