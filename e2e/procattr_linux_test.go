//go:build linux

package e2e

import "syscall"

// childProcAttr makes the kernel SIGKILL a child when the test binary dies, so a crashed or
// timed-out test run leaves no servers behind holding ports and temporary directories.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
