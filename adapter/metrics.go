package adapter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are pyramid's own series on /metrics.
type metrics struct {
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	seriesReceived  prometheus.Counter
	samplesReceived prometheus.Counter
	samplesWritten  prometheus.Counter
	seriesRejected  *prometheus.CounterVec
	samplesRejected *prometheus.CounterVec
	seriesWritten   prometheus.Counter
	metadataWritten prometheus.Counter
	batchRows       prometheus.Histogram
	insertDuration  *prometheus.HistogramVec
	rowsInFlight    prometheus.Gauge
	readSeries      prometheus.Counter
}

// Rejection reasons, the values of the reason label.
const (
	reasonInvalidLabels    = "invalid_labels"
	reasonInvalidHistogram = "invalid_histogram"
	reasonTooOld           = "too_old"
	reasonTooNew           = "too_new"
	reasonStore            = "store_unavailable"
)

func newMetrics(reg prometheus.Registerer, cacheLen, decoding, reading func() int) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_http_requests_total", Help: "HTTP requests by handler and status code.",
		}, []string{"handler", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pyramid_http_request_duration_seconds", Help: "HTTP request latency by handler.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}, []string{"handler"}),
		seriesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_write_series_received_total", Help: "Time series entries received in remote-write requests.",
		}),
		samplesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_write_samples_received_total", Help: "Samples received in remote-write requests.",
		}),
		samplesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_write_samples_written_total", Help: "Samples inserted into ClickHouse.",
		}),
		seriesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_write_series_rejected_total", Help: "Time series entries rejected, by reason.",
		}, []string{"reason"}),
		samplesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pyramid_write_samples_rejected_total", Help: "Samples not stored, by reason; store_unavailable ones are retried by the sender.",
		}, []string{"reason"}),
		seriesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_write_series_catalogued_total", Help: "Rows written to the series catalogue.",
		}),
		metadataWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_write_metadata_written_total", Help: "Metric metadata entries stored.",
		}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pyramid_write_batch_samples", Help: "Samples per insert into ClickHouse.",
			Buckets: prometheus.ExponentialBuckets(100, 4, 8),
		}),
		insertDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pyramid_clickhouse_insert_duration_seconds", Help: "Latency of batch inserts, by result.",
			Buckets: prometheus.ExponentialBuckets(0.002, 2, 14),
		}, []string{"result"}),
		rowsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pyramid_write_rows_in_flight", Help: "Rows accepted and waiting for their insert.",
		}),
		readSeries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pyramid_read_series_total", Help: "Series returned by remote reads.",
		}),
	}
	reg.MustRegister(m.requests, m.requestDuration, m.seriesReceived, m.samplesReceived, m.samplesWritten,
		m.seriesRejected, m.samplesRejected, m.seriesWritten, m.metadataWritten, m.batchRows,
		m.insertDuration, m.rowsInFlight, m.readSeries,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pyramid_series_cache_entries", Help: "Series the write path remembers having catalogued.",
		}, func() float64 { return float64(cacheLen()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pyramid_write_decodes_in_flight", Help: "Write requests being read, decoded and validated.",
		}, func() float64 { return float64(decoding()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pyramid_reads_in_flight", Help: "Remote-read requests holding a read slot.",
		}, func() float64 { return float64(reading()) }),
	)
	// Pre-create the label values so that rates work from the first scrape.
	for _, r := range []string{reasonInvalidLabels, reasonInvalidHistogram, reasonStore} {
		m.seriesRejected.WithLabelValues(r)
		m.samplesRejected.WithLabelValues(r)
	}
	for _, r := range []string{reasonTooOld, reasonTooNew} {
		m.samplesRejected.WithLabelValues(r)
	}
	return m
}

func (m *metrics) observeInsert(samples int, d time.Duration, err error) {
	if err != nil {
		m.insertDuration.WithLabelValues("error").Observe(d.Seconds())
		m.samplesRejected.WithLabelValues(reasonStore).Add(float64(samples))
		return
	}
	m.insertDuration.WithLabelValues("ok").Observe(d.Seconds())
	m.batchRows.Observe(float64(samples))
	m.samplesWritten.Add(float64(samples))
}
