package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"
)

// TestAbuse runs the attacks of issue 10 ("Safe to expose") against the pyramid binary and
// a real ClickHouse, each on a fresh pyramid: clients that send their bodies a byte at a
// time, idle keep-alive connections past the file-descriptor limit, and requests built to
// take as much memory as they can. It asserts outcomes only: statuses, rows stored, other
// senders served, and the peak resident memory the kernel reports for pyramid.
//
// PYRAMID_E2E_BINARY runs the attacks against another build instead, such as one from
// before the fix, to see them succeed; the memory attacks then take some 20 GB.
func TestAbuse(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about a minute; skipped in -short mode")
	}
	requireTools(t, "bash", "clickhouse-server", "clickhouse-client")
	work := t.TempDir()
	bin := os.Getenv("PYRAMID_E2E_BINARY")
	if bin == "" {
		bin = buildPyramid(t, work)
	}
	ch := startClickHouse(t)
	t.Run("SlowClients", func(t *testing.T) { testSlowClients(t, bin, ch.addr(), work) })
	t.Run("IdleConnections", func(t *testing.T) { testIdleConnections(t, bin, ch.addr(), work) })
	t.Run("Memory", func(t *testing.T) { testMemoryAttacks(t, bin, ch.addr(), work) })
}

// testSlowClients: 20 writers and 12 remote readers send their bodies two bytes a second,
// more than there are decode slots (16) and read slots (10). Meanwhile a normal write is
// stored (204) and a normal remote read answered (200); then every slow client is
// answered 408 or disconnected once the body timeout has passed.
func testSlowClients(t *testing.T, bin, chAddr, work string) {
	const db = "e2e_abuse_slow"
	pyr := startPyramid(t, bin, chAddr, db, work, "PYRAMID_TEST_LOG=pyramid-slow.log",
		// Long enough for the normal requests to be served while every slow client is
		// still connected, short enough not to wait long for the slow clients' end.
		"PYRAMID_HTTP_BODY_TIMEOUT=10s",
		// Without the fix, the normal write waits this long for a decode slot and the read
		// this long for a read slot, and then fails; with it they wait for neither.
		"PYRAMID_INSERT_TIMEOUT=5s", "PYRAMID_READ_QUEUE_WAIT=3s")
	addr := strings.TrimPrefix(pyr.url, "http://")

	var slow []*slowClient
	for range 20 {
		slow = append(slow, startSlowClient(t, addr, "/api/v1/write"))
	}
	for range 12 {
		slow = append(slow, startSlowClient(t, addr, "/api/v1/read"))
	}
	// A server reading a body says 100 Continue to a client that asked; then the client
	// trickles. Once as many bodies are being read as there are decode and read slots,
	// a server that holds a slot while it reads a body has none left.
	waitFor(t, "pyramid to read as many slow bodies as it has slots", 30*time.Second, func() error {
		if err := pyr.checkAlive(); err != nil {
			return stopWaiting(err)
		}
		reading := map[string]int{}
		for _, c := range slow {
			if c.isReading() {
				reading[c.path]++
			}
		}
		if reading["/api/v1/write"] < 16 || reading["/api/v1/read"] < 10 {
			return fmt.Errorf("reading %d slow write bodies and %d slow read bodies", reading["/api/v1/write"], reading["/api/v1/read"])
		}
		return nil
	})
	for _, c := range slow {
		go c.trickle()
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ts := time.Now().Add(-time.Minute).UnixMilli()
	normal := writeRequest("abuse_normal", 0, 10, 3, ts)
	if code, msg, err := postWrite(ctx, pyr.url, normal); err != nil || code != http.StatusNoContent {
		t.Errorf("normal write while %d slow clients trickle: %d %q %v; want 204", len(slow), code, msg, err)
	}
	if n, err := countStored(ctx, chAddr, db, "abuse_normal_0"); err != nil || n != 30 {
		t.Errorf("normal write: %d samples stored (%v), want 30", n, err)
	}
	if code, n, err := remoteRead(ctx, pyr.url, "abuse_normal_0", ts, ts+time.Minute.Milliseconds()); err != nil || code != http.StatusOK || n != 30 {
		t.Errorf("normal remote read while %d slow clients trickle: %d with %d samples (%v); want 200 with 30", len(slow), code, n, err)
	}
	for _, c := range slow {
		switch {
		case !c.hasEnded():
		case c.status == http.StatusRequestTimeout:
			t.Fatalf("a slow client's body timed out before the normal requests were done, which proves nothing; raise PYRAMID_HTTP_BODY_TIMEOUT for this machine")
		default:
			t.Fatalf("a slow client on %s was answered %d while its body was still arriving", c.path, c.status)
		}
	}

	err := poll(time.Minute, func() error {
		open := 0
		for _, c := range slow {
			if !c.hasEnded() {
				open++
			}
		}
		if open > 0 {
			return fmt.Errorf("%d of %d slow clients still connected", open, len(slow))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("wait for pyramid to end the slow clients' requests: %v", err)
	}
	for _, c := range slow {
		if c.status != 0 && c.status != http.StatusRequestTimeout {
			t.Errorf("slow client on %s answered %d, want 408 (or a closed connection)", c.path, c.status)
		}
	}
}

// slowClient sends a POST whose body trickles in two bytes a second, and records how the
// server ends it: a final status, or 0 when the connection closed without one.
type slowClient struct {
	path    string
	conn    net.Conn
	reading chan struct{} // closed when the server answered 100 Continue
	ended   chan struct{} // closed when the server answered or closed the connection
	status  int
}

func startSlowClient(t *testing.T, addr, path string) *slowClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial pyramid: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &slowClient{path: path, conn: conn, reading: make(chan struct{}), ended: make(chan struct{})}
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: pyramid\r\nContent-Encoding: snappy\r\n"+
		"Content-Type: application/x-protobuf\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n", path)
	if err != nil {
		t.Fatalf("send headers: %v", err)
	}
	go c.readResponses()
	return c
}

func (c *slowClient) readResponses() {
	defer close(c.ended)
	r := bufio.NewReader(c.conn)
	for {
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return // closed (or reset) without a final answer
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusContinue {
			close(c.reading)
			continue
		}
		c.status = resp.StatusCode
		return
	}
}

// trickle sends a byte every half second until the server ends the request.
func (c *slowClient) trickle() {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.ended:
			return
		case <-tick.C:
			if _, err := c.conn.Write([]byte{0}); err != nil {
				return
			}
		}
	}
}

func (c *slowClient) isReading() bool {
	select {
	case <-c.reading:
		return true
	default:
		return false
	}
}

func (c *slowClient) hasEnded() bool {
	select {
	case <-c.ended:
		return true
	default:
		return false
	}
}

// testIdleConnections: pyramid runs with 256 file descriptors, and 300 clients each make a
// request and keep their connection open. All of them are served, /-/healthy answers, and
// pyramid never holds more connections than PYRAMID_MAX_CONNECTIONS; the idle ones are
// closed after PYRAMID_HTTP_IDLE_TIMEOUT.
func testIdleConnections(t *testing.T, bin, chAddr, work string) {
	const (
		db          = "e2e_abuse_idle"
		fds         = 256
		maxConns    = 64
		connections = 300
	)
	wrapper := filepath.Join(work, "pyramid-256-fds")
	script := fmt.Sprintf("#!/bin/bash\nulimit -n %d || exit 1\nexec %q \"$@\"\n", fds, bin)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pyr := startPyramid(t, wrapper, chAddr, db, work, "PYRAMID_TEST_LOG=pyramid-idle.log",
		"PYRAMID_MAX_CONNECTIONS="+strconv.Itoa(maxConns), "PYRAMID_HTTP_IDLE_TIMEOUT=5s")
	addr := strings.TrimPrefix(pyr.url, "http://")

	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := range connections {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		open = append(open, c)
		if code, err := keepAliveGet(c, "/-/healthy"); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d of %d, with the earlier ones left open: %d, %v; want 200", i+1, connections, code, err)
		}
	}
	if _, err := httpGet(pyr.url + "/-/healthy"); err != nil {
		t.Errorf("health check after %d idle connections: %v", connections, err)
	}
	n, err := openFiles(pyr.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if n > maxConns+64 {
		t.Errorf("pyramid holds %d open files with PYRAMID_MAX_CONNECTIONS=%d", n, maxConns)
	}
	t.Logf("after %d connections: pyramid holds %d open files", connections, n)

	// Every connection still open on our side is closed by pyramid once idle for 5s.
	err = poll(time.Minute, func() error {
		stillOpen := 0
		for _, c := range open {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				stillOpen++
			}
		}
		if stillOpen > 0 {
			return fmt.Errorf("%d idle connections still open", stillOpen)
		}
		return nil
	})
	if err != nil {
		t.Errorf("wait for pyramid to close idle connections: %v", err)
	}
}

// keepAliveGet sends a GET on c, keeping the connection open, and reads the answer.
func keepAliveGet(c net.Conn, path string) (int, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: pyramid\r\n\r\n", path); err != nil {
		return 0, err
	}
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, c.SetReadDeadline(time.Time{})
}

// openFiles counts the file descriptors process pid holds.
func openFiles(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries), err
}

// memoryLimit is PYRAMID_MEMORY_LIMIT in the memory test: the default.
const memoryLimit = 1 << 30

// memoryMargin is how far above PYRAMID_MEMORY_LIMIT the peak resident memory may go:
// the limit bounds what the Go runtime manages, and the binary's code and the kernel's
// accounting come on top.
const memoryMargin = 64 << 20

// testMemoryAttacks sends the requests of issue 10 that took gigabytes, one attack after
// the other, while a normal sender writes small requests and retries 503s as Prometheus
// does: one 3M-sample request of 26.5 MiB; six of them at once; sixteen 6 MB bodies that
// decompress to 127 MiB. Each attack's requests are answered 204 (their samples all
// stored), 503 with Retry-After or 413; the normal sender loses nothing; and pyramid's
// peak resident memory (VmHWM) stays under PYRAMID_MEMORY_LIMIT plus memoryMargin.
func testMemoryAttacks(t *testing.T, bin, chAddr, work string) {
	const db = "e2e_abuse_memory"
	pyr := startPyramid(t, bin, chAddr, db, work, "PYRAMID_TEST_LOG=pyramid-memory.log",
		"PYRAMID_MEMORY_LIMIT="+strconv.Itoa(memoryLimit),
		// A 3M-sample request fits the rows cap, so that the budget alone decides.
		"PYRAMID_MAX_ROWS_IN_FLIGHT=4000000")
	pid := pyr.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	sender := startNormalSender(ctx, pyr.url)
	ts := time.Now().Add(-6 * time.Hour).UnixMilli()
	big := encodeWriteRequest("abuse_big", 0, 3000, 1000, ts)
	attacks := []struct {
		name     string
		bodies   func() [][]byte
		stored   []string // the metric of each body, whose samples a 204 must have stored
		samples  uint64
		accepted int // how many must be answered 204 at least
	}{
		{"one request of 3M samples", func() [][]byte { return [][]byte{snappy.Encode(nil, big)} },
			[]string{"abuse_big_0"}, 3_000_000, 1},
		{"six requests of 3M samples at once", func() [][]byte {
			var out [][]byte
			for i := 1; i <= 6; i++ {
				out = append(out, snappy.Encode(nil, bytes.ReplaceAll(big, []byte("abuse_big_0"), []byte(fmt.Sprintf("abuse_big_%d", i)))))
			}
			return out
		}, []string{"abuse_big_1", "abuse_big_2", "abuse_big_3", "abuse_big_4", "abuse_big_5", "abuse_big_6"}, 3_000_000, 0},
		{"sixteen 6 MB bodies of 127 MiB decoded", func() [][]byte {
			b := bombRequest("abuse_bomb", 127<<20, ts)
			out := make([][]byte, 16)
			for i := range out {
				out[i] = b
			}
			return out
		}, nil, 0, 0},
	}
	var peak int64
	for _, a := range attacks {
		bodies := a.bodies()
		if err := resetPeakMemory(pid); err != nil {
			t.Fatal(err)
		}
		codes := make([]int, len(bodies))
		msgs := make([]string, len(bodies))
		var wg sync.WaitGroup
		for i, b := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				codes[i], msgs[i], err = postWrite(ctx, pyr.url, b)
				if err != nil {
					msgs[i] = err.Error()
				}
			}()
		}
		wg.Wait()
		hwm, err := peakMemory(pid)
		if err != nil {
			t.Fatal(err)
		}
		peak = max(peak, hwm)
		t.Logf("%s (%.1f MiB each): answered %v; peak RSS %d MiB", a.name, float64(len(bodies[0]))/(1<<20), codes, hwm>>20)
		accepted := 0
		for i, code := range codes {
			switch code {
			case http.StatusNoContent:
				accepted++
				if i < len(a.stored) {
					if n, err := countStored(ctx, chAddr, db, a.stored[i]); err != nil || n != a.samples {
						t.Errorf("%s: request %d was answered 204 but %d of its %d samples are stored (%v)", a.name, i, n, a.samples, err)
					}
				}
			case http.StatusServiceUnavailable, http.StatusRequestEntityTooLarge:
			default:
				t.Errorf("%s: request %d answered %d %q; want 204, 503 or 413", a.name, i, code, msgs[i])
			}
		}
		if accepted < a.accepted {
			t.Errorf("%s: %d requests stored, want at least %d: %q", a.name, accepted, a.accepted, msgs)
		}
		waitFor(t, "pyramid to return the memory of the attack's requests", time.Minute, func() error {
			v, err := sumMetric(pyr.url+"/metrics", "pyramid_request_memory_bytes", nil)
			if err == nil && v != 0 {
				err = fmt.Errorf("%v bytes still held", v)
			}
			return err
		})
	}
	acked, refused, err := sender.stop()
	if err != nil {
		t.Errorf("normal sender: %v", err)
	}
	if n, err := countStored(ctx, chAddr, db, "abuse_normal_0"); err != nil || n != uint64(acked) {
		t.Errorf("normal sender: %d samples acknowledged, %d stored (%v)", acked, n, err)
	}
	t.Logf("normal sender: %d samples acknowledged and stored, %d requests answered 503 and retried", acked, refused)
	if peak > memoryLimit+memoryMargin {
		t.Errorf("peak RSS %d MiB, over PYRAMID_MEMORY_LIMIT (%d MiB) + %d MiB", peak>>20, memoryLimit>>20, memoryMargin>>20)
	}
}

// normalSender writes a small request every 100ms, as a Prometheus does, retrying each
// 503 until it is stored.
type normalSender struct {
	stopping chan struct{}
	done     chan struct{}
	acked    int
	refused  int
	err      error
}

func startNormalSender(ctx context.Context, url string) *normalSender {
	s := &normalSender{stopping: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		ts := time.Now().Add(-time.Hour).UnixMilli()
		for i := 0; ; i++ {
			select {
			case <-s.stopping:
				return
			case <-time.After(100 * time.Millisecond):
			}
			body := writeRequest("abuse_normal", 0, 50, 2, ts+int64(i)*2*15_000)
			for {
				code, msg, err := postWrite(ctx, url, body)
				if err != nil {
					s.err = err
					return
				}
				if code == http.StatusNoContent {
					s.acked += 100
					break
				}
				if code != http.StatusServiceUnavailable {
					s.err = fmt.Errorf("answered %d %q", code, msg)
					return
				}
				s.refused++
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	return s
}

// stop lets the request being sent finish and returns how many samples were
// acknowledged and how many requests were answered 503.
func (s *normalSender) stop() (acked, refused int, err error) {
	close(s.stopping)
	<-s.done
	return s.acked, s.refused, s.err
}

// writeRequest is a snappy-compressed remote-write 1.0 request of series series of
// samples samples each, every 15s from ts, named name_i. Values are random 16-bit
// integers: 3,000 series of 1,000 samples make the 26.5 MiB body of issue 10.
func writeRequest(name string, i, series, samples int, ts int64) []byte {
	return snappy.Encode(nil, encodeWriteRequest(name, i, series, samples, ts))
}

// encodeWriteRequest is writeRequest before compression.
func encodeWriteRequest(name string, i, series, samples int, ts int64) []byte {
	metric := fmt.Sprintf("%s_%d", name, i)
	var raw, s []byte
	for k := range series {
		s = s[:0]
		s = appendLabel(s, "__name__", metric)
		s = appendLabel(s, "instance", "abuse:9100")
		s = appendLabel(s, "job", "abuse")
		s = appendLabel(s, "series", strconv.Itoa(k))
		for j := range samples {
			s = appendSample(s, ts+int64(j)*15_000, float64(rand.IntN(1<<16)))
		}
		raw = protowire.AppendTag(raw, 1, protowire.BytesType)
		raw = protowire.AppendBytes(raw, s)
	}
	return raw
}

// bombRequest is a remote-write request of one series whose samples, all alike, fill
// decoded bytes: snappy compresses it about twenty-fold.
func bombRequest(name string, decoded int, ts int64) []byte {
	s := appendLabel(nil, "__name__", name)
	one := appendSample(nil, ts, 1)
	s = append(s, bytes.Repeat(one, (decoded-len(s)-16)/len(one))...)
	raw := protowire.AppendTag(nil, 1, protowire.BytesType)
	raw = protowire.AppendBytes(raw, s)
	return snappy.Encode(nil, raw)
}

func appendLabel(b []byte, name, value string) []byte {
	l := protowire.AppendTag(nil, 1, protowire.BytesType)
	l = protowire.AppendString(l, name)
	l = protowire.AppendTag(l, 2, protowire.BytesType)
	l = protowire.AppendString(l, value)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, l)
}

func appendSample(b []byte, ts int64, v float64) []byte {
	s := protowire.AppendTag(nil, 1, protowire.Fixed64Type)
	s = protowire.AppendFixed64(s, math.Float64bits(v))
	s = protowire.AppendTag(s, 2, protowire.VarintType)
	s = protowire.AppendVarint(s, uint64(ts))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}

// postWrite sends one remote-write request, without retrying, and returns the status and
// the body of the answer; a 503 must carry Retry-After.
func postWrite(ctx context.Context, url string, body []byte) (int, string, error) {
	resp, msg, err := postSnappy(ctx, url+"/api/v1/write", body, false)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
		return resp.StatusCode, string(msg), errors.New("503 without Retry-After")
	}
	return resp.StatusCode, strings.TrimSpace(string(msg)), nil
}

// remoteRead reads metric over [start, end] as Prometheus 2.x does (SAMPLES) and returns
// the status and the number of samples.
func remoteRead(ctx context.Context, url, metric string, start, end int64) (int, int, error) {
	resp, body, err := postRead(ctx, url, &prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: start, EndTimestampMs: end,
		Matchers: []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_EQ, Name: "__name__", Value: metric}},
	}}})
	if err != nil || resp.StatusCode != http.StatusOK {
		return statusOf(resp), 0, err
	}
	rr, err := decodeSamples(resp, body)
	if err != nil {
		return resp.StatusCode, 0, err
	}
	n := 0
	for _, r := range rr.Results {
		for _, s := range r.Timeseries {
			n += len(s.Samples)
		}
	}
	return resp.StatusCode, n, nil
}

// statusOf is resp's status code, 0 without a response.
func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// countStored counts the distinct samples (series and timestamp) of metric in db.
func countStored(ctx context.Context, addr, db, metric string) (uint64, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 10 * time.Second})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var n uint64
	err = conn.QueryRow(ctx, "SELECT count() FROM (SELECT DISTINCT fingerprint, ts FROM "+db+".samples WHERE fingerprint IN "+
		"(SELECT fingerprint FROM "+db+".series WHERE metric_name = ?))", metric).Scan(&n)
	return n, err
}

// peakMemory is the peak resident set size of process pid (VmHWM), in bytes.
func peakMemory(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// resetPeakMemory sets the peak resident set size of process pid to its current size
// (proc(5), clear_refs).
func resetPeakMemory(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}
