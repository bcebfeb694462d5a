// Package e2e runs pyramid as a user would: the real binary between a real Prometheus and a
// real ClickHouse, each a separate process with its own ports and state in temporary
// directories. The tests need clickhouse-server, clickhouse-client and prometheus on the
// machine; without them they skip, unless PYRAMID_TEST_REQUIRE=1 (as `make test` sets), when
// they fail so that CI can never pass by skipping.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// requireTools returns the absolute path of each named program, looking in PATH and in the
// sbin directories where Debian installs clickhouse-server. A missing program skips the
// test, or fails it under PYRAMID_TEST_REQUIRE=1.
func requireTools(t testing.TB, names ...string) map[string]string {
	t.Helper()
	path := os.Getenv("PATH") + string(os.PathListSeparator) + "/usr/sbin:/sbin"
	found := make(map[string]string, len(names))
	var missing []string
	for _, name := range names {
		p := lookPathIn(name, path)
		if p == "" {
			missing = append(missing, name)
			continue
		}
		found[name] = p
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("missing programs %s (deploy/install.sh installs them)", strings.Join(missing, ", "))
		if os.Getenv("PYRAMID_TEST_REQUIRE") == "1" {
			t.Fatal(msg + " but PYRAMID_TEST_REQUIRE=1")
		}
		t.Skip(msg)
	}
	return found
}

// lookPathIn is exec.LookPath over an explicit search path.
func lookPathIn(name, path string) string {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// freePort asks the kernel for an unused loopback port. Another process could take it before
// we use it, but every server here binds within seconds, which makes that unlikely enough.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// buildPyramid compiles cmd/pyramid into dir and returns the binary's path. `go test` puts
// the go command of the toolchain running the test first in PATH.
func buildPyramid(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "pyramid")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/pyramid")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pyramid: %v\n%s", err, out)
	}
	return bin
}

// process is a server the test started and must end. Its stdout and stderr go to a log
// file whose tail is printed when the test fails.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed when the process has exited; waitErr is then set
	waitErr error
}

// startProcess starts bin with args and extra environment, logging to logPath, and ends it
// when t ends: SIGTERM, then SIGKILL if it has not exited within a few seconds.
func startProcess(t testing.TB, name, logPath string, env []string, bin string, args ...string) *process {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create %s log: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// If the test binary itself dies (a panic, go test's -timeout), t.Cleanup never runs;
	// the parent-death signal still takes the child down with it.
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- last lines of the %s log (%s):\n%s", name, logPath, tail(logPath, 200))
		}
		p.stop(5 * time.Second)
	})
	return p
}

// stop ends the process: SIGTERM, and SIGKILL once grace has passed.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// checkAlive returns an error if the process has exited, so that waits fail at once with a
// reason instead of running into their deadline.
func (p *process) checkAlive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited early (%v); last lines of its log:\n%s", p.name, p.waitErr, tail(p.logPath, 60))
	default:
		return nil
	}
}

// tail returns the last n lines of a file, or a note saying why it could not be read.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every 200ms until it returns nil or timeout passes, and then fails the
// test with cond's last error. The machine is shared and noisy, so callers pass generous
// timeouts: they bound a hang, they do not assert speed.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := poll(timeout, cond); err != nil {
		t.Fatalf("wait for %s: %v", what, err)
	}
}

// poll is waitFor without the test: it returns cond's last error on timeout, so that the
// caller can gather diagnostics before failing.
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still not done after %s: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fatalError makes waitFor give up at once: retrying cannot help, e.g. the process died.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// stopWaiting wraps err so that waitFor stops polling.
func stopWaiting(err error) error {
	if err == nil {
		return nil
	}
	return &fatalError{err}
}

// httpGet fetches url and returns the body of a 200 answer.
func httpGet(url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// waitReady polls a /-/ready endpoint until it answers 200 while p is still running.
func waitReady(t testing.TB, p *process, url string) {
	t.Helper()
	waitFor(t, p.name+" to be ready", 90*time.Second, func() error {
		if err := p.checkAlive(); err != nil {
			return stopWaiting(err)
		}
		_, err := httpGet(url)
		return err
	})
}

// clickhouseServer is a private clickhouse-server run through deploy/clickhouse.sh, so the test
// restarts it exactly the way operators and the other tests do.
type clickhouseServer struct {
	script    string
	dir       string
	tcp, http int
}

// startClickHouse starts a server with its state in a fresh temporary directory and stops it
// when t ends, whether the test passed or not.
func startClickHouse(t testing.TB) *clickhouseServer {
	t.Helper()
	script, err := filepath.Abs("../deploy/clickhouse.sh")
	if err != nil {
		t.Fatalf("locate deploy/clickhouse.sh: %v", err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("find deploy/clickhouse.sh: %v", err)
	}
	ch := &clickhouseServer{script: script, dir: t.TempDir(), tcp: freePort(t), http: freePort(t)}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- last lines of the ClickHouse error log:\n%s", tail(filepath.Join(ch.dir, "log", "clickhouse-server.err.log"), 30))
		}
		if err := ch.run("stop"); err != nil {
			t.Logf("stop ClickHouse: %v; killing it", err)
			if err := ch.run("kill"); err != nil {
				t.Errorf("kill ClickHouse in %s: %v", ch.dir, err)
			}
		}
	})
	ch.start(t)
	return ch
}

func (ch *clickhouseServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(ch.tcp)) }

// start (re)starts the server on the same directory and ports; the script returns once
// the server answers queries.
func (ch *clickhouseServer) start(t testing.TB) {
	t.Helper()
	if err := ch.run("start", strconv.Itoa(ch.tcp), strconv.Itoa(ch.http)); err != nil {
		t.Fatalf("start ClickHouse: %v", err)
	}
}

// kill ends the server with SIGKILL, as a crash would.
func (ch *clickhouseServer) kill(t testing.TB) {
	t.Helper()
	if err := ch.run("kill"); err != nil {
		t.Fatalf("kill ClickHouse: %v", err)
	}
}

func (ch *clickhouseServer) run(cmd string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", append([]string{ch.script, cmd, ch.dir}, args...)...)
	out, err := c.CombinedOutput()
	if err != nil {
		return fmt.Errorf("clickhouse.sh %s: %w\n%s", cmd, err, bytes.TrimSpace(out))
	}
	return nil
}

// metricSample is one line of the Prometheus text format.
type metricSample struct {
	labels map[string]string
	value  float64
}

// scrapeMetric fetches a /metrics page and returns the samples of one metric. The parser is
// deliberately small: it reads the lines Prometheus client libraries write and nothing more.
func scrapeMetric(url, name string) ([]metricSample, error) {
	body, err := httpGet(url)
	if err != nil {
		return nil, err
	}
	var out []metricSample
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a longer name that starts with this one
		}
		labels := map[string]string{}
		if rest[0] == '{' {
			var err error
			labels, rest, err = parseLabels(rest[1:])
			if err != nil {
				return nil, fmt.Errorf("parse %q from %s: %w", line, url, err)
			}
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("parse %q from %s: no value", line, url)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("parse %q from %s: %w", line, url, err)
		}
		out = append(out, metricSample{labels: labels, value: v})
	}
	return out, sc.Err()
}

// parseLabels reads `a="x",b="y"}` and returns the labels and what follows the brace.
func parseLabels(s string) (map[string]string, string, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if strings.HasPrefix(s, "}") {
			return labels, s[1:], nil
		}
		eq := strings.Index(s, `="`)
		if eq < 0 {
			return nil, "", errors.New("label without value")
		}
		name := s[:eq]
		s = s[eq+2:]
		var val strings.Builder
		for {
			if s == "" {
				return nil, "", errors.New("unterminated label value")
			}
			c := s[0]
			s = s[1:]
			if c == '"' {
				break
			}
			if c == '\\' && s != "" {
				switch s[0] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(s[0])
				}
				s = s[1:]
				continue
			}
			val.WriteByte(c)
		}
		labels[name] = val.String()
	}
}

// sumMetric adds up the samples of one metric whose labels include all of want.
func sumMetric(url, name string, want map[string]string) (float64, error) {
	samples, err := scrapeMetric(url, name)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, s := range samples {
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			sum += s.value
		}
	}
	return sum, nil
}

// dumpGoroutines makes a Go program print every goroutine's stack to its log and exit
// (SIGQUIT), for diagnosing a hang.
func (p *process) dumpGoroutines() {
	if p.checkAlive() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
}

// grepMetrics returns the lines of a /metrics page that start with any of the prefixes, or
// why it could not be read.
func grepMetrics(baseURL string, prefixes ...string) string {
	body, err := httpGet(baseURL + "/metrics")
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// startQueryPrometheus runs Prometheus 2.42 on tsdbDir with the given config (no scrape
// jobs: it only answers queries, from that TSDB or through remote read) and a retention long
// enough to keep old data, and returns once it is ready. args add flags.
func startQueryPrometheus(tb testing.TB, bin, work, name, tsdbDir, cfg string, args ...string) *prometheusServer {
	tb.Helper()
	cfgPath := filepath.Join(work, name+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		tb.Fatalf("write %s config: %v", name, err)
	}
	if err := os.MkdirAll(tsdbDir, 0o755); err != nil {
		tb.Fatalf("create %s TSDB directory: %v", name, err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb)))
	p := startProcess(tb, name, filepath.Join(work, name+".log"), nil, bin, append([]string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + tsdbDir,
		"--storage.tsdb.retention.time=10y",
		"--web.listen-address=" + addr,
		"--log.level=info",
	}, args...)...)
	s := &prometheusServer{process: p, url: "http://" + addr, cfgPath: cfgPath}
	waitReady(tb, p, s.url+"/-/ready")
	return s
}

// scrapeStack is the setting of both end-to-end tests: a private ClickHouse, pyramid on it,
// the in-process exporter and a Prometheus scraping the exporter and remote-writing to
// pyramid. logf logs with the seconds since the stack began.
type scrapeStack struct {
	prometheusBin, work string
	ch                  *clickhouseServer
	pyr                 *pyramidServer
	exp                 *exporter
	prom                *prometheusServer
	began               time.Time
}

// startScrapeStack starts the stack with pyramid's tables in db; extra, if not nil, adds
// series to the exporter before the first scrape.
func startScrapeStack(t *testing.T, db string, extra func(b *strings.Builder, n int)) *scrapeStack {
	t.Helper()
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus")
	st := &scrapeStack{prometheusBin: tools["prometheus"], work: t.TempDir(), began: time.Now()}
	bin := buildPyramid(t, st.work)
	st.logf(t, "built pyramid")
	st.ch = startClickHouse(t)
	st.logf(t, "ClickHouse ready on %s (state in %s)", st.ch.addr(), st.ch.dir)
	st.pyr = startPyramid(t, bin, st.ch.addr(), db, st.work)
	st.logf(t, "pyramid ready on %s", st.pyr.url)
	st.exp = startExporter(t)
	if extra != nil {
		st.exp.setExtra(extra)
	}
	st.prom = startPrometheus(t, st.prometheusBin, st.work, st.exp.hostPort(), st.pyr.url)
	st.logf(t, "Prometheus ready on %s", st.prom.url)
	return st
}

func (st *scrapeStack) logf(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("[%5.1fs] "+format, append([]any{time.Since(st.began).Seconds()}, args...)...)
}
