//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// egress_test.go: the plugin reaches apaleo through an HTTPS proxy, as in companies whose
// machines reach the internet only through one. Go's HTTP client honours HTTPS_PROXY, and
// Vault hands the plugin its environment from `vault plugin register -env`.

// proxiedHost is the identity server's name in this test. It resolves nowhere (.test is
// reserved, RFC 2606): only the proxy knows where it is, so a token the plugin gets came
// through the proxy. It is not a loopback name or address either, which Go's
// http.ProxyFromEnvironment would send directly whatever HTTPS_PROXY says.
const proxiedHost = "identity.apaleo-egress.test"

// TestEgressHTTPSProxy: the plugin registered with -env HTTPS_PROXY=<a CONNECT proxy>
// reads a client-credentials token from an identity server it can reach only through
// that proxy. The proxy counts the tunnels it opened and to where; the identity server
// counts the token requests it answered.
func TestEgressHTTPSProxy(t *testing.T) {
	t.Parallel()
	if addrs, err := net.LookupHost(proxiedHost); err == nil {
		t.Fatalf("%s resolves (%v): the test could not tell the proxy from a direct connection", proxiedHost, addrs)
	}
	sec := randomSecret(t, "egress")
	idp := startIdentityFlags(t, "identity-egress", time.Hour, []string{"-tls-host", proxiedHost},
		"hotel-egress:"+sec+":EGR:account.read")
	_, port, err := net.SplitHostPort(strings.TrimPrefix(idp.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	proxy := startConnectProxy(t, map[string]string{net.JoinHostPort(proxiedHost, port): strings.TrimPrefix(idp.URL, "https://")})

	v := startDevVault(t)
	v.enablePlugin(t, "HTTPS_PROXY="+proxy.URL)
	through := *idp
	through.URL = "https://" + net.JoinHostPort(proxiedHost, port)
	v.writeConfig(t, appConfig{name: "hotel-egress", clientID: "hotel-egress", secret: sec, idp: &through, scopes: "account.read"})

	s := v.read(t, mount+"/creds/hotel-egress")
	if s.str("access_token") == "" || s.str("account_code") != "EGR" {
		t.Fatalf("creds/hotel-egress through the proxy: %v", s.Data)
	}
	tunnels := proxy.tunnels()
	st := idp.stats(t)
	t.Logf("egress figures | %d CONNECT tunnels through the proxy (%v) | %d token requests at the identity server, %d issued",
		len(tunnels), tunnels, st.TokenRequests, st.Issued)
	if len(tunnels) == 0 {
		t.Errorf("the proxy opened no tunnel")
	}
	for _, to := range tunnels {
		if to != net.JoinHostPort(proxiedHost, port) {
			t.Errorf("the proxy was asked to CONNECT to %s, want only %s:%s", to, proxiedHost, port)
		}
	}
	if st.TokenRequests != 1 || st.Issued != 1 || st.ByClient["hotel-egress"] != 1 {
		t.Errorf("the identity server saw %d token requests (%d issued, %d by hotel-egress), want 1", st.TokenRequests, st.Issued, st.ByClient["hotel-egress"])
	}
}

// connectProxy is a forward proxy that only tunnels (HTTP CONNECT), to the addresses of
// its table, and records every tunnel's target.
type connectProxy struct {
	URL string

	mu      sync.Mutex
	targets []string
}

func (p *connectProxy) tunnels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// startConnectProxy serves a CONNECT proxy on 127.0.0.1 until the test ends. routes maps
// a CONNECT target (host:port) to the address it really dials; others get 502.
func startConnectProxy(t *testing.T, routes map[string]string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{URL: "http://" + ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "this proxy only tunnels (CONNECT)", http.StatusMethodNotAllowed)
			return
		}
		p.mu.Lock()
		p.targets = append(p.targets, r.Host)
		p.mu.Unlock()
		addr, ok := routes[r.Host]
		if !ok {
			http.Error(w, fmt.Sprintf("no route to %s", r.Host), http.StatusBadGateway)
			return
		}
		upstream, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		client, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		if _, err := client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			client.Close()
			upstream.Close()
			return
		}
		// What the client sent after its CONNECT request and the proxy already read.
		if n := buf.Reader.Buffered(); n > 0 {
			head, _ := buf.Reader.Peek(n)
			_, _ = upstream.Write(head)
		}
		go func() { _, _ = io.Copy(upstream, client); upstream.Close() }()
		go func() { _, _ = io.Copy(client, upstream); client.Close() }()
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}
