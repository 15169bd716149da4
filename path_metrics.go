package apaleo

import "github.com/hashicorp/vault/sdk/framework"

// pathMetrics serves metrics/ (skeleton: filled in with the Prometheus text exposition).
func pathMetrics(b *backend) []*framework.Path {
	return nil
}
