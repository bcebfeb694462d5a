package e2e

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/prometheus/prompb"
)

// staleNaNBits is Prometheus's stale marker (model/value.StaleNaN), written when a series
// disappears from its target.
const staleNaNBits uint64 = 0x7ff0000000000002

// sample is one stored point; the value is kept as its bits so that NaN payloads, negative
// zero and the stale marker all compare exactly.
type sample struct {
	ts   int64
	bits uint64
}

// seriesSet maps a series' canonical label string (see labelKey) to its samples in time
// order.
type seriesSet map[string][]sample

// labelKey renders a label set canonically: sorted by name, values quoted, so that keys
// compare exactly and print readably even with quotes, newlines or UTF-8 in values.
func labelKey(names, values []string) string {
	idx := make([]int, len(names))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return names[idx[a]] < names[idx[b]] })
	var b strings.Builder
	b.WriteByte('{')
	for n, i := range idx {
		if n > 0 {
			b.WriteString(", ")
		}
		b.WriteString(names[i])
		b.WriteByte('=')
		b.WriteString(strconv.Quote(values[i]))
	}
	b.WriteByte('}')
	return b.String()
}

// readPrometheus reads every series in [start, end] (ms, inclusive) from Prometheus's own
// TSDB through its remote-read endpoint. With no accepted response types the answer is
// SAMPLES: raw samples with exact float bits, stale markers included, which PromQL would
// hide.
func readPrometheus(ctx context.Context, baseURL string, start, end int64) (seriesSet, error) {
	rr := &prompb.ReadRequest{Queries: []*prompb.Query{{
		StartTimestampMs: start,
		EndTimestampMs:   end,
		Matchers:         []*prompb.LabelMatcher{{Type: prompb.LabelMatcher_RE, Name: "__name__", Value: ".+"}},
	}}}
	resp, body, err := postRead(ctx, baseURL, rr)
	if err != nil {
		return nil, fmt.Errorf("post remote read: %w", err)
	}
	rresp, err := decodeSamples(resp, body)
	if err != nil {
		return nil, err
	}
	if len(rresp.Results) != 1 {
		return nil, fmt.Errorf("remote read returned %d results for 1 query", len(rresp.Results))
	}
	out := seriesSet{}
	for _, ts := range rresp.Results[0].Timeseries {
		names := make([]string, len(ts.Labels))
		values := make([]string, len(ts.Labels))
		for i, l := range ts.Labels {
			names[i], values[i] = l.Name, l.Value
		}
		key := labelKey(names, values)
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("remote read returned series %s twice", key)
		}
		var ss []sample
		// The bounds are inclusive on both sides; filter anyway so that both stores are
		// compared over exactly the same window whatever the server does at the edges.
		for _, s := range ts.Samples {
			if s.Timestamp >= start && s.Timestamp <= end {
				ss = append(ss, sample{ts: s.Timestamp, bits: math.Float64bits(s.Value)})
			}
		}
		if len(ss) > 0 {
			out[key] = ss
		}
	}
	return out, nil
}

// clickhouseStats describes what reading pyramid's tables found besides the samples.
type clickhouseStats struct {
	rows       int // sample rows in the window before deduplication
	duplicates int // rows repeating a (series, timestamp) with the same value: retried writes
}

// readPyramid reads pyramid's samples in [start, end] (ms, inclusive) straight from
// ClickHouse. It fetches raw rows rather than reading with FINAL: duplicates from retried
// writes then collapse here, and a duplicate with a different value, which FINAL would
// silently pick one of, is reported as the error it is. Likewise every series row is
// fetched, not one per fingerprint, to check that all rows of a fingerprint agree.
func readPyramid(ctx context.Context, addr, db string, start, end int64) (seriesSet, clickhouseStats, error) {
	var stats clickhouseStats
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: "default"},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		return nil, stats, fmt.Errorf("open ClickHouse %s: %w", addr, err)
	}
	defer conn.Close()

	type labels struct{ key, metricName string }
	catalogue := map[uint64]labels{}
	rows, err := conn.Query(ctx, "SELECT fingerprint, metric_name, label_names, label_values FROM "+db+".series")
	if err != nil {
		return nil, stats, fmt.Errorf("query series: %w", err)
	}
	for rows.Next() {
		var (
			fp            uint64
			name          string
			names, values []string
		)
		if err := rows.Scan(&fp, &name, &names, &values); err != nil {
			rows.Close()
			return nil, stats, fmt.Errorf("scan series: %w", err)
		}
		if len(names) != len(values) {
			rows.Close()
			return nil, stats, fmt.Errorf("series %d has %d label names but %d values", fp, len(names), len(values))
		}
		l := labels{key: labelKey(names, values), metricName: name}
		if i := slices.Index(names, "__name__"); i < 0 || values[i] != name {
			rows.Close()
			return nil, stats, fmt.Errorf("series %s has metric_name %q", l.key, name)
		}
		if prev, ok := catalogue[fp]; ok && prev != l {
			rows.Close()
			return nil, stats, fmt.Errorf("fingerprint %d has two label sets in the catalogue: %s (%q) and %s (%q)", fp, prev.key, prev.metricName, l.key, l.metricName)
		}
		catalogue[fp] = l
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, stats, fmt.Errorf("read series: %w", err)
	}

	rows, err = conn.Query(ctx, "SELECT fingerprint, ts, value FROM "+db+".samples WHERE ts >= ? AND ts <= ?", start, end)
	if err != nil {
		return nil, stats, fmt.Errorf("query samples: %w", err)
	}
	type point struct {
		fp uint64
		ts int64
	}
	seen := map[point]uint64{}
	bySeries := map[uint64][]sample{}
	for rows.Next() {
		var (
			p point
			v float64
		)
		if err := rows.Scan(&p.fp, &p.ts, &v); err != nil {
			rows.Close()
			return nil, stats, fmt.Errorf("scan samples: %w", err)
		}
		stats.rows++
		bits := math.Float64bits(v)
		if prev, ok := seen[p]; ok {
			if prev != bits {
				rows.Close()
				return nil, stats, fmt.Errorf("series %s has two values at %d: %#016x and %#016x", catalogue[p.fp].key, p.ts, prev, bits)
			}
			stats.duplicates++
			continue
		}
		seen[p] = bits
		bySeries[p.fp] = append(bySeries[p.fp], sample{ts: p.ts, bits: bits})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, stats, fmt.Errorf("read samples: %w", err)
	}

	out := seriesSet{}
	for fp, ss := range bySeries {
		l, ok := catalogue[fp]
		if !ok {
			// pyramid inserts a batch's series before its samples, so this is a bug.
			return nil, stats, fmt.Errorf("samples of fingerprint %d (%d in the window) have no row in %s.series", fp, len(ss), db)
		}
		sort.Slice(ss, func(i, j int) bool { return ss[i].ts < ss[j].ts })
		out[l.key] = ss
	}
	return out, stats, nil
}

// samplesIn counts the samples of a set.
func (s seriesSet) samplesIn() int {
	n := 0
	for _, ss := range s {
		n += len(ss)
	}
	return n
}

// diffSeriesSets returns "" when want and got hold the same series with the same samples,
// bit for bit, and otherwise a report of the first few differences. Timestamps are shown
// relative to the window start to make patterns (misses only at the start, or only while
// ClickHouse was down) easy to see.
func diffSeriesSets(want, got seriesSet, windowStart int64) string {
	const maxSeries, maxSamples = 8, 6
	var onlyWant, onlyGot, differ []string
	for k := range want {
		if _, ok := got[k]; !ok {
			onlyWant = append(onlyWant, k)
		} else if !equalSamples(want[k], got[k]) {
			differ = append(differ, k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			onlyGot = append(onlyGot, k)
		}
	}
	if len(onlyWant)+len(onlyGot)+len(differ) == 0 {
		return ""
	}
	sort.Strings(onlyWant)
	sort.Strings(onlyGot)
	sort.Strings(differ)

	var b strings.Builder
	rel := func(ts int64) string { return fmt.Sprintf("%+.3fs", float64(ts-windowStart)/1000) }
	span := func(ss []sample) string {
		return fmt.Sprintf("%d samples, %s..%s", len(ss), rel(ss[0].ts), rel(ss[len(ss)-1].ts))
	}
	fmt.Fprintf(&b, "Prometheus TSDB and pyramid differ: %d series only in Prometheus, %d only in pyramid, %d with different samples (of %d and %d series; %d and %d samples).\n",
		len(onlyWant), len(onlyGot), len(differ), len(want), len(got), want.samplesIn(), got.samplesIn())
	for i, k := range onlyWant {
		if i == maxSeries {
			fmt.Fprintf(&b, "  ... and %d more only in Prometheus\n", len(onlyWant)-maxSeries)
			break
		}
		fmt.Fprintf(&b, "  only in Prometheus: %s (%s)\n", k, span(want[k]))
	}
	for i, k := range onlyGot {
		if i == maxSeries {
			fmt.Fprintf(&b, "  ... and %d more only in pyramid\n", len(onlyGot)-maxSeries)
			break
		}
		fmt.Fprintf(&b, "  only in pyramid: %s (%s)\n", k, span(got[k]))
	}
	for i, k := range differ {
		if i == maxSeries {
			fmt.Fprintf(&b, "  ... and %d more series with different samples\n", len(differ)-maxSeries)
			break
		}
		fmt.Fprintf(&b, "  %s: Prometheus %s; pyramid %s\n", k, span(want[k]), span(got[k]))
		for j, d := range sampleDiffs(want[k], got[k]) {
			if j == maxSamples {
				b.WriteString("      ...\n")
				break
			}
			fmt.Fprintf(&b, "      %s\n", d.describe(rel))
		}
	}
	return b.String()
}

func equalSamples(a, b []sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sampleDiff is one timestamp at which two series disagree; a nil side has no sample there.
type sampleDiff struct {
	ts        int64
	want, got *uint64
}

func (d sampleDiff) describe(rel func(int64) string) string {
	show := func(bits *uint64) string {
		if bits == nil {
			return "missing"
		}
		return fmt.Sprintf("%v (%#016x)", math.Float64frombits(*bits), *bits)
	}
	return fmt.Sprintf("at %s (%d): Prometheus %s, pyramid %s", rel(d.ts), d.ts, show(d.want), show(d.got))
}

// sampleDiffs merges two time-ordered sample lists and returns where they disagree.
func sampleDiffs(want, got []sample) []sampleDiff {
	var out []sampleDiff
	i, j := 0, 0
	for i < len(want) || j < len(got) {
		switch {
		case j == len(got) || (i < len(want) && want[i].ts < got[j].ts):
			out = append(out, sampleDiff{ts: want[i].ts, want: &want[i].bits})
			i++
		case i == len(want) || got[j].ts < want[i].ts:
			out = append(out, sampleDiff{ts: got[j].ts, got: &got[j].bits})
			j++
		default:
			if want[i].bits != got[j].bits {
				out = append(out, sampleDiff{ts: want[i].ts, want: &want[i].bits, got: &got[j].bits})
			}
			i++
			j++
		}
	}
	return out
}

// findSeries returns the samples of every series that has all the labels in match, given as
// name, value pairs.
func (s seriesSet) findSeries(match ...string) map[string][]sample {
	out := map[string][]sample{}
	for k, ss := range s {
		ok := true
		for i := 0; i+1 < len(match); i += 2 {
			m := match[i] + "=" + strconv.Quote(match[i+1])
			if !strings.Contains(k, "{"+m) && !strings.Contains(k, ", "+m) {
				ok = false
				break
			}
		}
		if ok {
			out[k] = ss
		}
	}
	return out
}

// readMetadata returns the newest TYPE and HELP pyramid stored for a metric family.
func readMetadata(ctx context.Context, addr, db, family string) (typ, help string, err error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 10 * time.Second})
	if err != nil {
		return "", "", fmt.Errorf("open ClickHouse %s: %w", addr, err)
	}
	defer conn.Close()
	q := "SELECT argMax(type, updated_ms), argMax(help, updated_ms) FROM " + db + ".metadata WHERE metric_family_name = ?"
	if err := conn.QueryRow(ctx, q, family).Scan(&typ, &help); err != nil {
		return "", "", fmt.Errorf("query metadata of %s: %w", family, err)
	}
	return typ, help, nil
}
