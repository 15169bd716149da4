package apaleo

import (
	"net/http"
	"time"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/devidp"
)

// faults_cases_test.go: the rows of the fault matrix (TestFaults_Matrix in faults_test.go):
// each fault the identity server can show, and what a read must answer for each
// kind/mode pair.

func repeatFault(n int, f devidp.Fault) []devidp.Fault {
	out := make([]devidp.Fault, n)
	for i := range out {
		out[i] = f
	}
	return out
}

func injecting(f ...devidp.Fault) func(*faultEnv) {
	return func(fe *faultEnv) { fe.inject(f...) }
}

// Fault keys: kind/mode.
var (
	ccCold    = kindCC + "/" + modeCold
	ccStale   = kindCC + "/" + modeStale
	authCold  = kindAuth + "/" + modeCold
	authStale = kindAuth + "/" + modeStale
)

// everywhere gives one expectation for all four kind/mode pairs.
func everywhere(cold, stale faultWant) map[string]faultWant {
	return map[string]faultWant{ccCold: cold, authCold: cold, ccStale: stale, authStale: stale}
}

// byKind replaces the refresh-token rows of want: a refresh runs to its own bound.
func byKind(want map[string]faultWant, cold, stale faultWant) map[string]faultWant {
	want[authCold], want[authStale] = cold, stale
	return want
}

func staleServed(contains ...string) faultWant {
	return faultWant{outcome: gotStale, contains: contains, requests: 1}
}

const htmlProxyPage = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>"

func faultCases() []faultCase {
	hang := devidp.Fault{Hang: true}
	slow := devidp.Fault{Delay: 1500 * time.Millisecond} // beyond the 750 ms per-attempt timeout
	nonJSON := devidp.Fault{Status: http.StatusOK, Body: "<html><body>Down for maintenance</body></html>"}
	return []faultCase{
		{
			name: "429 Retry-After 1 (seconds), then success", policy: &faultPolicy429,
			arm: injecting(devidp.Fault{Status: 429, RetryAfter: "1"}),
			want: everywhere(
				faultWant{outcome: gotNew, requests: 2, min: time.Second},
				staleServed("HTTP 429", "slow_down", "retry after 1s")),
		},
		{
			name: "429 Retry-After 120 (seconds), beyond the bound", policy: &faultPolicy429,
			arm: injecting(devidp.Fault{Status: 429, RetryAfter: "120"}),
			want: everywhere(
				faultWant{outcome: gotError, status: 429, contains: []string{"HTTP 429", "retry after 2m0s"}, requests: 1},
				staleServed("HTTP 429", "retry after 2m0s")),
		},
		{
			name: "429 Retry-After as an HTTP date 2 s ahead, then success", policy: &faultPolicy429,
			arm: func(fe *faultEnv) {
				fe.inject(devidp.Fault{Status: 429, RetryAfter: time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)})
			},
			want: everywhere(
				faultWant{outcome: gotNew, requests: 2, min: 900 * time.Millisecond},
				staleServed("HTTP 429", "retry after")),
		},
		{
			name: "429 Retry-After as an HTTP date 1 h ahead", policy: &faultPolicy429,
			arm: func(fe *faultEnv) {
				fe.inject(devidp.Fault{Status: 429, RetryAfter: time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)})
			},
			want: everywhere(
				faultWant{outcome: gotError, status: 429, contains: []string{"HTTP 429", "retry after"}, requests: 1},
				staleServed("HTTP 429", "retry after")),
		},
		{
			// Without a Retry-After the app's hold is failure memory's backoff (5 s and
			// more): no retry inside the read, which answers when the next attempt is.
			name: "429 with an unparsable Retry-After, held by the backoff", policy: &faultPolicy429,
			arm: injecting(devidp.Fault{Status: 429, RetryAfter: "soon"}),
			want: everywhere(
				faultWant{outcome: gotError, status: 429, contains: []string{"HTTP 429", "next attempt at"}, requests: 1},
				staleServed("HTTP 429")),
		},
		{
			// A 5xx may be a proxy's with apaleo's answer lost behind it: a refresh token
			// goes at most twice in one read, then failure memory's backoff decides.
			name: "500, 502, 503 burst, then success",
			arm:  injecting(devidp.Fault{Status: 500}, devidp.Fault{Status: 502}, devidp.Fault{Status: 503}),
			want: byKind(everywhere(
				faultWant{outcome: gotNew, requests: 4},
				staleServed("HTTP 500", "server_error")),
				faultWant{outcome: gotError, status: 502, contains: []string{"HTTP 502", "lost in transit", "next attempt at"}, requests: 2},
				staleServed("HTTP 500", "server_error")),
		},
		{
			name: "503 on every attempt",
			arm:  injecting(repeatFault(100, devidp.Fault{Status: 503})...),
			want: byKind(everywhere(
				faultWant{outcome: gotError, status: 502, contains: []string{"HTTP 503", "server_error", "gave up after"}},
				staleServed("HTTP 503")),
				faultWant{outcome: gotError, status: 502, contains: []string{"HTTP 503", "server_error", "lost in transit", "next attempt at"}, requests: 2},
				staleServed("HTTP 503")),
		},
		{
			name: "502 HTML page from a proxy on every attempt",
			arm:  injecting(repeatFault(100, devidp.Fault{Status: 502, Body: htmlProxyPage})...),
			want: byKind(everywhere(
				faultWant{outcome: gotError, status: 502, contains: []string{"HTTP 502", "502 Bad Gateway", "gave up after"}},
				staleServed("HTTP 502")),
				faultWant{outcome: gotError, status: 502, contains: []string{"HTTP 502", "502 Bad Gateway", "lost in transit"}, requests: 2},
				staleServed("HTTP 502")),
		},
		{
			name: "connection refused (closed 127.0.0.1 port)",
			arm:  (*faultEnv).closeServer,
			want: everywhere(
				// Retried until the fifth refusal in a row takes the app down (outage.go).
				faultWant{outcome: gotError, status: 502, contains: []string{"connection refused"}, anyOf: []string{"gave up after", "is down for config/"}, requests: noRequest, cutOff: true},
				// The single attempt may go out on a pooled connection the server has
				// just closed: EOF or "server closed idle connection" instead of a
				// refused dial.
				faultWant{outcome: gotStale, anyOf: []string{"connection refused", "EOF", "server closed idle connection"}, requests: noRequest}),
		},
		{
			name: "connection dropped without an answer, once",
			arm:  injecting(devidp.Fault{Drop: true}),
			want: everywhere(
				faultWant{outcome: gotNew, requests: 2},
				staleServed("EOF")),
		},
		{
			// A refresh, once sent, is never cut short by a reader: the reader is answered
			// while the request goes on to its own bound.
			name: "no answer at all (hang)",
			arm:  injecting(repeatFault(100, hang)...),
			want: byKind(everywhere(
				faultWant{outcome: gotError, status: 504, contains: []string{"no answer in time", "gave up after"}, min: faultPolicy.Total - flightMargin - 200*time.Millisecond},
				faultWant{outcome: gotStale, contains: []string{"no answer in time"}, requests: 1, min: faultPolicy.PerAttempt - 50*time.Millisecond}),
				faultWant{outcome: gotError, status: 504, contains: []string{"has not answered", "goes on in the background"}, requests: 1, min: faultPolicy.Total - flightMargin - 200*time.Millisecond},
				faultWant{outcome: gotStale, contains: []string{"has not answered"}, requests: 1, min: faultPolicy.PerAttempt - 50*time.Millisecond}),
		},
		{
			name: "slow answer inside the per-attempt timeout (150 ms)",
			arm:  injecting(devidp.Fault{Delay: 150 * time.Millisecond}),
			want: everywhere(
				faultWant{outcome: gotNew, requests: 1, min: 150 * time.Millisecond},
				faultWant{outcome: gotNew, requests: 1, min: 150 * time.Millisecond}),
		},
		{
			name: "slow answer beyond the per-attempt timeout (1.5 s), once",
			arm:  injecting(slow),
			want: byKind(everywhere(
				faultWant{outcome: gotNew, requests: 2, min: faultPolicy.PerAttempt},
				faultWant{outcome: gotStale, contains: []string{"no answer in time"}, requests: 1, min: faultPolicy.PerAttempt - 50*time.Millisecond}),
				faultWant{outcome: gotNew, requests: 1, min: 1500 * time.Millisecond},
				faultWant{outcome: gotStale, contains: []string{"has not answered"}, requests: 1, min: faultPolicy.PerAttempt - 50*time.Millisecond}),
		},
		{
			name: "slow answer beyond the per-attempt timeout (1.5 s), every attempt",
			arm:  injecting(repeatFault(100, slow)...),
			want: byKind(everywhere(
				faultWant{outcome: gotError, status: 504, contains: []string{"no answer in time", "gave up after"}},
				faultWant{outcome: gotStale, contains: []string{"no answer in time"}, requests: 1}),
				faultWant{outcome: gotNew, requests: 1, min: 1500 * time.Millisecond},
				faultWant{outcome: gotStale, contains: []string{"has not answered"}, requests: 1}),
		},
		{
			// A refresh is not retried after a 2xx: the token it carried may be spent.
			name: "non-JSON 200 body, once",
			arm:  injecting(nonJSON),
			want: map[string]faultWant{
				ccCold:    {outcome: gotNew, requests: 2},
				ccStale:   staleServed("unusable token response"),
				authCold:  {outcome: gotError, status: 502, contains: []string{"unusable token response", "not retried", "run authorize"}, requests: 1},
				authStale: staleServed("unusable token response"),
			},
		},
		{
			name: "non-JSON 200 body on every attempt",
			arm:  injecting(repeatFault(100, nonJSON)...),
			want: map[string]faultWant{
				ccCold:    {outcome: gotError, status: 502, contains: []string{"unusable token response", "missing access_token", "gave up after"}},
				ccStale:   staleServed("unusable token response"),
				authCold:  {outcome: gotError, status: 502, contains: []string{"unusable token response", "missing access_token", "not retried"}, requests: 1},
				authStale: staleServed("unusable token response"),
			},
		},
		{
			// The server handled the request: a refresh token is rotated, so the one
			// Vault holds is spent although Vault never saw the new one.
			name: "truncated JSON body, once",
			arm:  injecting(devidp.Fault{Truncate: true}),
			want: map[string]faultWant{
				ccCold:    {outcome: gotNew, requests: 2},
				ccStale:   staleServed("unusable token response", "cannot parse json"),
				authCold:  {outcome: gotError, status: 502, contains: []string{"unusable token response", "refresh token sent with it may be spent"}, requests: 1, lost: true},
				authStale: {outcome: gotStale, contains: []string{"unusable token response"}, requests: 1, lost: true},
			},
		},
		{
			name: "answer lost after the server handled the request, once",
			arm:  injecting(devidp.Fault{DropAfterHandle: true}),
			want: map[string]faultWant{
				ccCold:    {outcome: gotNew, requests: 2},
				ccStale:   staleServed("EOF"),
				authCold:  {outcome: gotError, status: 400, contains: []string{"invalid_grant", "run authorize/hotel-ber config=connect again"}, requests: 2, lost: true, refused: true},
				authStale: {outcome: gotStale, contains: []string{"EOF"}, requests: 1, lost: true},
			},
		},
		{
			// The trust roots are set before the first read: cold cases only.
			name: "certificate the config does not trust",
			arm:  (*faultEnv).distrust,
			want: map[string]faultWant{
				ccCold:   {outcome: gotError, status: 502, contains: []string{"TLS certificate not trusted", "set ca_certificate"}, requests: noRequest},
				authCold: {outcome: gotError, status: 502, contains: []string{"TLS certificate not trusted", "set ca_certificate"}, requests: noRequest},
			},
		},
		{
			name: "token response without expires_in",
			arm:  injecting(devidp.Fault{NoExpiresIn: true}),
			want: everywhere(
				faultWant{outcome: gotNew, requests: 1, ttl: defaultTokenLifetime},
				faultWant{outcome: gotNew, requests: 1, ttl: defaultTokenLifetime}),
		},
	}
}
