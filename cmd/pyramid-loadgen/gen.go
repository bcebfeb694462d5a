package main

// Deterministic generation of node-exporter-like Prometheus traffic.
//
// Everything here is pure: the same genConfig gives the same series, timestamps, values,
// request bodies and direct-insert batches, byte for byte, whatever the concurrency. Each
// series has its own random stream seeded from (seed, target, series), and counter resets
// (target restarts) are a stateless hash of (seed, target, scrape), so series can be
// generated in any grouping (per sender shard, or all together for the direct path).

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/prompb"

	"github.com/pyramid-metrics/pyramid/adapter"
	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// genConfig fixes the generated data completely.
type genConfig struct {
	Seed            uint64
	Targets         int
	SeriesPerTarget int
	Scrapes         int     // samples per series
	IntervalMs      int64   // scrape interval
	EndMs           int64   // no timestamp is later than this
	ResetProb       float64 // per target and scrape: probability that the target restarted (counters reset)
	Job             string
	// FullPrecisionGauges drops the rounding of gauges (bytes to KiB or pages, load to
	// 0.01, temperatures to 1): every gauge is then an arbitrary double, the worst case
	// for compression.
	FullPrecisionGauges bool
	// Histograms is the number of native histogram series per target, besides the
	// SeriesPerTarget float series, of HistogramKind (histKindExponential,
	// histKindCustom or histKindBoth).
	Histograms    int
	HistogramKind string
}

func (c genConfig) validate() error {
	switch {
	case c.Targets <= 0 || c.Scrapes <= 0:
		return fmt.Errorf("targets (%d) and scrapes (%d) must be positive", c.Targets, c.Scrapes)
	case c.SeriesPerTarget < 0 || c.Histograms < 0 || c.SeriesPerTarget+c.Histograms == 0:
		return fmt.Errorf("series (%d) and histograms (%d) per target must not be negative, and not both zero", c.SeriesPerTarget, c.Histograms)
	case c.Histograms > 0 && c.HistogramKind != histKindExponential && c.HistogramKind != histKindCustom && c.HistogramKind != histKindBoth:
		return fmt.Errorf("histogram kind %q: want %s, %s or %s", c.HistogramKind, histKindExponential, histKindCustom, histKindBoth)
	case c.IntervalMs <= 0:
		return fmt.Errorf("scrape interval %dms must be positive", c.IntervalMs)
	case c.ResetProb < 0 || c.ResetProb > 1:
		return fmt.Errorf("reset probability %g must be in [0, 1]", c.ResetProb)
	case c.Job == "":
		return fmt.Errorf("job must not be empty")
	}
	return nil
}

// ---- randomness -----------------------------------------------------------------------

// splitmix64 is the whole PRNG: tiny, fast, and ours, so the stream never changes with the
// Go version (math/rand/v2 reserves the right to change its derived distributions).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// mix hashes a tuple of integers into one well-mixed value.
func mix(vals ...uint64) uint64 {
	h := uint64(0x6a09e667f3bcc909)
	for _, v := range vals {
		h = splitmix64(h ^ v)
	}
	return h
}

type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// float returns a uniform value in [0, 1).
func (r *rng) float() float64 { return float64(r.next()>>11) / (1 << 53) }

// Domain tags keep the hashes of different purposes apart.
const (
	tagOffset    = 1
	tagReset     = 2
	tagSeries    = 3
	tagHistogram = 4
)

// ---- timestamps -----------------------------------------------------------------------

// targetOffset is the target's fixed phase within the scrape interval, like the offset
// Prometheus derives from a hash of the target.
func targetOffset(seed uint64, target int, intervalMs int64) int64 {
	return int64(mix(seed, tagOffset, uint64(target)) % uint64(intervalMs))
}

// lastScrape is the latest timestamp <= endMs on the grid offsetMs + k*intervalMs.
func lastScrape(endMs, intervalMs, offsetMs int64) int64 {
	d := endMs - offsetMs
	q := d / intervalMs
	if d%intervalMs < 0 {
		q--
	}
	return q*intervalMs + offsetMs
}

// scrapeTs is the timestamp of scrape k (0-based, oldest first) of n scrapes ending at last.
func scrapeTs(last, intervalMs int64, k, n int) int64 {
	return last - int64(n-1-k)*intervalMs
}

// resetAt reports whether the target restarted just before scrape k, resetting its
// counters. Scrape 0 never resets: there is nothing before it.
func resetAt(seed uint64, target, k int, p float64) bool {
	if k == 0 || p <= 0 {
		return false
	}
	if p >= 1 {
		return true
	}
	return float64(mix(seed, tagReset, uint64(target), uint64(k))>>11)/(1<<53) < p
}

// ---- metric catalogue -------------------------------------------------------------------

type kind uint8

const (
	kindCounter kind = iota
	kindGauge
	kindConstant
	kindExponential // native histogram with exponential buckets
	kindCustom      // native histogram with custom buckets
)

func (k kind) String() string {
	return [...]string{"counter", "gauge", "constant", "exponential", "custom"}[k]
}

func (k kind) histogram() bool { return k == kindExponential || k == kindCustom }

// metricSpec describes one series of a node exporter (labels without job and instance).
// Per-series parameters are drawn around these from the series' own random stream.
type metricSpec struct {
	name   string
	kind   kind
	labels [][2]string // "{host}" in a value is replaced by the target's host name
	// counter: mean increase per scrape (integer steps).
	rate float64
	// gauge: random walk inside [lo, hi], step of about sigma per scrape, rounded to
	// multiples of 1/scale (scale 0: full float precision).
	lo, hi, sigma, scale float64
	// constant: one of these values, picked per series.
	choices []float64
	// histograms: rate is requests per second, median their median latency in seconds;
	// bounds are the classic buckets' upper bounds that become custom buckets.
	median float64
	bounds []float64
}

// nodeCatalog is the series of one node-exporter target plus Prometheus's own per-target
// series: 60 counters, 28 gauges and 12 constants.
func nodeCatalog() []metricSpec {
	var c []metricSpec
	counter := func(name string, rate float64, labels ...[2]string) {
		c = append(c, metricSpec{name: name, kind: kindCounter, rate: rate, labels: labels})
	}
	gauge := func(name string, lo, hi, sigma, scale float64, labels ...[2]string) {
		c = append(c, metricSpec{name: name, kind: kindGauge, lo: lo, hi: hi, sigma: sigma, scale: scale, labels: labels})
	}
	constant := func(name string, choices []float64, labels ...[2]string) {
		c = append(c, metricSpec{name: name, kind: kindConstant, choices: choices, labels: labels})
	}
	l := func(n, v string) [2]string { return [2]string{n, v} }

	// Counters (60).
	modes := []struct {
		mode string
		rate float64
	}{{"idle", 13}, {"iowait", 0.2}, {"irq", 0}, {"nice", 0.05}, {"softirq", 0.1}, {"steal", 0}, {"system", 0.6}, {"user", 1.2}}
	for cpu := range 4 {
		for _, m := range modes {
			counter("node_cpu_seconds_total", m.rate, l("cpu", strconv.Itoa(cpu)), l("mode", m.mode))
		}
	}
	for _, dev := range []struct {
		name        string
		bytes, pkts float64
	}{{"eth0", 1.5e6, 2000}, {"lo", 4e4, 300}} {
		counter("node_network_receive_bytes_total", dev.bytes, l("device", dev.name))
		counter("node_network_transmit_bytes_total", dev.bytes*0.6, l("device", dev.name))
		counter("node_network_receive_packets_total", dev.pkts, l("device", dev.name))
		counter("node_network_transmit_packets_total", dev.pkts*0.8, l("device", dev.name))
	}
	for _, dev := range []string{"sda", "sdb"} {
		counter("node_disk_reads_completed_total", 40, l("device", dev))
		counter("node_disk_writes_completed_total", 150, l("device", dev))
		counter("node_disk_read_bytes_total", 40*16384, l("device", dev))
		counter("node_disk_written_bytes_total", 150*8192, l("device", dev))
	}
	counter("node_context_switches_total", 30000)
	counter("node_intr_total", 20000)
	counter("node_forks_total", 40)
	for _, s := range []struct {
		name string
		rate float64
	}{{"ActiveOpens", 20}, {"PassiveOpens", 15}, {"RetransSegs", 2}, {"InSegs", 3000}, {"OutSegs", 2800}} {
		counter("node_netstat_Tcp_"+s.name, s.rate)
	}
	counter("node_vmstat_pgfault", 50000)
	counter("node_vmstat_pgmajfault", 1)
	counter("node_vmstat_pswpin", 0)
	counter("node_vmstat_pswpout", 0)

	// Gauges (28).
	for _, m := range []struct {
		name   string
		lo, hi float64
	}{{"MemAvailable", 2e9, 12e9}, {"MemFree", 5e8, 4e9}, {"Cached", 1e9, 8e9}, {"Buffers", 5e7, 5e8},
		{"Active", 1e9, 8e9}, {"Inactive", 1e9, 6e9}, {"Dirty", 0, 5e7}} {
		gauge("node_memory_"+m.name+"_bytes", m.lo, m.hi, (m.hi-m.lo)/500, 1.0/1024)
	}
	gauge("node_load1", 0, 8, 0.15, 100)
	gauge("node_load5", 0, 6, 0.05, 100)
	gauge("node_load15", 0, 4, 0.02, 100)
	for _, fs := range []struct{ dev, fstype, mount string }{{"/dev/sda1", "ext4", "/"}, {"/dev/sda2", "ext4", "/var"}, {"/dev/sdb1", "xfs", "/home"}} {
		gauge("node_filesystem_avail_bytes", 1e10, 9e10, 2e7, 1.0/4096, l("device", fs.dev), l("fstype", fs.fstype), l("mountpoint", fs.mount))
		gauge("node_filesystem_free_bytes", 1.2e10, 9.5e10, 2e7, 1.0/4096, l("device", fs.dev), l("fstype", fs.fstype), l("mountpoint", fs.mount))
	}
	for i := range 4 {
		gauge("node_hwmon_temp_celsius", 30, 90, 0.7, 1, l("chip", "platform_coretemp_0"), l("sensor", "temp"+strconv.Itoa(i+1)))
	}
	gauge("node_procs_running", 1, 12, 1, 1)
	gauge("node_procs_blocked", 0, 3, 0.4, 1)
	gauge("node_sockstat_TCP_inuse", 10, 400, 4, 1)
	gauge("node_sockstat_sockets_used", 100, 900, 6, 1)
	gauge("node_filefd_allocated", 800, 6000, 20, 1)
	gauge("node_entropy_available_bits", 3000, 4096, 30, 1)
	gauge("node_timex_offset_seconds", -0.002, 0.002, 0.0001, 0)
	gauge("scrape_duration_seconds", 0.008, 0.25, 0.004, 0)

	// Constants (12).
	gib := func(n ...float64) []float64 {
		for i := range n {
			n[i] *= 1 << 30
		}
		return n
	}
	constant("node_memory_MemTotal_bytes", gib(8, 16, 32, 64))
	constant("node_memory_SwapTotal_bytes", gib(0, 2, 4))
	for _, fs := range []struct{ dev, fstype, mount string }{{"/dev/sda1", "ext4", "/"}, {"/dev/sda2", "ext4", "/var"}, {"/dev/sdb1", "xfs", "/home"}} {
		constant("node_filesystem_size_bytes", gib(50, 100, 200), l("device", fs.dev), l("fstype", fs.fstype), l("mountpoint", fs.mount))
	}
	constant("node_exporter_build_info", []float64{1}, l("branch", "HEAD"), l("goversion", "go1.22.6"),
		l("revision", "aeb31d0e2ae6fdc1ddc3e9b5f5f0da7a0a1e2c2d"), l("version", "1.8.2"))
	constant("node_uname_info", []float64{1}, l("domainname", "(none)"), l("machine", "x86_64"), l("nodename", "{host}"),
		l("release", "6.1.0-25-amd64"), l("sysname", "Linux"), l("version", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.106-3 (2024-08-26)"))
	constant("node_boot_time_seconds", []float64{1.722e9, 1.724e9, 1.726e9})
	constant("node_filefd_maximum", []float64{9.223372036854775807e18, 1048576})
	constant("up", []float64{1})
	constant("scrape_samples_scraped", []float64{1321, 1450, 1622})
	constant("scrape_series_added", []float64{0})
	return c
}

// specsFor picks n series from the catalogue: an evenly spread subset when n is smaller
// (so the counter/gauge/constant mix survives), whole copies plus a "copy" label when larger.
func specsFor(catalog []metricSpec, n int) []metricSpec {
	out := make([]metricSpec, 0, n)
	m := len(catalog)
	if n <= m {
		for i := range n {
			out = append(out, catalog[i*m/n])
		}
		return out
	}
	for i := range n {
		s := catalog[i%m]
		if r := i / m; r > 0 {
			s.labels = append(slices.Clip(s.labels), [2]string{"copy", strconv.Itoa(r)})
		}
		out = append(out, s)
	}
	return out
}

// ---- series -----------------------------------------------------------------------------

// seriesDef is one generated series: fixed labels and the identity pyramid gives it.
type seriesDef struct {
	target, index int
	labels        []prompb.Label // sorted by name, __name__ included
	fp, targetH   uint64         // what pyramid computes (adapter/validate.go)
	spec          *metricSpec
	stream        uint64          // seed of the series' own random stream
	row           store.SeriesRow // Names/Values/MetricName filled; spans set per batch
}

// fingerprintOf is pyramid's own fingerprint (labels.StableHash) of sorted labels.
func fingerprintOf(ls []prompb.Label) uint64 {
	names, values := make([]string, len(ls)), make([]string, len(ls))
	for i, l := range ls {
		names[i], values[i] = l.Name, l.Value
	}
	return adapter.Fingerprint(names, values)
}

// targetHashOf is pyramid's hash of the job and instance labels.
func targetHashOf(ls []prompb.Label) uint64 {
	var job, instance string
	for _, l := range ls {
		switch l.Name {
		case "job":
			job = l.Value
		case "instance":
			instance = l.Value
		}
	}
	return adapter.TargetHash(job, instance)
}

func hostName(target int) string { return fmt.Sprintf("node-%04d", target) }

func instanceOf(target int) string {
	return fmt.Sprintf("10.%d.%d.%d:9100", 10+target/65536, (target/256)%256, target%256)
}

func newSeriesDef(job string, target, index int, spec *metricSpec) *seriesDef {
	ls := []prompb.Label{{Name: "__name__", Value: spec.name}, {Name: "job", Value: job}, {Name: "instance", Value: instanceOf(target)}}
	for _, l := range spec.labels {
		ls = append(ls, prompb.Label{Name: l[0], Value: strings.ReplaceAll(l[1], "{host}", hostName(target))})
	}
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	d := &seriesDef{target: target, index: index, labels: ls, spec: spec}
	d.fp = fingerprintOf(ls)
	d.targetH = targetHashOf(ls)
	d.row = store.SeriesRow{Fingerprint: d.fp, Target: d.targetH, MetricName: spec.name,
		Names: make([]string, len(ls)), Values: make([]string, len(ls))}
	for i, l := range ls {
		d.row.Names[i], d.row.Values[i] = l.Name, l.Value
	}
	return d
}

// seriesState is the evolving value of one series during one generation pass.
type seriesState struct {
	r    rng
	v    float64    // gauge: unrounded walk position; counter: current value
	mean float64    // counter: this series' mean step
	h    *histState // histograms
}

func newSeriesState(d *seriesDef, intervalMs int64) *seriesState {
	st := &seriesState{r: rng{s: d.stream}}
	s := d.spec
	switch s.kind {
	case kindExponential, kindCustom:
		st.h = newHistState(s, &st.r, intervalMs)
	case kindCounter:
		st.mean = s.rate * (0.5 + st.r.float()) // each host is a little different
		// A counter that has been running for days: 0..20000 scrapes' worth, integer.
		st.v = math.Floor(st.mean * 20000 * st.r.float())
	case kindGauge:
		st.v = s.lo + (s.hi-s.lo)*st.r.float()
	case kindConstant:
		st.v = s.choices[int(st.r.next()%uint64(len(s.choices)))]
	}
	return st
}

// counterStep draws an integer increase with mean `mean` from two uniforms in [0,1):
// E[floor(x + u2)] = x for u2 uniform, so the mean is exactly mean.
func counterStep(mean, u1, u2 float64) float64 {
	return math.Floor(2*mean*u1 + u2)
}

// counterNext is the counter after one scrape: reset means the target restarted since the
// previous scrape, so the counter counts from zero again.
func counterNext(prev, step float64, reset bool) float64 {
	if reset {
		return step
	}
	return prev + step
}

// walkStep moves a gauge by a roughly normal step (sum of three uniforms) and reflects it
// back into [lo, hi].
func walkStep(v, sigma, lo, hi, u1, u2, u3 float64) float64 {
	v += sigma * 2 * (u1 + u2 + u3 - 1.5)
	if v > hi {
		v = 2*hi - v
	}
	if v < lo {
		v = 2*lo - v
	}
	return min(max(v, lo), hi)
}

// quantize rounds v to multiples of 1/scale (scale 0 keeps full precision). Dividing by
// scale (not multiplying by 1/scale) gives the double closest to the decimal, as a parsed
// exposition value would be.
func quantize(v, scale float64) float64 {
	if scale == 0 {
		return v
	}
	return math.Round(v*scale) / scale
}

// nextHistogram returns a histogram series' histogram at scrape k (call with k = 0, 1, 2,
// ... in order).
func (st *seriesState) nextHistogram(k int, reset bool) *histogram.Histogram {
	if k > 0 {
		st.h.next(&st.r, reset)
	}
	return st.h.histogram()
}

// next returns a float series' value at scrape k (call with k = 0, 1, 2, ... in order).
func (st *seriesState) next(s *metricSpec, k int, reset bool) float64 {
	switch s.kind {
	case kindCounter:
		if k > 0 {
			st.v = counterNext(st.v, counterStep(st.mean, st.r.float(), st.r.float()), reset)
		}
		return st.v
	case kindGauge:
		if k > 0 {
			st.v = walkStep(st.v, s.sigma, s.lo, s.hi, st.r.float(), st.r.float(), st.r.float())
		}
		return quantize(st.v, s.scale)
	default:
		return st.v
	}
}

// ---- the plan: every series of every target, in time order ---------------------------

type targetInfo struct {
	index  int
	offset int64 // ms within the interval
	last   int64 // timestamp of the last scrape
	series []*seriesDef
}

type plan struct {
	cfg     genConfig
	targets []targetInfo
	order   []int // target indexes by scrape time within a round
}

func newPlan(cfg genConfig) (*plan, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	specs := specsFor(nodeCatalog(), cfg.SeriesPerTarget)
	if cfg.FullPrecisionGauges {
		for i := range specs {
			specs[i].scale = 0
		}
	}
	var hists []metricSpec
	if cfg.Histograms > 0 {
		hists = specsFor(histogramCatalog(cfg.HistogramKind), cfg.Histograms)
	}
	p := &plan{cfg: cfg, targets: make([]targetInfo, cfg.Targets)}
	for t := range cfg.Targets {
		off := targetOffset(cfg.Seed, t, cfg.IntervalMs)
		ti := targetInfo{index: t, offset: off, last: lastScrape(cfg.EndMs, cfg.IntervalMs, off)}
		for i := range specs {
			d := newSeriesDef(cfg.Job, t, i, &specs[i])
			d.stream = mix(cfg.Seed, tagSeries, uint64(t), uint64(i))
			ti.series = append(ti.series, d)
		}
		// Histogram series have streams of their own, so that their data does not
		// depend on the number of float series.
		for j := range hists {
			d := newSeriesDef(cfg.Job, t, len(specs)+j, &hists[j])
			d.stream = mix(cfg.Seed, tagHistogram, uint64(t), uint64(j))
			ti.series = append(ti.series, d)
		}
		p.targets[t] = ti
		p.order = append(p.order, t)
	}
	// All last scrapes lie in (end-interval, end], so sorting them orders every round:
	// round k of all targets lies in (end-(n-k)*interval, end-(n-1-k)*interval].
	slices.SortStableFunc(p.order, func(a, b int) int {
		return int(p.targets[a].last - p.targets[b].last)
	})
	return p, nil
}

func (p *plan) totalSeries() int     { return p.cfg.Targets * (p.cfg.SeriesPerTarget + p.cfg.Histograms) }
func (p *plan) totalSamples() int    { return p.cfg.Targets * p.cfg.SeriesPerTarget * p.cfg.Scrapes }
func (p *plan) totalHistograms() int { return p.cfg.Targets * p.cfg.Histograms * p.cfg.Scrapes }

// floatSeries and histogramSeries select series for walk and the phases.
func floatSeries(d *seriesDef) bool     { return !d.spec.kind.histogram() }
func histogramSeries(d *seriesDef) bool { return d.spec.kind.histogram() }

// shardOf assigns a series to a sender, like Prometheus shards by a hash of the labels.
func shardOf(fp uint64, shards int) int { return int(fp % uint64(shards)) }

// walk emits the samples of the series that keep() selects in time order: scrape round by
// round, targets in scrape order, a target's series in catalogue order (all of a target's
// series share the scrape timestamp). Values are independent of which series are selected.
// A float series' sample is v (h nil), a histogram series' h, a new histogram each time.
func (p *plan) walk(keep func(*seriesDef) bool, emit func(d *seriesDef, ts int64, v float64, h *histogram.Histogram)) {
	type sel struct {
		defs   []*seriesDef
		states []*seriesState
	}
	sels := make([]sel, len(p.targets))
	for t := range p.targets {
		for _, d := range p.targets[t].series {
			if keep == nil || keep(d) {
				sels[t].defs = append(sels[t].defs, d)
				sels[t].states = append(sels[t].states, newSeriesState(d, p.cfg.IntervalMs))
			}
		}
	}
	n := p.cfg.Scrapes
	for k := range n {
		for _, t := range p.order {
			s := &sels[t]
			if len(s.defs) == 0 {
				continue
			}
			ts := scrapeTs(p.targets[t].last, p.cfg.IntervalMs, k, n)
			reset := resetAt(p.cfg.Seed, t, k, p.cfg.ResetProb)
			for i, d := range s.defs {
				if d.spec.kind.histogram() {
					emit(d, ts, 0, s.states[i].nextHistogram(k, reset))
				} else {
					emit(d, ts, s.states[i].next(d.spec, k, reset), nil)
				}
			}
		}
	}
}

// ---- remote-write requests --------------------------------------------------------------

// request is one pre-encoded remote-write body.
type request struct {
	body       []byte // snappy block of a prompb.WriteRequest
	samples    int
	histograms int
}

// requestBuilder packs samples and histograms into WriteRequests of up to perRequest of
// them together, one per TimeSeries entry, as Prometheus's queue manager does.
type requestBuilder struct {
	perRequest int
	wr         prompb.WriteRequest
	samples    []prompb.Sample
	hists      []prompb.Histogram
	nHists     int
	buf, enc   []byte
	out        func(request)
}

func newRequestBuilder(perRequest int, out func(request)) *requestBuilder {
	return &requestBuilder{
		perRequest: perRequest,
		wr:         prompb.WriteRequest{Timeseries: make([]prompb.TimeSeries, 0, perRequest)},
		samples:    make([]prompb.Sample, perRequest),
		hists:      make([]prompb.Histogram, perRequest),
		out:        out,
	}
}

func (b *requestBuilder) add(d *seriesDef, ts int64, v float64, h *histogram.Histogram) {
	i := len(b.wr.Timeseries)
	if h != nil {
		b.hists[i] = prompb.FromIntHistogram(ts, h)
		b.wr.Timeseries = append(b.wr.Timeseries, prompb.TimeSeries{Labels: d.labels, Histograms: b.hists[i : i+1 : i+1]})
		b.nHists++
	} else {
		b.samples[i] = prompb.Sample{Value: v, Timestamp: ts}
		b.wr.Timeseries = append(b.wr.Timeseries, prompb.TimeSeries{Labels: d.labels, Samples: b.samples[i : i+1 : i+1]})
	}
	if len(b.wr.Timeseries) == b.perRequest {
		b.flush()
	}
}

func (b *requestBuilder) flush() {
	n := len(b.wr.Timeseries)
	if n == 0 {
		return
	}
	size := b.wr.Size()
	if cap(b.buf) < size {
		b.buf = make([]byte, size)
	}
	raw := b.buf[:size]
	if _, err := b.wr.MarshalToSizedBuffer(raw); err != nil {
		panic(fmt.Sprintf("marshal write request: %v", err)) // cannot happen for a sized buffer
	}
	// Encode into a scratch buffer and keep an exact-size copy: snappy.Encode returns a
	// slice of its MaxEncodedLen buffer, and keeping that would hold ~6x the bytes.
	b.enc = snappy.Encode(b.enc[:cap(b.enc)], raw)
	b.out(request{body: bytes.Clone(b.enc), samples: n - b.nHists, histograms: b.nHists})
	b.wr.Timeseries = b.wr.Timeseries[:0]
	clear(b.hists) // let the histograms' buckets go
	b.nHists = 0
}

// shardRequests generates every request of one sender, in order, for the series keep
// selects (nil: all).
func (p *plan) shardRequests(shard, shards, perRequest int, keep func(*seriesDef) bool, out func(request)) {
	b := newRequestBuilder(perRequest, out)
	p.walk(func(d *seriesDef) bool { return shardOf(d.fp, shards) == shard && (keep == nil || keep(d)) }, b.add)
	b.flush()
}

// ---- direct-insert batches --------------------------------------------------------------

// directBatches cuts the stream of the series keep selects (nil: all), in time order,
// into adapter.Batches of batchRows samples and histograms, each carrying the series rows
// pyramid would write with it: a series row whenever a batch reaches an hour of that
// series not yet recorded (pyramid's series cache, minus its eviction, which 5,000 series
// never reach).
func (p *plan) directBatches(batchRows int, keep func(*seriesDef) bool, out func(*adapter.Batch)) {
	type span struct{ lo, hi int64 }
	cache := make(map[uint64]span)
	var cur *adapter.Batch
	inBatch := make(map[uint64]int) // fp -> index into cur.Series, or -1 if covered
	bounds := make(map[uint64]span) // fp -> min/max ts within the batch
	defs := make(map[uint64]*seriesDef)
	newBatch := func() {
		cur = &adapter.Batch{}
		clear(bounds)
	}
	finish := func() {
		if cur == nil || cur.Samples()+len(cur.Histograms) == 0 {
			return
		}
		// Deterministic order of series rows: first appearance in the batch.
		clear(inBatch)
		visit := func(fp uint64) {
			if _, ok := inBatch[fp]; ok {
				return
			}
			inBatch[fp] = 0
			b := bounds[fp]
			c, ok := cache[fp]
			if ok && c.lo <= adapter.HourOf(b.lo) && adapter.HourOf(b.hi) <= c.hi {
				return
			}
			row := defs[fp].row
			row.FirstSeen, row.LastSeen = b.lo, b.hi
			cur.Series = append(cur.Series, row)
			if ok {
				cache[fp] = span{min(c.lo, adapter.HourOf(b.lo)), max(c.hi, adapter.HourOf(b.hi))}
			} else {
				cache[fp] = span{adapter.HourOf(b.lo), adapter.HourOf(b.hi)}
			}
		}
		for _, fp := range cur.Fingerprints {
			visit(fp)
		}
		for _, h := range cur.Histograms {
			visit(h.Fingerprint)
		}
		out(cur)
		cur = nil
	}
	p.walk(keep, func(d *seriesDef, ts int64, v float64, h *histogram.Histogram) {
		if cur == nil {
			newBatch()
		}
		defs[d.fp] = d
		if h != nil {
			if cur.Histograms == nil {
				cur.Histograms = make([]store.HistogramRow, 0, batchRows)
			}
			cur.Histograms = append(cur.Histograms, store.HistogramRow{Target: d.targetH, Fingerprint: d.fp,
				HistogramSample: store.HistogramSample{T: ts, H: h}})
		} else {
			if cur.Targets == nil {
				cur.Targets, cur.Fingerprints = make([]uint64, 0, batchRows), make([]uint64, 0, batchRows)
				cur.Timestamps, cur.Values = make([]int64, 0, batchRows), make([]float64, 0, batchRows)
			}
			cur.Targets = append(cur.Targets, d.targetH)
			cur.Fingerprints = append(cur.Fingerprints, d.fp)
			cur.Timestamps = append(cur.Timestamps, ts)
			cur.Values = append(cur.Values, v)
		}
		if b, ok := bounds[d.fp]; ok {
			bounds[d.fp] = span{min(b.lo, ts), max(b.hi, ts)}
		} else {
			bounds[d.fp] = span{ts, ts}
		}
		if cur.Samples()+len(cur.Histograms) == batchRows {
			finish()
		}
	})
	finish()
}
