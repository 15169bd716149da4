// Command vault builds the HashiCorp Vault server and CLI from its Go module so the
// end-to-end tests and `make demo` run a real, pinned Vault without downloading a release.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
