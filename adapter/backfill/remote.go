package backfill

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/docker/go-units"
	config_util "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/storage/remote"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema"
)

// remoteReadLimit bounds one streamed frame, as Prometheus's chunked_read_limit does.
const remoteReadLimit = 50e6

// runRemoteRead imports what a running Prometheus serves through remote read, with
// Prometheus's own read client asking for streamed chunks (so that a day of many series
// arrives series by series rather than as one response), one UTC day at a time. Days are
// what blocks are for a data directory: the unit recorded as done, and whole buckets of
// every tier, since tier resolutions divide a day.
func runRemoteRead(ctx context.Context, cfg Config, w *writer, done map[string]bool, scope string, cutoff int64, start time.Time, logger *slog.Logger) (Summary, error) {
	u, err := url.Parse(cfg.RemoteRead)
	if err != nil {
		return Summary{}, fmt.Errorf("remote-read URL %q: %w", cfg.RemoteRead, err)
	}
	client, err := remote.NewReadClient("backfill", &remote.ClientConfig{
		URL: &config_util.URL{URL: u}, Timeout: model.Duration(5 * time.Minute), ChunkedReadLimit: remoteReadLimit,
		AcceptedResponseTypes: []prompb.ReadRequest_ResponseType{prompb.ReadRequest_STREAMED_XOR_CHUNKS, prompb.ReadRequest_SAMPLES},
	})
	if err != nil {
		return Summary{}, fmt.Errorf("remote-read client for %s: %w", cfg.RemoteRead, err)
	}
	// Prometheus's client reads the responses itself: the bytes are counted as its
	// transport hands them over.
	rc, ok := client.(*remote.Client)
	if !ok {
		return Summary{}, fmt.Errorf("remote-read client of type %T has no HTTP client to count bytes on", client)
	}
	counted := &countingTransport{next: rc.Client.Transport}
	rc.Client.Transport = counted
	maxt := cfg.MaxTime
	if maxt == math.MaxInt64 {
		maxt = w.now().UnixMilli()
	}
	matchers, err := remote.ToLabelMatchers(selector(cfg.Matchers))
	if err != nil {
		return Summary{}, fmt.Errorf("convert the matchers: %w", err)
	}
	first, last := cfg.MinTime/schema.DayMillis, maxt/schema.DayMillis
	var sum Summary
	w.report.UnitsTotal = int(last - first + 1)
	for day := first; day <= last; day++ {
		id := fmt.Sprintf("remote-read %s day %d", cfg.RemoteRead, day)
		if done[id] {
			sum.Skipped++
			w.report.Units++
			w.reportProgress()
			continue
		}
		mint, dayMaxt := max(cfg.MinTime, day*schema.DayMillis), min(maxt, (day+1)*schema.DayMillis-1)
		read, sent := counted.n.Load(), w.sent
		ss, err := client.Read(ctx, &prompb.Query{StartTimestampMs: mint, EndTimestampMs: dayMaxt, Matchers: matchers}, false)
		if err != nil {
			return sum, fmt.Errorf("remote-read day %d of %s: %w", day, cfg.RemoteRead, err)
		}
		ds, err := w.seriesSet(ctx, ss, cutoff)
		if err != nil {
			return sum, fmt.Errorf("backfill day %d of %s: %w", day, cfg.RemoteRead, err)
		}
		ds.BytesRead, ds.BytesSent = counted.n.Load()-read, w.sent-sent
		if err := w.st.InsertBackfilledBlock(ctx, store.BackfilledBlock{Block: id, Scope: scope, MinTime: mint, MaxTime: dayMaxt,
			Series: uint64(ds.Series), Samples: uint64(ds.Samples), Histograms: uint64(ds.Histograms), DoneMs: time.Now().UnixMilli()}); err != nil {
			return sum, err
		}
		sum.add(ds)
		w.report.Units++
		w.reportProgress()
		w.unitLog("backfill: day stored", "day", time.UnixMilli(day*schema.DayMillis).UTC().Format(time.DateOnly),
			"n", day-first+1, "of", last-first+1, "series", ds.Series, "samples", ds.Samples, "histograms", ds.Histograms,
			"to_tiers", ds.ToTiers, "rollup_rows", ds.Rollups,
			"bytes_read", units.BytesSize(float64(ds.BytesRead)), "bytes_sent", units.BytesSize(float64(ds.BytesSent)),
			"samples_per_second", math.Round(float64(sum.Samples+sum.Histograms)/time.Since(start).Seconds()))
	}
	sum.Metadata, sum.MetadataFailures, err = w.remoteMetadata(ctx, cfg)
	sum.Elapsed = time.Since(start)
	return sum, err
}

// countingTransport counts the response body bytes read through it.
type countingTransport struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (t *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, n: &t.n}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
