package apaleo

import (
	"bytes"
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// metricsContentType is the Prometheus text exposition format, version 0.0.4.
const metricsContentType = "text/plain; version=0.0.4" // as SPEC.md names it; UTF-8 is the format's default

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
// body is a byte slice: an external plugin's response crosses gRPC as JSON, where bytes
// travel as base64, which Vault decodes again before writing them. It is never nil: nil
// would travel as null, which Vault refuses with a 500 (a fresh mount has no series).
func (b *backend) pathMetricsRead(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	body := bytes.NewBuffer([]byte{})
	if err := b.metrics.writeText(body); err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: metricsContentType,
		logical.HTTPStatusCode:  http.StatusOK,
		logical.HTTPRawBody:     body.Bytes(),
	}}, nil
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
`
)
