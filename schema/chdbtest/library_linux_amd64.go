//go:build linux && amd64

package chdbtest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/ebitengine/purego"
)

// library is libchdb.so loaded into this process, with one connection to an engine whose
// data lives in a directory. Its functions are chDB's C API (chdb.h).
type library struct {
	conn unsafe.Pointer // chdb_connection: the handle chdb_connect's result points to

	query   func(conn unsafe.Pointer, q *byte, qlen uintptr, format *byte, flen uintptr) unsafe.Pointer
	buffer  func(res unsafe.Pointer) unsafe.Pointer
	length  func(res unsafe.Pointer) uintptr
	errText func(res unsafe.Pointer) string
	destroy func(res unsafe.Pointer)
}

// openLibrary loads the library at path and connects to an engine keeping its data in dir.
func openLibrary(path, dir string) (*library, error) {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	lib := &library{}
	var connect func(argc int32, argv **byte) *unsafe.Pointer
	for name, fn := range map[string]any{
		"chdb_connect":              &connect,
		"chdb_query_n":              &lib.query,
		"chdb_result_buffer":        &lib.buffer,
		"chdb_result_length":        &lib.length,
		"chdb_result_error":         &lib.errText,
		"chdb_destroy_query_result": &lib.destroy,
	} {
		sym, err := purego.Dlsym(h, name)
		if err != nil {
			return nil, fmt.Errorf("find %s in %s: %w", name, path, err)
		}
		purego.RegisterFunc(fn, sym)
	}

	// The engine installs crash handlers for SIGSEGV, SIGBUS, SIGILL and others, which
	// would turn a Go panic (a nil dereference in a test) into an abort without a Go
	// stack. Go's own handlers are put back once the engine is up.
	saved := signalHandlers()
	args := []string{"clickhouse", "--path=" + dir}
	argv := make([]*byte, len(args))
	for i, a := range args {
		argv[i] = &append([]byte(a), 0)[0]
	}
	handle := connect(int32(len(argv)), &argv[0])
	runtime.KeepAlive(argv)
	restoreSignalHandlers(saved)
	if handle == nil || *handle == nil {
		return nil, fmt.Errorf("connect to chDB with data in %s: chdb_connect failed", dir)
	}
	lib.conn = *handle
	return lib, nil
}

// run executes one statement (with inline data, for an INSERT ... FORMAT) and returns its
// output in format. The library runs one statement at a time; callers serialize.
func (l *library) run(stmt []byte, format string) ([]byte, error) {
	if len(stmt) == 0 {
		return nil, fmt.Errorf("empty statement")
	}
	f := append([]byte(format), 0)
	res := l.query(l.conn, &stmt[0], uintptr(len(stmt)), &f[0], uintptr(len(format)))
	if res == nil {
		return nil, nil
	}
	defer l.destroy(res)
	if msg := l.errText(res); msg != "" {
		return nil, &engineError{msg: msg}
	}
	n := l.length(res)
	if n == 0 {
		return nil, nil
	}
	return append([]byte(nil), unsafe.Slice((*byte)(l.buffer(res)), n)...), nil
}

// sigaction is the kernel's struct sigaction on linux/amd64.
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// signalHandlers returns the handler of every signal as the kernel holds it.
func signalHandlers() map[int]sigaction {
	out := make(map[int]sigaction)
	for sig := 1; sig <= 64; sig++ {
		var sa sigaction
		if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&sa)), 8, 0, 0); e == 0 {
			out[sig] = sa
		}
	}
	return out
}

// restoreSignalHandlers reinstalls the handlers signalHandlers returned where they changed.
func restoreSignalHandlers(saved map[int]sigaction) {
	for sig, now := range signalHandlers() {
		if old, ok := saved[sig]; ok && old != now {
			_, _, _ = syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
		}
	}
}

// removeStaleDirs deletes the data directories of engines whose process has exited: a test
// process cannot remove its own on exit, so the next one does.
func removeStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), dirPrefix)
		pid, err := strconv.Atoi(rest[:max(0, strings.IndexByte(rest, '-'))])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(m)
		}
	}
}
