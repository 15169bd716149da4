// Command vault-plugin-secrets-apaleo is the apaleo secrets engine as an external,
// multiplexed Vault plugin.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/plugin"

	apaleo "github.com/apaleo-vault/vault-plugin-secrets-apaleo"
	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/internal/memlimit"
)

func main() {
	// A soft memory limit that follows the live heap (internal/memlimit), unless the
	// environment sets GOMEMLIMIT.
	memlimit.Start()
	logger := hclog.New(&hclog.LoggerOptions{})
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: apaleo.Factory,
	}); err != nil {
		logger.Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}
