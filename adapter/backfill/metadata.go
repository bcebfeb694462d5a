package backfill

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunks"
	"github.com/prometheus/prometheus/tsdb/record"
	"github.com/prometheus/prometheus/tsdb/wlog"
)

const (
	// metadataLimit bounds the /api/v1/metadata answer read: Prometheus answers one entry
	// per metric family and help text, so even a large server stays far below it.
	metadataLimit = 64 << 20
	// metadataTimeout bounds the whole metadata request, body included.
	metadataTimeout = time.Minute
)

// ErrNoMetadataURL is returned when the remote-read URL's path does not end in
// /api/v1/read, so that the metadata URL cannot be derived from it.
var ErrNoMetadataURL = errors.New("the remote-read URL does not end in /api/v1/read; give the metadata URL")

// MetadataURL is the /api/v1/metadata URL of the Prometheus serving remote read at
// remoteRead: the same URL with its path's /api/v1/read turned into /api/v1/metadata.
func MetadataURL(remoteRead string) (string, error) {
	u, err := url.Parse(remoteRead)
	if err != nil {
		return "", fmt.Errorf("remote-read URL %q: %w", remoteRead, err)
	}
	base, ok := strings.CutSuffix(strings.TrimSuffix(u.EscapedPath(), "/"), "/api/v1/read")
	if !ok {
		return "", fmt.Errorf("derive a metadata URL from %q: %w", remoteRead, ErrNoMetadataURL)
	}
	u.RawPath = base + "/api/v1/metadata"
	if u.Path, err = url.PathUnescape(u.RawPath); err != nil {
		return "", fmt.Errorf("remote-read URL path %q: %w", u.RawPath, err)
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// remoteMetadata fetches the metadata of the Prometheus read remotely and stores that of
// the families imported, and returns how many families it stored and whether the source
// failed (1) or not (0). Only an insert that fails is an error.
func (w *writer) remoteMetadata(ctx context.Context, cfg Config) (int, int, error) {
	u := cfg.MetadataURL
	var err error
	if u == "" {
		u, err = MetadataURL(cfg.RemoteRead)
	}
	var md []prompb.MetricMetadata
	if err == nil {
		md, err = fetchMetadata(ctx, u)
	}
	if err != nil {
		w.logger.Warn("backfill: no metadata from the source; the samples are imported without it", "url", u, "err", err)
		return 0, 1, nil
	}
	if w.names != nil {
		keep := families(w.names)
		md = slices.DeleteFunc(md, func(m prompb.MetricMetadata) bool { return !keep[m.MetricFamilyName] })
	}
	// Versioned by the clock like the metadata remote write brings: both are the source's
	// metadata as of now.
	if err := w.st.InsertMetadata(ctx, md, time.Now().UnixMilli()); err != nil {
		return 0, 0, err
	}
	return len(md), 0, nil
}

// fetchMetadata reads a Prometheus /api/v1/metadata answer. Prometheus lists every
// distinct entry its targets expose for a family, and pyramid keeps one per family: the
// first in type, help and unit order, so that the choice does not depend on map order.
func fetchMetadata(ctx context.Context, u string) ([]prompb.MetricMetadata, error) {
	ctx, cancel := context.WithTimeout(ctx, metadataTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("metadata request: %w", err)
	}
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("get metadata: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, metadataLimit+1))
	if err != nil {
		return nil, fmt.Errorf("read metadata after %d bytes: %w", len(body), err)
	}
	if len(body) > metadataLimit {
		return nil, fmt.Errorf("metadata answer passes %d bytes", metadataLimit)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metadata answered %s: %.200s", resp.Status, body)
	}
	var answer struct {
		Status string                     `json:"status"`
		Error  string                     `json:"error"`
		Data   map[string][]metadataEntry `json:"data"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("decode %d bytes of metadata: %w", len(body), err)
	}
	if answer.Status != "success" {
		return nil, fmt.Errorf("metadata answered status %q: %s", answer.Status, answer.Error)
	}
	out := make([]prompb.MetricMetadata, 0, len(answer.Data))
	for family, entries := range answer.Data {
		if len(entries) == 0 {
			continue
		}
		e := slices.MinFunc(entries, func(a, b metadataEntry) int {
			return cmp.Or(strings.Compare(a.Type, b.Type), strings.Compare(a.Help, b.Help), strings.Compare(a.Unit, b.Unit))
		})
		out = append(out, prompb.MetricMetadata{MetricFamilyName: family, Help: e.Help, Unit: e.Unit,
			Type: prompb.FromMetadataType(model.MetricType(e.Type))})
	}
	slices.SortFunc(out, func(a, b prompb.MetricMetadata) int { return strings.Compare(a.MetricFamilyName, b.MetricFamilyName) })
	return out, nil
}

// metadataEntry is one entry of a metric family in a /api/v1/metadata answer.
type metadataEntry struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// familySuffixes are the endings the series of a metric family add to its name: classic
// histogram and summary series, counters, and OpenMetrics' info and created series.
var familySuffixes = []string{"_bucket", "_count", "_sum", "_gcount", "_gsum", "_total", "_created", "_info"}

// families returns the metric family names the series named names can belong to: each
// name itself, and the name without one of familySuffixes.
func families(names map[string]struct{}) map[string]bool {
	out := make(map[string]bool, len(names))
	for n := range names {
		out[n] = true
		for _, s := range familySuffixes {
			if f, ok := strings.CutSuffix(n, s); ok && f != "" {
				out[f] = true
			}
		}
	}
	return out
}

// walMetadata stores the metadata records of the WAL in the data directory dir, and
// returns how many families it stored and whether reading the WAL failed (1) or not (0).
// A WAL cut short, as a crash leaves it, still gives what was read before the cut.
func (w *writer) walMetadata(ctx context.Context, dir string, ms []*labels.Matcher) (int, int, error) {
	walDir := filepath.Join(dir, "wal")
	md, version, err := readWALMetadata(walDir, ms, w.logger)
	failures := 0
	if err != nil {
		w.logger.Warn("backfill: the WAL's metadata records could not all be read; the samples are imported all the same",
			"wal", walDir, "families_read", len(md), "err", err)
		failures = 1
	}
	if err := w.st.InsertMetadata(ctx, md, version); err != nil {
		return 0, failures, err
	}
	return len(md), failures, nil
}

// readWALMetadata reads the metadata records (which Prometheus writes with
// --enable-feature=metadata-wal-records) of the WAL in walDir, its last checkpoint first,
// with Prometheus's own WAL reader and record decoder. It returns the last metadata
// recorded per metric family (familyOf) of the series that match ms (all series when ms
// is empty), and the modification time of the newest segment (ms) to version them with:
// the metadata is no newer than that, so the metadata remote write brings later wins. A
// data directory without a WAL, such as a snapshot, has none.
func readWALMetadata(walDir string, ms []*labels.Matcher, logger *slog.Logger) ([]prompb.MetricMetadata, int64, error) {
	if _, err := os.Stat(walDir); errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	var dirs []wlog.SegmentRange
	first := 0
	switch cp, idx, err := wlog.LastCheckpoint(walDir); {
	case err == nil:
		dirs, first = append(dirs, wlog.SegmentRange{Dir: cp, First: -1, Last: -1}), idx+1
	case !errors.Is(err, record.ErrNotFound):
		return nil, 0, fmt.Errorf("find the checkpoint of %s: %w", walDir, err)
	}
	dirs = append(dirs, wlog.SegmentRange{Dir: walDir, First: first, Last: -1})
	version, err := newestSegment(dirs)
	if err != nil {
		return nil, 0, err
	}
	rc, err := wlog.NewSegmentsRangeReader(dirs...)
	if err != nil {
		return nil, 0, fmt.Errorf("open the WAL %s: %w", walDir, err)
	}
	defer rc.Close()

	// Series records come before the metadata records of their series. Only matching
	// series are kept, as the index of their metric name, each name once: memory grows
	// with the series of the WAL, by a map entry of a reference and an index each.
	refs := map[chunks.HeadSeriesRef]uint32{}
	var names []string
	index := map[string]uint32{}
	latest := map[string]record.RefMetadata{}
	var order []string
	dec := record.NewDecoder(nil, logger)
	var series []record.RefSeries
	var metas []record.RefMetadata
	r := wlog.NewReader(rc)
	for r.Next() {
		rec := r.Record()
		switch dec.Type(rec) {
		case record.Series:
			if series, err = dec.Series(rec, series[:0]); err != nil {
				return walFamilies(latest, order), version, fmt.Errorf("decode a series record of segment %d: %w", r.Segment(), err)
			}
			for _, s := range series {
				if !matchAll(ms, s.Labels) {
					continue
				}
				// The decoder's labels point into the record, which the next one overwrites.
				name := s.Labels.Get(labels.MetricName)
				i, ok := index[name]
				if !ok {
					i = uint32(len(names))
					names = append(names, strings.Clone(name))
					index[names[i]] = i
				}
				refs[s.Ref] = i
			}
		case record.Metadata:
			if metas, err = dec.Metadata(rec, metas[:0]); err != nil {
				return walFamilies(latest, order), version, fmt.Errorf("decode a metadata record of segment %d: %w", r.Segment(), err)
			}
			for _, m := range metas {
				i, ok := refs[m.Ref]
				if !ok {
					continue
				}
				name := familyOf(names[i], m.Type)
				if _, seen := latest[name]; !seen {
					order = append(order, name)
				}
				latest[name] = m
			}
		}
	}
	if err := r.Err(); err != nil {
		return walFamilies(latest, order), version, fmt.Errorf("read the WAL %s: %w", walDir, err)
	}
	return walFamilies(latest, order), version, nil
}

// familyOf is the metric family a series named name belongs to, given the type its WAL
// metadata names: a histogram's or summary's series without their suffix, as Prometheus's
// /api/v1/metadata names the family; any other series by its name.
func familyOf(name string, typ uint8) string {
	switch record.MetricType(typ) {
	case record.HistogramSample, record.GaugeHistogram, record.Summary:
		for _, s := range []string{"_bucket", "_count", "_sum", "_gcount", "_gsum", "_created"} {
			if f, ok := strings.CutSuffix(name, s); ok && f != "" {
				return f
			}
		}
	}
	return name
}

// walFamilies is the metadata of latest as metric families, in the order first met.
func walFamilies(latest map[string]record.RefMetadata, order []string) []prompb.MetricMetadata {
	md := make([]prompb.MetricMetadata, 0, len(order))
	for _, name := range order {
		m := latest[name]
		md = append(md, prompb.MetricMetadata{MetricFamilyName: name, Help: m.Help, Unit: m.Unit,
			Type: prompb.FromMetadataType(record.ToMetricType(m.Type))})
	}
	return md
}

// matchAll reports whether lset matches every matcher of ms.
func matchAll(ms []*labels.Matcher, lset labels.Labels) bool {
	for _, m := range ms {
		if !m.Matches(lset.Get(m.Name)) {
			return false
		}
	}
	return true
}

// newestSegment is the latest modification time (ms) of the segments in the ranges.
func newestSegment(ranges []wlog.SegmentRange) (int64, error) {
	var newest int64
	for _, sr := range ranges {
		entries, err := os.ReadDir(sr.Dir)
		if err != nil {
			return 0, fmt.Errorf("list the WAL segments of %s: %w", sr.Dir, err)
		}
		for _, e := range entries {
			if k, err := strconv.Atoi(e.Name()); err != nil || (sr.First >= 0 && k < sr.First) {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				return 0, fmt.Errorf("stat WAL segment %s: %w", e.Name(), err)
			}
			newest = max(newest, fi.ModTime().UnixMilli())
		}
	}
	return newest, nil
}
