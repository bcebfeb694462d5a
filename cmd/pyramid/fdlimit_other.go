//go:build !unix

package main

// fileDescriptorLimit reports no limit where the system has no RLIMIT_NOFILE.
func fileDescriptorLimit() (uint64, bool) { return 0, false }
