//go:build e2e && !linux && !windows

package e2e

import "syscall"

// sysProcAttr puts a child in its own process group, so stop can kill Vault's plugin
// processes with it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
