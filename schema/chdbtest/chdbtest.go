// Package chdbtest gives tests a second, current ClickHouse engine beside schematest's
// 18.16 server: ClickHouse 26.5 as the chDB library (libchdb.so, which deploy/install.sh
// fetches), loaded into the test process. Tests reach it through a clickhouse-go
// driver.Conn of clickhouse-go's HTTP protocol, answered by an in-process HTTP endpoint that
// hands each request to the library. So pyramid's own functions run unchanged against it,
// and every statement, bound argument, inserted block and scanned value goes through
// clickhouse-go's own code, as against a server; only the transport differs (HTTP carrying
// Native-format blocks instead of the native TCP protocol, and INSERT data handed to the
// engine as a file).
//
// It reads PYRAMID_TEST_CHDB_LIB, the path of libchdb.so; without it tests skip, unless
// PYRAMID_TEST_REQUIRE=1 (as `make test` sets), when they fail.
package chdbtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// LibEnv names the environment variable holding the path of libchdb.so.
const LibEnv = "PYRAMID_TEST_CHDB_LIB"

// Lib returns the library's path, skipping or failing t when there is none.
func Lib(t testing.TB) string {
	t.Helper()
	path := os.Getenv(LibEnv)
	if path == "" {
		if os.Getenv("PYRAMID_TEST_REQUIRE") == "1" {
			t.Fatal(LibEnv + " is not set but PYRAMID_TEST_REQUIRE=1: run `make test`, or deploy/install.sh and set it to var/chdb/lib/libchdb.so")
		}
		t.Skip("no chDB: set " + LibEnv + " to libchdb.so (deploy/install.sh fetches it) or run `make test`")
	}
	return path
}

// Conn opens a clickhouse-go connection to the in-process engine, starting the engine on
// first use; the connection is closed when t ends, the engine stays up for the process.
func Conn(t testing.TB) driver.Conn {
	t.Helper()
	e, err := start(Lib(t))
	if err != nil {
		t.Fatalf("start chDB: %v", err)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Protocol:    clickhouse.HTTP,
		Addr:        []string{e.addr},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("open chDB endpoint %s: %v", e.addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.Ping(context.Background()); err != nil {
		t.Fatalf("ping chDB endpoint %s: %v", e.addr, err)
	}
	return conn
}

// The library keeps one engine per process (its global context), so the engine and its
// endpoint are process-wide too: started once, left running until the process exits.
var (
	startOnce sync.Once
	started   *engine
	startErr  error
)

func start(libPath string) (*engine, error) {
	startOnce.Do(func() { started, startErr = newEngine(libPath) })
	return started, startErr
}

// dirPrefix starts the name of every engine's data directory, followed by the pid of the
// process that owns it.
const dirPrefix = "pyramid-chdb-"

// engine is the library plus the HTTP endpoint in front of it.
type engine struct {
	mu   sync.Mutex // the library runs one statement at a time per connection
	lib  *library
	addr string
	dir  string
}

func newEngine(libPath string) (*engine, error) {
	removeStaleDirs()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", dirPrefix, os.Getpid()))
	if err != nil {
		return nil, err
	}
	lib, err := openLibrary(libPath, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &engine{lib: lib, addr: ln.Addr().String(), dir: dir}
	go func() { _ = http.Serve(ln, e) }()
	return e, nil
}

// helloQuery is the first statement of every connection of clickhouse-go's HTTP protocol.
// Its answer is decoded as for the protocol revision in the request's
// client_protocol_version, and the revision() it holds decides how every later answer is
// decoded. The engine writes Native blocks as for a client of revision 0 (no block info,
// no serialization flags) whatever the request says, so the endpoint answers the hello
// itself (see hello), reporting revision 0.
const helloQuery = "SELECT displayName(), version(), revision(), timezone()"

// ServeHTTP answers a request of clickhouse-go's HTTP protocol as ClickHouse's HTTP
// interface does: the statement is the body, or for an INSERT the query parameter, with
// the body as its Native data; output is in default_format; an error is a 500 whose body
// is the exception text, which clickhouse-go turns into a *clickhouse.Exception.
func (e *engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	for name := range params {
		switch name {
		case "query", "default_format", "client_protocol_version", "query_id":
		case "max_execution_time":
			// clickhouse-go derives it from the context's deadline. The engine runs each
			// statement to the end instead, which changes no result.
		default:
			// Other settings may change what a statement does; pyramid sets none, and
			// ignoring one would test something other than what was asked.
			http.Error(w, fmt.Sprintf("Code: 115. DB::Exception: chdbtest: unsupported parameter %s. (UNKNOWN_SETTING)", name), http.StatusBadRequest)
			return
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	stmt := body
	if q := params.Get("query"); q != "" {
		insert, ok := strings.CutSuffix(q, nativeSuffix)
		if !ok || len(body) == 0 {
			http.Error(w, fmt.Sprintf("Code: 62. DB::Exception: chdbtest: want an INSERT ... %s with data, got %q and %d bytes. (SYNTAX_ERROR)", nativeSuffix, q, len(body)), http.StatusBadRequest)
			return
		}
		file, err := e.insertData(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer os.Remove(file)
		stmt = []byte(insert + " FROM INFILE '" + file + "'" + nativeSuffix)
	}
	if strings.TrimSpace(string(stmt)) == helloQuery {
		e.hello(w, params.Get("client_protocol_version"))
		return
	}
	format := params.Get("default_format")
	if format == "" {
		format = "TabSeparated"
	}
	e.mu.Lock()
	out, err := e.lib.run(stmt, format)
	e.mu.Unlock()
	if err != nil {
		var ee *engineError
		if errors.As(err, &ee) {
			if code := ee.code(); code != "" {
				w.Header().Set("X-ClickHouse-Exception-Code", code)
			}
		}
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	_, _ = w.Write(out)
}

// nativeSuffix ends every INSERT of clickhouse-go's HTTP batches; the block follows as the
// request body.
const nativeSuffix = " FORMAT Native"

// insertData stores an INSERT's data in a file of the engine's directory and returns its
// path. The engine reads it with FROM INFILE: data inline in the statement would be cut
// short, because the library's statement splitter ends inline data at an empty line, which
// is any "\n\n" in a binary block.
func (e *engine) insertData(data []byte) (string, error) {
	f, err := os.CreateTemp(e.dir, "insert-*.native")
	if err != nil {
		return "", err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return "", err
	}
	return f.Name(), f.Close()
}

// hello answers helloQuery with the engine's name, version and time zone and revision 0,
// in a block encoded for the client's protocol revision.
func (e *engine) hello(w http.ResponseWriter, clientRevision string) {
	rev, err := strconv.ParseUint(clientRevision, 10, 64)
	if err != nil {
		http.Error(w, fmt.Sprintf("client_protocol_version %q: %v", clientRevision, err), http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	out, err := e.lib.run([]byte("SELECT displayName(), version(), timezone()"), "TabSeparated")
	e.mu.Unlock()
	fields := strings.Split(strings.TrimSuffix(string(out), "\n"), "\t")
	if err == nil && len(fields) != 3 {
		err = fmt.Errorf("server hello: want 3 fields, got %q", out)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	block := proto.NewBlock()
	for _, c := range []struct{ name, typ string }{
		{"displayName()", "String"}, {"version()", "String"}, {"revision()", "UInt32"}, {"timezone()", "String"},
	} {
		if err := block.AddColumn(c.name, column.Type(c.typ)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	var buf chproto.Buffer
	if err = block.Append(fields[0], fields[1], uint32(0), fields[2]); err == nil {
		err = block.Encode(&buf, rev)
	}
	if err != nil {
		http.Error(w, "encode server hello: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(buf.Buf)))
	_, _ = w.Write(buf.Buf)
}

// engineError is an exception the engine reported: "Code: 60. DB::Exception: ...".
type engineError struct{ msg string }

func (e *engineError) Error() string { return e.msg }

// code is the exception's numeric code, or "" when the text has none.
func (e *engineError) code() string {
	rest, ok := strings.CutPrefix(e.msg, "Code: ")
	if !ok {
		return ""
	}
	code, _, ok := strings.Cut(rest, ".")
	if _, err := strconv.Atoi(code); !ok || err != nil {
		return ""
	}
	return code
}
