package adapter

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/prompb"
)

// Batch is a columnar block of rows bound for ClickHouse: one entry per sample in the
// four sample columns, plus the series that the series cache has not seen cover these
// samples' hours yet.
type Batch struct {
	Targets      []uint64
	Fingerprints []uint64
	Timestamps   []int64
	Values       []float64
	Series       []SeriesRow
}

// SeriesRow is one row of schema.TableSeriesInput.
type SeriesRow struct {
	Fingerprint uint64
	Target      uint64
	MetricName  string
	// Names and Values are the sorted labels, __name__ included.
	Names, Values []string
	// FirstSeen and LastSeen bound the samples of this series in the batch (ms).
	FirstSeen, LastSeen int64
}

// Samples is the number of sample rows in b.
func (b *Batch) Samples() int { return len(b.Timestamps) }

// rows is what b costs against the in-flight cap.
func (b *Batch) rows() int { return len(b.Timestamps) + len(b.Series) }

// appendBatch appends o's rows to b.
func (b *Batch) appendBatch(o *Batch) {
	b.Targets = append(b.Targets, o.Targets...)
	b.Fingerprints = append(b.Fingerprints, o.Fingerprints...)
	b.Timestamps = append(b.Timestamps, o.Timestamps...)
	b.Values = append(b.Values, o.Values...)
	b.Series = append(b.Series, o.Series...)
}

// The label byte separator of Prometheus's labels.StableHash; fingerprints computed here
// equal labels.StableHash of the same labels (a test holds them to it), so they stay
// stable across pyramid and Prometheus versions.
const labelSep = '\xff'

// fingerprint hashes sorted labels exactly like labels.StableHash.
func fingerprint(ls []prompb.Label, buf []byte) (uint64, []byte) {
	buf = buf[:0]
	for _, l := range ls {
		buf = append(buf, l.Name...)
		buf = append(buf, labelSep)
		buf = append(buf, l.Value...)
		buf = append(buf, labelSep)
	}
	return xxhash.Sum64(buf), buf
}

// targetHash identifies the scrape target (job and instance) a series came from. Samples
// are ordered by it so that series scraped together, which share every timestamp, sit
// side by side on disk.
func targetHash(ls []prompb.Label, buf []byte) (uint64, []byte) {
	buf = buf[:0]
	for _, l := range ls {
		if l.Name == "job" || l.Name == "instance" {
			buf = append(buf, l.Name...)
			buf = append(buf, labelSep)
			buf = append(buf, l.Value...)
			buf = append(buf, labelSep)
		}
	}
	return xxhash.Sum64(buf), buf
}

// validator turns decoded write requests into Batches.
type validator struct {
	cache *seriesCache
	buf   []byte
}

// toBatch validates every series of req and appends the valid ones to b. Series that break
// the label rules are left out and described in the returned *ValidationError (nil when
// all are valid). Labels are sorted in place and empty-valued labels dropped: an empty
// value means "no such label" in Prometheus, and both spellings must be one series.
func (v *validator) toBatch(req *prompb.WriteRequest, b *Batch) *ValidationError {
	var verr *ValidationError
	var seen map[uint64]int // fingerprint -> index into b.Series, for series added here
	for i := range req.Timeseries {
		ts := &req.Timeseries[i]
		if len(ts.Histograms) > 0 {
			verr = addProblem(verr, ts, "", "native histograms are not supported yet")
			verr.Histograms++
			continue
		}
		if len(ts.Samples) == 0 {
			continue
		}
		ls, name, problem := normalizeLabels(ts.Labels)
		if problem != "" {
			verr = addProblem(verr, ts, name, problem)
			continue
		}
		ts.Labels = ls
		var fp, target uint64
		fp, v.buf = fingerprint(ls, v.buf)
		target, v.buf = targetHash(ls, v.buf)
		minTs, maxTs := ts.Samples[0].Timestamp, ts.Samples[0].Timestamp
		for _, s := range ts.Samples {
			b.Targets = append(b.Targets, target)
			b.Fingerprints = append(b.Fingerprints, fp)
			b.Timestamps = append(b.Timestamps, s.Timestamp)
			b.Values = append(b.Values, s.Value)
			minTs = min(minTs, s.Timestamp)
			maxTs = max(maxTs, s.Timestamp)
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
		b.Series = append(b.Series, newSeriesRow(ls, fp, target, minTs, maxTs))
	}
	return verr
}

func newSeriesRow(ls []prompb.Label, fp, target uint64, first, last int64) SeriesRow {
	row := SeriesRow{
		Fingerprint: fp, Target: target, FirstSeen: first, LastSeen: last,
		Names: make([]string, len(ls)), Values: make([]string, len(ls)),
	}
	for i, l := range ls {
		row.Names[i], row.Values[i] = l.Name, l.Value
		if l.Name == "__name__" {
			row.MetricName = l.Value
		}
	}
	return row
}

// normalizeLabels applies the remote-write 1.0 label rules, accepting the UTF-8 names that
// Prometheus 3 allows: it sorts the labels, drops empty values and then requires a
// __name__, non-empty and unique names, and valid UTF-8 throughout. It returns the
// labels to store, or the offending label name and what is wrong with it.
func normalizeLabels(ls []prompb.Label) (out []prompb.Label, label, problem string) {
	if !slices.IsSortedFunc(ls, compareLabels) {
		slices.SortStableFunc(ls, compareLabels)
	}
	hasName, empty := false, 0
	for i, l := range ls {
		switch {
		case l.Name == "":
			return nil, l.Name, fmt.Sprintf("label %d has an empty name", i)
		case !utf8.ValidString(l.Name):
			return nil, l.Name, "label name is not valid UTF-8"
		case !utf8.ValidString(l.Value):
			return nil, l.Name, "label value is not valid UTF-8"
		case i > 0 && ls[i-1].Name == l.Name:
			return nil, l.Name, "duplicate label name"
		case l.Value == "":
			empty++
		case l.Name == "__name__":
			hasName = true
		}
	}
	if !hasName {
		return nil, "__name__", "missing metric name (__name__)"
	}
	if empty == 0 {
		return ls, "", ""
	}
	return slices.DeleteFunc(ls, func(l prompb.Label) bool { return l.Value == "" }), "", ""
}

func compareLabels(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }

// addProblem records a rejected series, creating the error on first use.
func addProblem(verr *ValidationError, ts *prompb.TimeSeries, label, problem string) *ValidationError {
	if verr == nil {
		verr = &ValidationError{}
	}
	msg := "series " + formatLabels(ts.Labels)
	if label != "" {
		msg += " label " + strconv.Quote(label)
	}
	verr.add(msg+": "+problem, len(ts.Samples)+len(ts.Histograms))
	return verr
}

// formatLabels renders labels like Prometheus does ({a="1", b="2"}), quoting invalid UTF-8
// so the message stays readable, and cut short for very long label sets.
func formatLabels(ls []prompb.Label) string {
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
		name := strconv.QuoteToASCII(l.Name)
		sb.WriteString(name[1 : len(name)-1])
		sb.WriteByte('=')
		sb.WriteString(strconv.QuoteToASCII(l.Value))
	}
	sb.WriteByte('}')
	return sb.String()
}
