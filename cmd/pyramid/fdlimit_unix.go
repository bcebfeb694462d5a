//go:build unix

package main

import "syscall"

// fileDescriptorLimit is the process's soft limit on open files (which the Go runtime
// raises to the hard limit at start-up).
func fileDescriptorLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, true
}
