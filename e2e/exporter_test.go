package e2e

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The float values the exporter serves to test bit-exact storage. Prometheus parses the text
// format with strconv.ParseFloat, so "NaN" arrives as math.NaN()'s bits, which differ from a
// stale marker's (0x7ff0000000000002) only in the payload.
var specialValues = []struct {
	kind  string
	value float64
}{
	{"nan", math.NaN()},
	{"pos_inf", math.Inf(1)},
	{"neg_inf", math.Inf(-1)},
	// The extremes catch any conversion that goes through text, decimal or a narrower type
	// on the way. Negative zero would too, but remote write cannot carry it: proto3 omits a
	// double field equal to 0, and -0 == 0, so Prometheus sends (and remote read returns)
	// +0 for it.
	{"smallest_subnormal", math.SmallestNonzeroFloat64},
	{"max_float", math.MaxFloat64},
}

// oddLabelValues are label values that need escaping in the text format, in SQL or in
// JSON, and that a byte-for-byte store must return unchanged.
var oddLabelValues = map[string]string{
	"quote":     `say "hi"`,
	"backslash": `C:\temp\`,
	"utf8":      "zürich",
	"cjk":       "東京",
	"emoji":     "🙂 ok",
	"newline":   "line1\nline2",
	"punct":     `a=b,c{d}e'f`,
	"sql":       `'); DROP TABLE samples; --`,
}

// exporter is an in-process scrape target whose series set changes on command. Prometheus
// writes a stale marker for a series that disappears from a target, which is how the test
// gets StaleNaN samples into remote write.
type exporter struct {
	srv *httptest.Server

	mu       sync.Mutex
	scrapes  int
	flapping bool // e2e_flapping is served
	late     bool // e2e_late is served
	// extra, when set, writes more series after the standard ones, given the scrape's
	// number. The write test leaves it nil, so its target serves what it always did.
	extra func(b *strings.Builder, n int)
}

// startExporter serves the metrics until t ends. The flapping series is present from the
// start; the late one is not.
func startExporter(t *testing.T) *exporter {
	e := &exporter{flapping: true}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

// hostPort is the exporter's address as a scrape target.
func (e *exporter) hostPort() string { return strings.TrimPrefix(e.srv.URL, "http://") }

func (e *exporter) setFlapping(on bool) { e.mu.Lock(); e.flapping = on; e.mu.Unlock() }
func (e *exporter) setLate(on bool)     { e.mu.Lock(); e.late = on; e.mu.Unlock() }

// setExtra installs a writer of more series (see exporter.extra). It takes the lock so
// that the handler, which runs on the server's goroutines, sees the writer safely.
func (e *exporter) setExtra(f func(b *strings.Builder, n int)) {
	e.mu.Lock()
	e.extra = f
	e.mu.Unlock()
}

func (e *exporter) serve(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	e.scrapes++
	n, flapping, late, extra := e.scrapes, e.flapping, e.late, e.extra
	e.mu.Unlock()

	var b strings.Builder
	b.WriteString("# HELP e2e_scrapes_total Scrapes served by the e2e exporter.\n# TYPE e2e_scrapes_total counter\n")
	fmt.Fprintf(&b, "e2e_scrapes_total %d\n", n)

	// Random values use all 52 mantissa bits, so any rounding on the way shows.
	b.WriteString("# TYPE e2e_random gauge\n")
	for _, shard := range []string{"a", "b", "c"} {
		fmt.Fprintf(&b, "e2e_random{shard=%q} %s\n", shard, formatFloat(rand.Float64()*1e6))
	}
	fmt.Fprintf(&b, "e2e_random{shard=\"tiny\"} %s\n", formatFloat(rand.NormFloat64()*1e-300))
	fmt.Fprintf(&b, "e2e_random{shard=\"huge\"} %s\n", formatFloat(rand.NormFloat64()*1e300))

	b.WriteString("# TYPE e2e_special gauge\n")
	for _, s := range specialValues {
		fmt.Fprintf(&b, "e2e_special{kind=%q} %s\n", s.kind, formatFloat(s.value))
	}

	b.WriteString("# TYPE e2e_odd_labels gauge\n")
	for name, v := range oddLabelValues {
		fmt.Fprintf(&b, "e2e_odd_labels{case=\"%s\",v=\"%s\"} %d\n", name, escapeLabelValue(v), n)
	}
	// "A_first" sorts before "__name__" (uppercase before underscore in byte order), which
	// catches a store that assumes the metric name is always the first label.
	fmt.Fprintf(&b, "e2e_odd_labels{case=\"sorting\",A_first=\"a\",zz_last=\"z\"} %d\n", n)
	// Prometheus drops labels with empty values at scrape time, so this series arrives
	// without "blank".
	fmt.Fprintf(&b, "e2e_odd_labels{case=\"empty\",blank=\"\"} %d\n", n)

	if flapping {
		b.WriteString("# TYPE e2e_flapping gauge\n")
		fmt.Fprintf(&b, "e2e_flapping{state=\"early\"} %d\n", n)
	}
	if late {
		b.WriteString("# TYPE e2e_late gauge\n")
		fmt.Fprintf(&b, "e2e_late{state=\"late\"} %d\n", n)
	}
	if extra != nil {
		extra(&b, n)
	}

	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}

// formatFloat writes v so that strconv.ParseFloat returns the same bits, in the spelling
// of the text format for the special values.
func formatFloat(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// escapeLabelValue escapes a label value for the text format: backslash, double quote and
// line feed.
func escapeLabelValue(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}
