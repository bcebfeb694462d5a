//go:build !(linux && amd64)

package chdbtest

import (
	"fmt"
	"runtime"
)

// library is unavailable here: chDB's npm package ships libchdb.so for linux/amd64 only.
type library struct{}

func openLibrary(path, _ string) (*library, error) {
	return nil, fmt.Errorf("load %s: chDB runs on linux/amd64 only, not %s/%s", path, runtime.GOOS, runtime.GOARCH)
}

func (*library) run([]byte, string) ([]byte, error) {
	return nil, fmt.Errorf("chDB is not loaded")
}

func removeStaleDirs() {}
