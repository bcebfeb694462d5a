//go:build !linux

package e2e

import "syscall"

// childProcAttr has no parent-death signal to ask for outside Linux; t.Cleanup still ends
// every child when the test ends normally.
func childProcAttr() *syscall.SysProcAttr { return nil }
