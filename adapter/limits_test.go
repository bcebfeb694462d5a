package adapter_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/pyramid-metrics/pyramid/adapter"
)

// TestWriteBiggerThanInFlightCap: a request with more rows than may ever be in flight at
// once can never be taken, so it gets 413 without Retry-After (Prometheus drops it rather
// than retrying it forever), nothing of it is stored, and a request that fits is stored
// as before, on the same server, right after.
func TestWriteBiggerThanInFlightCap(t *testing.T) {
	s := newTestServer(t, func(c *adapter.Config) { c.BatchRows = 1000; c.MaxRowsInFlight = 1000 })
	mk := func(name string, n int) []byte {
		var ts []prompb.TimeSeries
		for i := range n { // n samples + 1 series row
			ts = append(ts, series(name, nil, prompb.Sample{Timestamp: int64(i), Value: 1}))
		}
		return body(t, &prompb.WriteRequest{Timeseries: ts})
	}
	for _, v2 := range []bool{false, true} {
		b, kv := mk("huge", 1000), []string(nil)
		if v2 {
			b, kv = v2Body(t, 1000), []string{"Content-Type", "application/x-protobuf;proto=io.prometheus.write.v2.Request", "X-Prometheus-Remote-Write-Version", "2.0.0"}
		}
		resp, msg := s.post(t, b, kv...)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("Retry-After") != "" || !strings.Contains(msg, "1001 rows in one request") {
			t.Errorf("v2 %v: %d rows in one request: %d %q (Retry-After %q); want 413 without Retry-After naming the rows",
				v2, 1001, resp.StatusCode, msg, resp.Header.Get("Retry-After"))
		}
	}
	if resp, msg := s.post(t, mk("fits", 999)); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("request of 1000 rows: %d %s", resp.StatusCode, msg)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 999 {
		t.Errorf("stored %d samples, want the 999 of the request that fits", n)
	}
	if g := gaugeValue(t, s.reg, "pyramid_write_rows_in_flight"); g != 0 {
		t.Errorf("rows in flight after the writes: %v, want 0", g)
	}
}

// v2Body is a remote write 2.0 body of one series with n samples.
func v2Body(t *testing.T, n int) []byte {
	t.Helper()
	st := writev2.NewSymbolTable()
	ts := writev2.TimeSeries{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "huge2"), nil)}
	for i := range n {
		ts.Samples = append(ts.Samples, writev2.Sample{Value: 1, Timestamp: int64(i)})
	}
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{ts}, Symbols: st.Symbols()}
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}
