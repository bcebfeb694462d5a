package e2e

import (
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// histResetScrape is the scrape at which e2e_nh_reset_seconds starts again from zero.
const histResetScrape = 20

// histExporter is a scrape target serving native histograms with client_golang, in the
// protobuf exposition format that Prometheus asks for when its native-histograms feature is
// on. Each series has its own "kind" label, so that functions that drop the metric name
// keep them apart. Every scrape first observes values that depend only on the scrape's number, so the
// histograms change as the scrapes go on and nothing depends on timing:
//
//   - e2e_nh_mixed_seconds: exponential buckets (schema 3) with positive and negative
//     observations and a zero bucket (|v| <= 1/128).
//   - e2e_nh_reset_seconds{path="/a"}: a counter that restarts from zero at scrape
//     histResetScrape (the vector is reset and the child re-created), a counter reset.
//   - e2e_nh_wide_seconds: observations spread wider with every scrape, at most 12 buckets;
//     client_golang halves its resolution (schema 5 down to lower ones) each time it needs
//     more, so the series changes schema mid-chunk.
//   - e2e_nh_gauge_bytes: a gauge histogram whose counts go up and down. client_golang has
//     no gauge-histogram type, so it is a const native histogram whose family the gatherer
//     retypes GAUGE_HISTOGRAM before encoding.
type histExporter struct {
	srv *httptest.Server

	mu      sync.Mutex
	scrapes int
	mixed   prometheus.Histogram
	reset   *prometheus.HistogramVec
	wide    prometheus.Histogram
	// gaugeN is the scrape number the gauge histogram shows.
	gaugeN int
}

// histGaugeName is the family the gatherer retypes as a gauge histogram.
const histGaugeName = "e2e_nh_gauge_bytes"

var histGaugeDesc = prometheus.NewDesc(histGaugeName, "A gauge histogram: counts go up and down.", []string{"pool"}, prometheus.Labels{"kind": "gauge"})

// startHistExporter serves the histograms until t ends. Each has observations before the
// first scrape: client_golang marks an empty native histogram with a zero-length span,
// which older scrapers may read as a classic histogram without buckets.
func startHistExporter(t *testing.T) *histExporter {
	t.Helper()
	e := &histExporter{
		mixed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "e2e_nh_mixed_seconds", Help: "Positive, negative and zero observations.",
			ConstLabels:                  prometheus.Labels{"kind": "mixed"},
			NativeHistogramBucketFactor:  1.1,
			NativeHistogramZeroThreshold: 1.0 / 128,
		}),
		reset: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "e2e_nh_reset_seconds", Help: "Restarts from zero mid-test.",
			ConstLabels:                 prometheus.Labels{"kind": "reset"},
			NativeHistogramBucketFactor: 1.1,
		}, []string{"path"}),
		wide: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "e2e_nh_wide_seconds", Help: "Ever wider observations; the resolution drops.",
			ConstLabels:                    prometheus.Labels{"kind": "wide"},
			NativeHistogramBucketFactor:    1.02,
			NativeHistogramMaxBucketNumber: 12,
			// Zero keeps client_golang from resetting the histogram to shed buckets: it
			// reduces the resolution instead.
			NativeHistogramMinResetDuration: 0,
		}),
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.mixed, e.reset, e.wide, histGaugeCollector{e})
	e.observe(0)
	gatherer := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		mfs, err := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == histGaugeName {
				mf.Type = dto.MetricType_GAUGE_HISTOGRAM.Enum()
			}
		}
		return mfs, err
	})
	handler := promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The lock covers the gathering too, so that a scrape never sees half of another
		// scrape's observations (or the reset without the observations after it).
		e.mu.Lock()
		defer e.mu.Unlock()
		e.scrapes++
		e.observe(e.scrapes)
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *histExporter) hostPort() string { return strings.TrimPrefix(e.srv.URL, "http://") }

func (e *histExporter) scrapeCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.scrapes
}

// observe adds scrape n's observations; the caller holds e.mu (or is the constructor).
func (e *histExporter) observe(n int) {
	// Mixed: three positive values that drift upwards, two negative ones, an exact zero
	// and a tiny value, both in the zero bucket, and a fraction that makes the sum inexact.
	for _, v := range []float64{
		0.1 * float64(n%7+1), 1.5 + float64(n)/10, 40 + float64(n*n)/3,
		-0.25 * float64(n%5+1), -3 - float64(n)/7,
		0, 1.0 / 1024,
		math.Pi * float64(n),
	} {
		e.mixed.Observe(v)
	}

	// Reset: the vector forgets its child at the reset, and the next observation creates a
	// new one that counts from zero; fewer observations per scrape afterwards keep the
	// count below the old one for the rest of the test.
	if n == histResetScrape {
		e.reset.Reset()
	}
	per := 6
	if n >= histResetScrape {
		per = 2
	}
	for i := range per {
		e.reset.WithLabelValues("/a").Observe(0.01 * float64((n+i)%13+1))
	}

	// Wide: one new power of 1.5 each scrape, so the buckets needed grow by one or two a
	// scrape until client_golang halves the resolution.
	e.wide.Observe(math.Pow(1.5, float64(n%60)))
	e.wide.Observe(1 / math.Pow(1.7, float64(n%60)))

	e.gaugeN = n
}

// histGaugeCollector serves e2e_nh_gauge_bytes as a const native histogram: a pool whose
// occupancy rises and falls with the scrape number. It is collected only while a scrape
// holds e.mu.
type histGaugeCollector struct{ e *histExporter }

func (c histGaugeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- histGaugeDesc }

func (c histGaugeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.e.gaugeN
	wave := int64(n%9) + 1 // 1..9, then down to 1 again
	pos := map[int]int64{0: wave, 1: 10 - wave, 3: 2, 7: int64(n % 4)}
	neg := map[int]int64{2: int64(n%3) + 1}
	var count uint64
	sum := 0.0
	for idx, v := range pos {
		count += uint64(v)
		sum += float64(v) * math.Pow(2, float64(idx)-0.5)
	}
	for idx, v := range neg {
		count += uint64(v)
		sum -= float64(v) * math.Pow(2, float64(idx)-0.5)
	}
	zero := uint64(n % 2)
	count += zero
	ch <- prometheus.MustNewConstNativeHistogram(histGaugeDesc, count, sum, pos, neg, zero, 0, 1.0/1024, time.Time{}, "main")
}
