package apaleo

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// metricsContentType is the Prometheus text exposition format, version 0.0.4.
const metricsContentType = "text/plain; version=0.0.4" // Prometheus text format 0.0.4 (docs/api.md); UTF-8 is its default

// pathMetrics serves metrics: the mount's Prometheus metrics as text, for a scraper with a
// Vault token allowed to read <mount>/metrics.
func pathMetrics(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "metrics",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "apaleo",
				OperationSuffix: "metrics",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: b.pathMetricsRead,
					Summary:  "Prometheus metrics of this mount on this Vault node, in the text exposition format.",
					Responses: map[int][]framework.Response{
						http.StatusOK: {{
							Description: "Token requests, their durations, creds reads and credentials by state, as Prometheus text.",
							MediaType:   metricsContentType,
						}},
					},
				},
			},
			HelpSynopsis:    pathMetricsHelpSyn,
			HelpDescription: pathMetricsHelpDesc,
		},
	}
}

// pathMetricsRead answers raw (Vault's HTTP layer writes HTTPRawBody as the body). The
// body is a byte slice, never nil: nil would travel as null, which Vault refuses with a
// 500 (a fresh mount has no series).
//
// An external plugin's response crosses gRPC as JSON, bytes as base64, which the Vault
// SDK encodes, copies and decodes several times over: a plain scrape at 10,000 configs
// (3.1 MiB of text) costs about 26 MiB of allocations in the plugin, most of the
// scrape's time under the process's memory limit (internal/memlimit). A string body
// would skip base64 but costs more: encoding/json grows its copy of a long string by
// appending. So a scraper that accepts gzip, where the mount passes its Accept-Encoding
// through (passthrough_request_headers) and lets Content-Encoding out
// (allowed_response_headers), gets the text gzipped: 1/28 of the size, and of the
// SDK's work.
func (b *backend) pathMetricsRead(_ context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	resp := &logical.Response{Data: map[string]any{
		logical.HTTPContentType: metricsContentType,
		logical.HTTPStatusCode:  http.StatusOK,
	}}
	body := bytes.NewBuffer([]byte{})
	if !acceptsGzip(req.Headers) {
		if err := b.metrics.writeText(body); err != nil {
			return nil, err
		}
		resp.Data[logical.HTTPRawBody] = body.Bytes()
		return resp, nil
	}
	zw, err := gzip.NewWriterLevel(body, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(zw, 32<<10)
	if err := b.metrics.writeText(w); err != nil {
		return nil, err
	}
	if err := cmp.Or(w.Flush(), zw.Close()); err != nil {
		return nil, fmt.Errorf("compressing metrics: %w", err)
	}
	resp.Data[logical.HTTPRawBody] = body.Bytes()
	resp.Headers = map[string][]string{"Content-Encoding": {"gzip"}}
	return resp, nil
}

// acceptsGzip reports whether an Accept-Encoding request header, as Vault passes it
// through, takes gzip: named (or x-gzip) with a q-value above 0, or "*" where gzip is not
// named. Without the header (Vault passes none unless the mount is tuned to), no.
func acceptsGzip(headers map[string][]string) bool {
	star := false
	for name, values := range headers {
		if !strings.EqualFold(name, "Accept-Encoding") {
			continue
		}
		for _, v := range values {
			for part := range strings.SplitSeq(v, ",") {
				coding, params, _ := strings.Cut(part, ";")
				coding = strings.ToLower(strings.TrimSpace(coding))
				q := 1.0
				for p := range strings.SplitSeq(params, ";") {
					if k, val, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
						if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
							q = f
						}
					}
				}
				switch coding {
				case "gzip", "x-gzip":
					return q > 0
				case "*":
					star = q > 0
				}
			}
		}
	}
	return star
}

const (
	pathMetricsHelpSyn  = "Prometheus metrics of this mount, per Vault node."
	pathMetricsHelpDesc = `
Reading metrics returns the mount's Prometheus metrics in the text exposition
format (text/plain; version=0.0.4). Each Vault node counts what it handled
itself. Standby nodes forward requests to the active node, which sends the
token requests: scrape the active node (the cluster's address does). Where
performance standbys answer reads themselves, scrape every node and sum.
Series:

  vault_apaleo_token_requests_total{config,grant_type,trigger,outcome}
      token requests sent to apaleo (each retry counts); outcome is success
      or the error class (invalid_client, invalid_grant, rate_limited,
      server_error, timeout, network, tls, ...)
  vault_apaleo_token_request_duration_seconds{grant_type}
      histogram of their durations (not by config)
  vault_apaleo_creds_reads_total{config,result}
      reads of creds/<name>: cached, fetched, stale or error
  vault_apaleo_credentials{config,state}
      credentials by state: ok, no_token, failing, needs_authorization

Labels carry config names only, never credential names or secrets. The path
needs a token with read on <mount>/metrics; Prometheus sends it as a bearer
token with metrics_path /v1/<mount>/metrics.

Compression: a scraper that accepts gzip (Prometheus does) gets the text
gzipped, a tenth of the size or less and several times faster at large fleets,
where the mount passes Accept-Encoding in and lets Content-Encoding out:

  vault secrets tune -passthrough-request-headers=Accept-Encoding \
      -allowed-response-headers=Content-Encoding <mount>

Set both or neither: with only the first, the body is gzipped but its
Content-Encoding header is dropped by Vault. -allowed-response-headers
replaces the mount's list: name the callback page's headers too where
authorization_code configs use it (README).
`
)
