package adapter_test

import (
	"context"
	"errors"
	"math"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/golang/snappy"
	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage/remote"
)

// prometheus3Client is Prometheus 3's own remote-write client, configured as
// `protobuf_message: io.prometheus.write.v2.Request` configures it.
func prometheus3Client(t *testing.T, s *testServer) remote.WriteClient {
	t.Helper()
	u, err := url.Parse(s.URL + "/api/v1/write")
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewWriteClient("pyramid", &remote.ClientConfig{
		URL: &config_util.URL{URL: u}, Timeout: model.Duration(30 * time.Second),
		WriteProtoMsg: remoteapi.WriteV2MessageType,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRemoteWrite2WithPrometheusClient sends remote write 2.0 through Prometheus's own
// client: the response must confirm the samples written (Prometheus 3 drops a batch whose
// 2xx lacks the written-counts headers), and the rows must be stored bit-exact, with the
// per-series metadata stored once per metric family.
func TestRemoteWrite2WithPrometheusClient(t *testing.T) {
	s := newTestServer(t, nil)
	client := prometheus3Client(t, s)
	st := writev2.NewSymbolTable()
	counter := writev2.Metadata{Type: writev2.Metadata_METRIC_TYPE_COUNTER, HelpRef: st.Symbolize("Requests served.")}
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{
		{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "http_requests_total", "code", "200", "job", "api"), nil),
			Samples: []writev2.Sample{{Value: 10, Timestamp: 1000}, {Value: math.Float64frombits(staleBits), Timestamp: 16000}}, Metadata: counter},
		{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "http_requests_total", "code", "500", "job", "api"), nil),
			Samples: []writev2.Sample{{Value: math.Inf(-1), Timestamp: 1000, StartTimestamp: 1}}, Metadata: counter},
	}}
	req.Symbols = st.Symbols()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	stats, err := client.Store(context.Background(), snappy.Encode(nil, raw), 0)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	if !stats.Confirmed || stats.Samples != 3 || stats.Histograms != 0 || stats.Exemplars != 0 {
		t.Errorf("response stats %+v, want 3 samples confirmed", stats)
	}
	got := s.stored(t)
	want := []storedSample{
		{`__name__="http_requests_total",code="200",job="api",`, 1000, math.Float64bits(10)},
		{`__name__="http_requests_total",code="500",job="api",`, 1000, math.Float64bits(math.Inf(-1))},
		{`__name__="http_requests_total",code="200",job="api",`, 16000, staleBits},
	}
	slices.SortFunc(got, cmpSample)
	slices.SortFunc(want, cmpSample)
	if !slices.Equal(got, want) {
		t.Errorf("stored:\n%v\nwant:\n%v", got, want)
	}
	// Sent again (as every 2.0 request repeats it), the metadata is not inserted again.
	if _, err := client.Store(context.Background(), snappy.Encode(nil, raw), 1); err != nil {
		t.Fatalf("store again: %v", err)
	}
	if n := s.count(t, "SELECT count() FROM DB.metadata WHERE metric_family_name = 'http_requests_total' AND type = 'counter' AND help = 'Requests served.'"); n != 1 {
		t.Errorf("metadata rows = %d, want 1", n)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples FINAL"); n != 3 {
		t.Errorf("samples after a retry = %d, want 3", n)
	}
}

// TestRemoteWrite2Rejections: a native histogram cannot be stored yet, so its series is
// refused with a 400 that Prometheus's client reports as non-retryable, while the response
// still says how many samples of the same request were stored.
func TestRemoteWrite2Rejections(t *testing.T) {
	s := newTestServer(t, nil)
	client := prometheus3Client(t, s)
	st := writev2.NewSymbolTable()
	req := &writev2.Request{Timeseries: []writev2.TimeSeries{
		{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "up"), nil), Samples: []writev2.Sample{{Value: 1, Timestamp: 1}}},
		{LabelsRefs: st.SymbolizeLabels(labels.FromStrings("__name__", "latency_seconds"), nil),
			Histograms: []writev2.Histogram{{Count: &writev2.Histogram_CountInt{CountInt: 1}, Timestamp: 1}}},
	}}
	req.Symbols = st.Symbols()
	raw, err := req.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	stats, err := client.Store(context.Background(), snappy.Encode(nil, raw), 0)
	var recoverable remote.RecoverableError
	if err == nil || errors.As(err, &recoverable) {
		t.Fatalf("store: err = %v, want a non-retryable error", err)
	}
	if !stats.Confirmed || stats.Samples != 1 || stats.Histograms != 0 {
		t.Errorf("response stats %+v, want 1 sample and 0 histograms confirmed", stats)
	}
	if n := s.count(t, "SELECT count() FROM DB.samples"); n != 1 {
		t.Errorf("stored %d samples, want the 1 valid one", n)
	}
}
