//go:build e2e && linux

package e2e

import "syscall"

// sysProcAttr puts a child in its own process group (so stop can kill Vault's plugin
// processes with it) and kills it if the test binary dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
