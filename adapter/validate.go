package adapter

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// Batch is a columnar block of rows bound for ClickHouse: one entry per sample in the
// four sample columns, plus the series that the series cache has not seen cover these
// samples' hours yet.
type Batch struct {
	Targets      []uint64
	Fingerprints []uint64
	Timestamps   []int64
	Values       []float64
	Histograms   []store.HistogramRow
	Series       []store.SeriesRow
}

// Marked returns the targets and timestamps of b's samples and histograms, which mark
// rollup units (rollup.Marker.Unmarked). b's own columns are never appended to.
func (b *Batch) Marked() (targets []uint64, timestamps []int64) {
	if len(b.Histograms) == 0 {
		return b.Targets, b.Timestamps
	}
	targets, timestamps = slices.Clip(b.Targets), slices.Clip(b.Timestamps)
	for _, h := range b.Histograms {
		targets, timestamps = append(targets, h.Target), append(timestamps, h.T)
	}
	return targets, timestamps
}

// Samples is the number of float sample rows in b.
func (b *Batch) Samples() int { return len(b.Timestamps) }

// rows is what b costs against the in-flight cap.
func (b *Batch) rows() int { return len(b.Timestamps) + len(b.Histograms) + len(b.Series) }

// growSamples makes room for n more sample rows in b's columns.
func (b *Batch) growSamples(n int) {
	b.Targets, b.Fingerprints = slices.Grow(b.Targets, n), slices.Grow(b.Fingerprints, n)
	b.Timestamps, b.Values = slices.Grow(b.Timestamps, n), slices.Grow(b.Values, n)
}

// appendBatch appends o's rows to b.
func (b *Batch) appendBatch(o *Batch) {
	b.Targets = append(b.Targets, o.Targets...)
	b.Fingerprints = append(b.Fingerprints, o.Fingerprints...)
	b.Timestamps = append(b.Timestamps, o.Timestamps...)
	b.Values = append(b.Values, o.Values...)
	b.Histograms = append(b.Histograms, o.Histograms...)
	b.Series = append(b.Series, o.Series...)
}

// The label byte separator of Prometheus's labels.StableHash; fingerprints computed here
// equal labels.StableHash of the same labels (a test holds them to it), so they stay
// stable across pyramid and Prometheus versions.
const labelSep = '\xff'

// appendLabel appends one label in the byte form labels.StableHash hashes:
// name 0xff value 0xff. Every hash of labels in pyramid is built from it.
func appendLabel[T string | []byte](buf []byte, name, value T) []byte {
	buf = append(buf, name...)
	buf = append(buf, labelSep)
	buf = append(buf, value...)
	return append(buf, labelSep)
}

// Fingerprint hashes sorted labels exactly like labels.StableHash. names and values are
// parallel; the load generator uses it to build the rows pyramid would write.
func Fingerprint(names, values []string) uint64 {
	var buf []byte
	for i := range names {
		buf = appendLabel(buf, names[i], values[i])
	}
	return xxhash.Sum64(buf)
}

// The labels that identify a scrape target, in sorted order.
const (
	labelInstance = "instance"
	labelJob      = "job"
)

// TargetHash identifies the scrape target (the job and instance labels) a series came
// from. Samples are ordered by it so that series scraped together, which share every
// timestamp, sit side by side on disk. An empty value means the label is absent.
func TargetHash(job, instance string) uint64 {
	return xxhash.Sum64(appendTarget(nil, []byte(instance), []byte(job)))
}

func appendTarget(buf, instance, job []byte) []byte {
	if len(instance) > 0 {
		buf = appendLabel(buf, []byte(labelInstance), instance)
	}
	if len(job) > 0 {
		buf = appendLabel(buf, []byte(labelJob), job)
	}
	return buf
}

// hashes computes a series' fingerprint and target hash in one pass over its sorted labels;
// buf is scratch space, returned for reuse.
func hashes(body []byte, ls []wireLabel, buf []byte) (fp, target uint64, _ []byte) {
	buf = buf[:0]
	var instance, job []byte
	for _, l := range ls {
		name, value := l.name(body), l.value(body)
		buf = appendLabel(buf, name, value)
		switch string(name) {
		case labelInstance:
			instance = value
		case labelJob:
			job = value
		}
	}
	fp = xxhash.Sum64(buf)
	buf = appendTarget(buf[:0], instance, job)
	return fp, xxhash.Sum64(buf), buf
}

// validator turns decoded write requests into Batches.
type validator struct {
	cache *seriesCache
	// labels, when not nil, learns the label bytes of the entries validated here: learned
	// holds their keys and learnedAs what they hash to, until the end of toBatch.
	labels    *labelCache
	learned   []labelKey
	learnedAs []labelEntry
	// accept is the window of sample timestamps that can be kept (see Server.acceptWindow).
	accept timeWindow
	// maxBuckets is Config.MaxHistogramBuckets.
	maxBuckets int
	buf        []byte
}

// timeWindow is a closed range of sample timestamps, in ms.
type timeWindow struct {
	from, to int64
}

// anyTime accepts every timestamp.
func anyTime() timeWindow { return timeWindow{math.MinInt64, math.MaxInt64} }

// What a sample the window refuses is, for the 400 that names it.
const (
	problemTooOld = "older than raw retention"
	problemTooNew = "too far in the future"
)

// toBatch validates every series of req and appends the valid ones to b. Series that break
// the label rules are left out and described in the returned *ValidationError (nil when
// all are valid). Labels are sorted in place and empty-valued labels dropped: an empty
// value means "no such label" in Prometheus, and both spellings must be one series.
func (v *validator) toBatch(req *wireRequest, b *Batch) *ValidationError {
	var verr *ValidationError
	var seen map[uint64]int // fingerprint -> index into b.Series, for series added here
	b.growSamples(len(req.samples))
	// Only a request with histograms needs its series known before any is batched: a
	// float and a histogram of one series at one timestamp may come in two entries.
	var pre []prepared
	var mixed map[uint64]int64
	if len(req.hists) > 0 {
		pre, mixed = v.prepareAll(req)
	}
	for i := range req.series {
		s := &req.series[i]
		samples, hists := req.seriesSamples(s), req.seriesHistograms(s)
		if len(samples) == 0 && len(hists) == 0 {
			continue
		}
		var p prepared
		if pre != nil {
			p = pre[i]
		} else {
			p = v.prepare(req, s)
		}
		fp, target := p.fp, p.target
		if p.problem != "" {
			verr = addProblem(verr, req.buf, req.seriesLabels(s), p.name, p.problem, len(samples)+len(hists))
			continue
		}
		if t, ok := mixed[fp]; ok {
			verr = addProblem(verr, req.buf, v.labelsOf(req, s, &p), nil, fmt.Sprintf("a float sample and a native histogram at one timestamp (%s)", formatMs(t)), len(samples)+len(hists))
			verr.Histograms++
			continue
		}
		if problem := checkHistograms(hists, v.maxBuckets); problem != "" {
			verr = addProblem(verr, req.buf, v.labelsOf(req, s, &p), nil, problem, len(samples)+len(hists))
			verr.Histograms++
			continue
		}
		minTs, maxTs := int64(math.MaxInt64), int64(math.MinInt64)
		var old, future int
		for _, smp := range samples {
			switch {
			case smp.Timestamp < v.accept.from:
				old++
				continue
			case smp.Timestamp > v.accept.to:
				future++
				continue
			}
			b.Targets = append(b.Targets, target)
			b.Fingerprints = append(b.Fingerprints, fp)
			b.Timestamps = append(b.Timestamps, smp.Timestamp)
			b.Values = append(b.Values, smp.Value)
			minTs = min(minTs, smp.Timestamp)
			maxTs = max(maxTs, smp.Timestamp)
		}
		for _, h := range hists {
			switch {
			case h.T < v.accept.from:
				old++
				continue
			case h.T > v.accept.to:
				future++
				continue
			}
			b.Histograms = append(b.Histograms, store.HistogramRow{Target: target, Fingerprint: fp, HistogramSample: h})
			minTs = min(minTs, h.T)
			maxTs = max(maxTs, h.T)
		}
		if old+future > 0 {
			verr = v.addOutOfWindow(verr, req.buf, v.labelsOf(req, s, &p), old, future)
			if old+future == len(samples)+len(hists) {
				continue
			}
		}
		if v.cache.covers(fp, minTs, maxTs) {
			continue
		}
		if j, ok := seen[fp]; ok {
			b.Series[j].FirstSeen = min(b.Series[j].FirstSeen, minTs)
			b.Series[j].LastSeen = max(b.Series[j].LastSeen, maxTs)
			continue
		}
		if seen == nil {
			seen = make(map[uint64]int)
		}
		seen[fp] = len(b.Series)
		b.Series = append(b.Series, newSeriesRow(req.buf, v.labelsOf(req, s, &p), fp, target, minTs, maxTs))
	}
	if v.labels != nil {
		v.labels.add(v.learned, v.learnedAs)
		v.learned, v.learnedAs = v.learned[:0], v.learnedAs[:0]
	}
	return verr
}

// labelsOf returns the normalized labels of an entry prepared without problem, parsing them
// first when the label cache answered for it.
func (v *validator) labelsOf(req *wireRequest, s *wireSeries, p *prepared) []wireLabel {
	if !s.known || p.ls != nil {
		return p.ls
	}
	// The entry's bytes passed validation before, so they parse, and into the room the
	// parse reserved; normalizing them only sorts them and drops empty values.
	_ = req.parseKnownLabels(s)
	p.ls, _, _ = normalizeLabels(req.buf, req.seriesLabels(s))
	return p.ls
}

// prepared is one series entry of a request, its labels normalized and hashed, or what is
// wrong with them.
type prepared struct {
	ls         []wireLabel
	name       []byte
	problem    string
	fp, target uint64
}

// prepare normalizes and hashes the labels of one series entry, or takes what the label
// cache knew of them. It reorders the entry's labels in place, so it runs once per entry.
func (v *validator) prepare(req *wireRequest, s *wireSeries) prepared {
	if s.known {
		return prepared{fp: s.fp, target: s.target}
	}
	ls, name, problem := normalizeLabels(req.buf, req.seriesLabels(s))
	if problem != "" {
		return prepared{name: name, problem: problem}
	}
	p := prepared{ls: ls}
	p.fp, p.target, v.buf = hashes(req.buf, ls, v.buf)
	if v.labels != nil && s.rawEnd != 0 {
		v.learned = append(v.learned, v.labels.key(req.buf[s.rawStart:s.rawEnd]))
		v.learnedAs = append(v.learnedAs, labelEntry{fp: p.fp, target: p.target})
	}
	return p
}

// prepareAll prepares every entry of req that carries data, and finds the series that
// hold a float sample and a histogram at one timestamp, in one entry or in two with the
// same labels: Prometheus's TSDB refuses the second of the two, and a store must not keep
// two answers for one instant. It returns one such timestamp per series.
func (v *validator) prepareAll(req *wireRequest) ([]prepared, map[uint64]int64) {
	pre := make([]prepared, len(req.series))
	histAt := map[uint64]map[int64]bool{}
	for i := range req.series {
		s := &req.series[i]
		if s.sampleStart == s.sampleEnd && s.histStart == s.histEnd {
			continue
		}
		pre[i] = v.prepare(req, s)
		if pre[i].problem != "" || s.histStart == s.histEnd {
			continue
		}
		at := histAt[pre[i].fp]
		if at == nil {
			at = map[int64]bool{}
			histAt[pre[i].fp] = at
		}
		for _, h := range req.seriesHistograms(s) {
			at[h.T] = true
		}
	}
	var mixed map[uint64]int64
	for i := range req.series {
		at := histAt[pre[i].fp]
		if at == nil || pre[i].problem != "" {
			continue
		}
		for _, smp := range req.seriesSamples(&req.series[i]) {
			if at[smp.Timestamp] {
				if mixed == nil {
					mixed = map[uint64]int64{}
				}
				mixed[pre[i].fp] = smp.Timestamp
				break
			}
		}
	}
	return pre, mixed
}

// addOutOfWindow records the samples of one series whose timestamps lie outside v.accept.
// The series' other samples are stored.
func (v *validator) addOutOfWindow(verr *ValidationError, body []byte, ls []wireLabel, old, future int) *ValidationError {
	if verr == nil {
		verr = &ValidationError{}
	}
	var parts []string
	if old > 0 {
		parts = append(parts, fmt.Sprintf("%d samples %s (before %s)", old, problemTooOld, formatMs(v.accept.from)))
	}
	if future > 0 {
		parts = append(parts, fmt.Sprintf("%d samples %s (after %s)", future, problemTooNew, formatMs(v.accept.to)))
	}
	verr.add("series "+formatLabels(body, ls)+": "+strings.Join(parts, ", "), old+future)
	verr.TooOld += old
	verr.TooNew += future
	verr.WindowSeries++
	return verr
}

// formatMs renders a timestamp in ms as RFC 3339 in UTC, as Prometheus prints times.
func formatMs(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

// newSeriesRow copies the labels out of the request body, which the row outlives.
func newSeriesRow(body []byte, ls []wireLabel, fp, target uint64, first, last int64) store.SeriesRow {
	row := store.SeriesRow{
		Fingerprint: fp, Target: target, FirstSeen: first, LastSeen: last,
		Names: make([]string, len(ls)), Values: make([]string, len(ls)),
	}
	for i, l := range ls {
		row.Names[i], row.Values[i] = string(l.name(body)), string(l.value(body))
		if row.Names[i] == labels.MetricName {
			row.MetricName = row.Values[i]
		}
	}
	return row
}

// normalizeLabels applies the remote-write 1.0 label rules, accepting the UTF-8 names that
// Prometheus 3 allows: it sorts the labels, drops empty values and then requires a
// __name__, non-empty and unique names, and valid UTF-8 throughout. It returns the
// labels to store, or the offending label name and what is wrong with it. It reorders ls.
func normalizeLabels(body []byte, ls []wireLabel) (out []wireLabel, label []byte, problem string) {
	compare := func(a, b wireLabel) int { return bytes.Compare(a.name(body), b.name(body)) }
	if !slices.IsSortedFunc(ls, compare) {
		slices.SortStableFunc(ls, compare)
	}
	hasName, empty := false, 0
	var prev []byte
	for i, l := range ls {
		name, value := l.name(body), l.value(body)
		switch {
		case len(name) == 0:
			return nil, name, fmt.Sprintf("label %d has an empty name", i)
		case !utf8.Valid(name):
			return nil, name, "label name is not valid UTF-8"
		case !utf8.Valid(value):
			return nil, name, "label value is not valid UTF-8"
		case i > 0 && bytes.Equal(prev, name):
			return nil, name, "duplicate label name"
		case len(value) == 0:
			empty++
		case string(name) == labels.MetricName:
			hasName = true
		}
		prev = name
	}
	if !hasName {
		return nil, []byte(labels.MetricName), "missing metric name (__name__)"
	}
	if empty == 0 {
		return ls, nil, ""
	}
	return slices.DeleteFunc(ls, func(l wireLabel) bool { return l.valueEnd == l.valueStart }), nil, ""
}

// addProblem records a rejected series, creating the error on first use.
func addProblem(verr *ValidationError, body []byte, ls []wireLabel, label []byte, problem string, samples int) *ValidationError {
	if verr == nil {
		verr = &ValidationError{}
	}
	msg := "series " + formatLabels(body, ls)
	if label != nil {
		msg += " label " + strconv.Quote(string(label))
	}
	verr.add(msg+": "+problem, samples)
	return verr
}

// formatLabels renders labels like Prometheus does ({a="1", b="2"}), quoting invalid UTF-8
// so the message stays readable, and cut short for very long label sets.
func formatLabels(body []byte, ls []wireLabel) string {
	var sb strings.Builder
	sb.WriteByte('{')
	for i, l := range ls {
		if i > 0 {
			sb.WriteString(", ")
		}
		if sb.Len() > 400 {
			sb.WriteString("...")
			break
		}
		name := strconv.QuoteToASCII(string(l.name(body)))
		sb.WriteString(name[1 : len(name)-1])
		sb.WriteByte('=')
		sb.WriteString(strconv.QuoteToASCII(string(l.value(body))))
	}
	sb.WriteByte('}')
	return sb.String()
}
