// Command floorplugin is the benchmark's no-op external secrets plugin (package
// bench/floor), served multiplexed exactly like vault-plugin-secrets-apaleo, answering
// with the apaleo plugin's own lease type and creds/<name> response code.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/apaleo-vault/vault-plugin-secrets-apaleo/bench/floor"
)

func main() {
	logger := hclog.New(&hclog.LoggerOptions{})
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: floor.Factory(floor.Apaleo()),
	}); err != nil {
		logger.Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}
