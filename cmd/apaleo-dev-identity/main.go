// Command apaleo-dev-identity runs a DEVELOPMENT AND TEST stand-in for
// apaleo's identity server (https://identity.apaleo.com), like
// `vault server -dev`: in-memory state, a signing key and TLS certificates
// generated at start-up, automatic consent for a built-in test user, and an
// optional unauthenticated admin API for fault injection. Never use it for
// anything real. See package internal/devidp for the behaviour.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

const usageHeader = `apaleo-dev-identity: DEVELOPMENT/TEST ONLY stand-in for apaleo's identity server.

Like 'vault server -dev' it keeps everything in memory, generates its keys at
start-up and approves every authorization request for a built-in test user
(sub %q, account %q) without a login. Do not use it for anything real.

Routes: POST /connect/token, GET /connect/authorize, POST /connect/revocation,
GET /.well-known/openid-configuration, GET /healthz; with -admin also
/_admin/stats, /_admin/timeline, /_admin/reset, /_admin/faults, /_admin/revoke,
/_admin/clients, /_admin/secrets.

On start it prints one line "listening on URL" to stdout.

Usage: apaleo-dev-identity [flags]

`

const usageFooter = `
Client spec (-client, repeatable): id:secret[:account_code[:scopes[:redirect_uri]]]
  scopes are comma separated; a client with a redirect URI gets the
  authorization_code and refresh_token grants (offline_access allowed),
  otherwise client_credentials. Example:
    -client hotel-muc:s3cret:MUC:account.read,reservations.read
    -client connect-app:s3cret:DEMO:reservations.read:https://127.0.0.1:8200/v1/apaleo/callback

Clients file (-clients-file): a JSON list of
  {"id","secret","account_code","scopes":[],"granted_scopes":[],
   "redirect_uris":[],"grant_types":[]}

Admin API (-admin, no authentication, test use only):
  GET    /_admin/stats                 Stats JSON: token_requests, by_grant{},
                                       by_client{}, issued, errors{}, revocations,
                                       authorizations, faults_applied,
                                       pending_faults, refresh_revoked
  GET    /_admin/timeline              every token request in arrival order:
                                       arrived_ms, answered_ms, grant, client_id,
                                       refresh_token_id (a fingerprint), status
                                       (0: dropped), fault
  POST   /_admin/reset                 zero stats and timeline, clear queued faults (204)
  POST   /_admin/faults                JSON list of faults, queued FIFO (204):
         [{"status":503,"retry_after":"2","body":"...","delay":"1.5s",
           "hang":true,"drop":true,"truncate":true,"no_expires_in":true,
           "drop_after_handle":true}]   (each consumed by one token request)
  DELETE /_admin/faults                clear queued faults (204)
  POST   /_admin/revoke?client_id=ID   revoke all refresh tokens of ID (204)
  POST   /_admin/clients               JSON client or list: add/replace (204)
  GET    /_admin/secrets               every client secret, code, code_verifier and
                                       refresh token seen (a test aid for secret scans)
`

// repeatedFlag collects the values of a repeatable flag (-client, -tls-host). -client
// specs are parsed after flag parsing, so that the flag package never echoes a spec
// (with its secret) in an error.
type repeatedFlag []string

func (c *repeatedFlag) String() string { return fmt.Sprintf("%d values", len(*c)) }

func (c *repeatedFlag) Set(v string) error {
	*c = append(*c, v)
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "apaleo-dev-identity:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("apaleo-dev-identity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		addr        = fs.String("addr", "127.0.0.1:0", "listen address (port 0 picks a free port; the URL is printed)")
		specs       repeatedFlag
		clientsFile = fs.String("clients-file", "", "JSON file with a list of clients (see below)")
		tokenTTL    = fs.Duration("token-ttl", time.Hour, "access token lifetime (expires_in)")
		refreshTTL  = fs.Duration("refresh-ttl", 30*24*time.Hour, "refresh token lifetime")
		tlsDir      = fs.String("tls-dir", "", "generate a test CA and a certificate for 127.0.0.1/localhost, write DIR/ca.pem and serve HTTPS (default: plain HTTP)")
		admin       = fs.Bool("admin", false, "enable the unauthenticated /_admin/ API (tests only)")
		urlFile     = fs.String("url-file", "", "write the base URL to this file once listening")
		issuer      = fs.String("issuer", "", "iss claim and discovery base URL (default: scheme://host of each request)")
		duende      = fs.Bool("duende-errors", false, "answer every 4xx token error with 400 like Duende IdentityServer (default: fosite's 401 for invalid_client)")
		quiet       = fs.Bool("quiet", false, "no request log on stderr")
		login       = fs.Bool("login", false, "show a login page and a consent page (Allow, Deny) at /connect/authorize instead of consenting at once")
		tlsHosts    repeatedFlag
	)
	fs.Var(&specs, "client", "client spec id:secret[:account_code[:scopes[:redirect_uri]]] (repeatable)")
	fs.Var(&tlsHosts, "tls-host", "with -tls-dir, one more name or IP the certificate covers, e.g. one reached through a proxy (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usageHeader, devidp.TestUser, devidp.DefaultAccountCode)
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), usageFooter)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var clients []devidp.Client
	for _, spec := range specs {
		c, err := devidp.ParseClientSpec(spec)
		if err != nil {
			return fmt.Errorf("-client: %w", err)
		}
		clients = append(clients, c)
	}
	if *clientsFile != "" {
		list, err := devidp.LoadClientsFile(*clientsFile)
		if err != nil {
			return err
		}
		clients = append(clients, list...)
	}
	if len(clients) == 0 {
		fmt.Fprintln(stderr, "apaleo-dev-identity: warning: no clients configured (-client, -clients-file or POST /_admin/clients)")
	}

	opts := devidp.Options{
		Clients:              clients,
		AccessTokenLifespan:  *tokenTTL,
		RefreshTokenLifespan: *refreshTTL,
		Issuer:               *issuer,
		DuendeErrorStatus:    *duende,
		Interactive:          *login,
	}
	logger := log.New(stderr, "apaleo-dev-identity: ", log.LstdFlags|log.Lmicroseconds)
	if !*quiet {
		opts.Logger = logger
	}
	idp, err := devidp.New(opts)
	if err != nil {
		return err
	}
	defer idp.Close()

	handler := http.Handler(idp)
	if *admin {
		mux := http.NewServeMux()
		mux.Handle(devidp.AdminPrefix, idp.AdminHandler())
		mux.Handle("/", idp)
		handler = mux
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0), // dropped connections are on purpose
	}
	scheme := "http"
	if *tlsDir != "" {
		cfg, _, err := devidp.GenerateDevTLS(*tlsDir, tlsHosts...)
		if err != nil {
			ln.Close()
			return fmt.Errorf("tls: %w", err)
		}
		// HTTP/1.1 only, so that the drop faults really close the TCP
		// connection (HTTP/2 could only reset a stream).
		cfg.NextProtos = []string{"http/1.1"}
		srv.TLSConfig = cfg
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		scheme = "https"
	}
	port := ln.Addr().(*net.TCPAddr).Port
	host, _, _ := net.SplitHostPort(*addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := fmt.Sprintf("%s://%s", scheme, net.JoinHostPort(host, fmt.Sprint(port)))

	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()

	if *urlFile != "" {
		if err := devidp.WriteFileAtomic(*urlFile, []byte(url+"\n"), 0o644); err != nil {
			_ = srv.Close()
			return err
		}
	}
	fmt.Fprintf(stdout, "listening on %s\n", url)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	case <-ctx.Done():
	}
	if !*quiet {
		logger.Print("shutting down")
	}
	idp.Close() // release hanging requests
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}
