package adapter_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
)

// TestSlowBodyHoldsNoDecodeSlot: a request whose body is still arriving holds no decode
// slot, only the bytes it has sent. With the only slot free, another write is stored at
// once, and the slow request is stored when its body completes.
func TestSlowBodyHoldsNoDecodeSlot(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.MaxConcurrentDecodes = 1; c.InsertTimeout = 3 * time.Second })
	slowBody := body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("slow", nil, prompb.Sample{Timestamp: 1, Value: 1})}})
	pr, pw := io.Pipe()
	slow := postInBackground(s.URL+"/api/v1/write", pr)
	if _, err := pw.Write(slowBody[:3]); err != nil { // the server is now reading this body
		t.Fatal(err)
	}
	waitGauge(t, s, "pyramid_request_memory_bytes", 16<<10)

	resp, msg := s.post(t, body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("fast", nil, prompb.Sample{Timestamp: 1, Value: 2})}}))
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("write while another body trickles in: %d %q, want 204", resp.StatusCode, msg)
	}
	if _, err := pw.Write(slowBody[3:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-slow; err != nil {
		t.Fatalf("slow request: %v", err)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 2 {
		t.Errorf("%d samples stored, want the slow and the fast one", n)
	}
	waitGauge(t, s, "pyramid_request_memory_bytes", 0)
}

// TestBodyTimeout: a client that stops sending its body gets 408 once the body timeout
// has passed, its connection is closed, and the memory it held is returned; on writes and
// reads alike. A request refused for its headers is answered and closed too, although
// net/http reads what is left of its body first.
func TestBodyTimeout(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.BodyTimeout = 300 * time.Millisecond })
	for _, tc := range []struct {
		path, contentType string
		want              int
	}{
		{"/api/v1/write", "application/x-protobuf", http.StatusRequestTimeout},
		{"/api/v1/read", "application/x-protobuf", http.StatusRequestTimeout},
		{"/api/v1/write", "application/json", http.StatusUnsupportedMediaType},
	} {
		c := startSlowPost(t, s, tc.path, 100, []byte("0123456789"), "Content-Type: "+tc.contentType)
		resp, err := readResponse(c)
		if err != nil {
			t.Fatalf("%s (%s): read the response to a stalled body: %v", tc.path, tc.contentType, err)
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s (%s): stalled body answered %s, want %d", tc.path, tc.contentType, resp.Status, tc.want)
		}
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%s (%s): connection after the answer: %v; want it closed by the server", tc.path, tc.contentType, err)
		}
	}
	waitGauge(t, s, "pyramid_request_memory_bytes", 0)
}

// TestBodyDeadlineEndsWithBody: the body timeout bounds the body only. A write that waits
// for its batch longer than the body timeout is stored and answered 204 (a read deadline
// left in place would cancel the request while it waits).
func TestBodyDeadlineEndsWithBody(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) {
		c.BodyTimeout = time.Second
		c.BatchWait = 3 * time.Second
	})
	resp, msg := s.post(t, body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("waits", nil, prompb.Sample{Timestamp: 1, Value: 1})}}))
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("write that waits for its batch past the body timeout: %d %q, want 204", resp.StatusCode, msg)
	}
}

// TestMemoryBudget: bodies hold the budget as they arrive; while slow clients hold all
// of it, a write gets 503 with Retry-After naming the budget, and once they are gone the
// same write is stored. A request whose rows alone need more than the whole budget gets
// 413. Every byte is returned at the end.
func TestMemoryBudget(t *testing.T) {
	s := newTestServer(t, func(c *serverConfig) { c.MemoryBudget = 1 << 20 })

	many := make([]prompb.Sample, 8000)
	for i := range many {
		many[i] = prompb.Sample{Timestamp: int64(i), Value: float64(i)}
	}
	resp, msg := s.post(t, body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("many", nil, many...)}}))
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "request memory budget") {
		t.Errorf("write whose rows need more than the budget: %d %q, want 413 naming the budget", resp.StatusCode, msg)
	}

	// In remote write 2.0, series share symbols: a body of 100 KiB whose 100 series each
	// name the same 64 KiB label value becomes 6.4 MiB of series rows.
	st := writev2.NewSymbolTable()
	shared := strings.Repeat("v", 64<<10)
	v2 := &writev2.Request{}
	for i := range 100 {
		v2.Timeseries = append(v2.Timeseries, writev2.TimeSeries{
			LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "shared", "i", fmt.Sprint(i), "v", shared), nil),
			Samples:    []writev2.Sample{{Value: 1, Timestamp: 1}},
		})
	}
	v2.Symbols = st.Symbols()
	raw, err := v2.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	resp, msg = s.post(t, snappy.Encode(nil, raw), "Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request")
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "request memory budget") {
		t.Errorf("2.0 write whose series copy a shared symbol past the budget: %d %q, want 413 naming the budget", resp.StatusCode, msg)
	}

	// Each slow client has sent 300,000 bytes of 600,000, and holds the 512 KiB buffer
	// they are in: together, the whole budget.
	slow := []net.Conn{
		startSlowPost(t, s, "/api/v1/write", 600_000, make([]byte, 300_000)),
		startSlowPost(t, s, "/api/v1/write", 600_000, make([]byte, 300_000)),
	}
	waitGauge(t, s, "pyramid_request_memory_bytes", 1<<20)
	small := body(t, &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("small", nil, prompb.Sample{Timestamp: 1, Value: 1})}})
	resp, msg = s.post(t, small)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(msg, "memory budget exhausted") {
		t.Errorf("write while the budget is held: %d (Retry-After %q) %q; want 503 with Retry-After naming the budget",
			resp.StatusCode, resp.Header.Get("Retry-After"), msg)
	}
	for _, c := range slow {
		c.Close()
	}
	waitGauge(t, s, "pyramid_request_memory_bytes", 0)
	if resp, msg := s.post(t, small); resp.StatusCode != http.StatusNoContent {
		t.Errorf("write once the slow clients are gone: %d %q, want 204", resp.StatusCode, msg)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 1 {
		t.Errorf("%d samples stored, want 1", n)
	}
	waitGauge(t, s, "pyramid_request_memory_bytes", 0)
}

// startSlowPost opens a connection to s, sends the headers of a POST to path that declare
// a body of length bytes (snappy-compressed protobuf, unless a header line says
// otherwise), then the first bytes of the body, and leaves it at that.
func startSlowPost(t *testing.T, s *testServer, path string, length int, first []byte, headers ...string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(headers) == 0 {
		headers = []string{"Content-Type: application/x-protobuf"}
	}
	if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: pyramid\r\nContent-Encoding: snappy\r\n%s\r\nContent-Length: %d\r\n\r\n", path, strings.Join(headers, "\r\n"), length); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(first); err != nil {
		t.Fatal(err)
	}
	return c
}

// readResponse reads one response from c; the read deadline only bounds a hang.
func readResponse(c net.Conn) (*http.Response, error) {
	if err := c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}
