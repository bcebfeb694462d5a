package main

// Native histogram series: request latencies as client_golang exposes them with native
// histograms (exponential buckets at schema 3), and as classic histograms that Prometheus
// converts to custom buckets (NHCB, schema -53) with its own convertnhcb, as its
// convert_classic_histograms_to_nhcb scrape option does.
//
// Each series draws latencies from a log-normal distribution whose median wanders slowly,
// so the populated buckets shift over time. Bucket counts only grow, except when the
// target restarts (the same hash of seed, target and scrape that resets its float
// counters), when they start again from zero. Like the float series, everything is a pure
// function of the seed.

import (
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/util/convertnhcb"
)

// The values of -histogram-kind: which kinds of histogram series a target has.
const (
	histKindExponential = "exponential"
	histKindCustom      = "custom"
	histKindBoth        = "both"
)

// expSchema is the schema client_golang picks for its usual bucket factor of 1.1:
// bucket boundaries 2^(i/8), about 9% apart.
const expSchema = 3

// zeroThreshold is client_golang's DefNativeHistogramZeroThreshold, 2^-128.
const zeroThreshold = 2.938735877055719e-39

// Classic bucket layouts that become custom buckets: client_golang's DefBuckets, and those
// of Prometheus's own prometheus_http_request_duration_seconds.
var (
	defBuckets      = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	promHTTPBuckets = []float64{.1, .2, .4, 1, 3, 8, 20, 60, 120}
)

// How a series' latency distribution behaves, in ln(seconds).
const (
	// tailSigmas bounds the buckets a scrape can fill: beyond 4.5 standard deviations
	// fall fewer than 4 in a million observations.
	tailSigmas = 4.5
	// medianDrift is how far the median may wander from where it started, either side
	// (a factor of 2), and medianStep about how far it moves per scrape.
	medianDrift = 0.7
	medianStep  = 0.01
	// historyScrapes: a series has been running for up to this many scrapes before the
	// first one generated, like the float counters.
	historyScrapes = 20000
)

// customSlowdown makes the custom-bucket series' requests slower than the exponential
// ones', so that their latencies spread over several classic buckets, as a typical
// service's do, rather than falling into the first one or two.
const customSlowdown = 10

// histogramCatalog is a target's request-latency histograms: ten HTTP handlers, each
// with a busy "200" series and a rare "503" one, as exponential histograms, as custom-bucket
// histograms, or both (exponential first, so that picking every other one keeps the mix).
func histogramCatalog(kinds string) []metricSpec {
	handlers := []struct {
		path         string
		rate, median float64 // requests per second, median latency in seconds
	}{
		{"/api/v1/write", 20, 0.008}, {"/api/v1/query", 5, 0.05}, {"/api/v1/query_range", 2, 0.2},
		{"/api/v1/read", 1, 0.3}, {"/api/v1/series", 0.5, 0.02}, {"/api/v1/labels", 0.5, 0.01},
		{"/api/v1/targets", 0.05, 0.004}, {"/metrics", 0.07, 0.003}, {"/-/ready", 0.1, 0.0005},
		{"/api/v1/status/config", 0.01, 0.001},
	}
	codes := []struct {
		code  string
		share float64
	}{{"200", 1}, {"503", 0.01}}
	var exp, custom []metricSpec
	for i, h := range handlers {
		bounds := defBuckets
		if i%2 == 1 {
			bounds = promHTTPBuckets
		}
		for _, c := range codes {
			labels := [][2]string{{"code", c.code}, {"handler", h.path}}
			exp = append(exp, metricSpec{name: "http_request_duration_seconds", kind: kindExponential,
				rate: h.rate * c.share, median: h.median, labels: labels})
			custom = append(custom, metricSpec{name: "http_server_request_duration_seconds", kind: kindCustom,
				rate: h.rate * c.share, median: customSlowdown * h.median, bounds: bounds, labels: labels})
		}
	}
	switch kinds {
	case histKindExponential:
		return exp
	case histKindCustom:
		return custom
	}
	return append(exp, custom...)
}

// expBucket is the index of the schema-3 bucket that holds x > 0: bucket i holds
// (2^((i-1)/8), 2^(i/8)].
func expBucket(x float64) int {
	return int(math.Ceil(math.Log2(x) * (1 << expSchema)))
}

// expUpper is the upper bound of schema-3 bucket i.
func expUpper(i int) float64 { return math.Exp2(float64(i) / (1 << expSchema)) }

// logNormalCDF is the probability that a latency with median e^mu and spread sigma (of its
// logarithm) is at most x.
func logNormalCDF(x, mu, sigma float64) float64 {
	if x <= 0 {
		return 0
	}
	if math.IsInf(x, 1) {
		return 1
	}
	return 0.5 * math.Erfc(-(math.Log(x)-mu)/(sigma*math.Sqrt2))
}

// histState is the evolving state of one histogram series: absolute bucket counts since
// the last reset and the sum of the observations.
type histState struct {
	mu0, mu, sigma float64 // ln of the median latency, at the start and now; spread of ln(latency)
	perScrape      float64 // mean observations per scrape
	lo             int     // exponential: the bucket index of counts[0]
	bounds         []float64
	counts         []uint64 // exponential: buckets lo, lo+1, ...; custom: each classic bucket, +Inf last
	sum            float64
}

func newHistState(s *metricSpec, r *rng, intervalMs int64) *histState {
	h := &histState{sigma: 0.25 + 0.35*r.float(), perScrape: s.rate * (0.5 + r.float()) * float64(intervalMs) / 1000}
	h.mu0 = math.Log(s.median * (0.7 + 0.6*r.float()))
	h.mu = h.mu0
	if s.kind == kindCustom {
		h.bounds = s.bounds
		h.counts = make([]uint64, len(s.bounds)+1)
	} else {
		// Every bucket the median's whole range can reach.
		reach := medianDrift + tailSigmas*h.sigma
		h.lo = expBucket(math.Exp(h.mu0 - reach))
		h.counts = make([]uint64, expBucket(math.Exp(h.mu0+reach))-h.lo+1)
	}
	h.observe(r, h.perScrape*historyScrapes*r.float())
	return h
}

// next advances the series to scrape k (k = 1, 2, ... in order): the median moves a little
// and a scrape interval's observations arrive, after a reset if the target restarted.
func (h *histState) next(r *rng, reset bool) {
	if reset {
		clear(h.counts)
		h.sum = 0
	}
	h.mu = walkStep(h.mu, medianStep, h.mu0-medianDrift, h.mu0+medianDrift, r.float(), r.float(), r.float())
	h.observe(r, h.perScrape)
}

// observe adds about n observations from the current distribution: each bucket gets an
// integer share whose mean is exactly its expected count (observations), and each
// observation adds a value from its bucket to the sum.
func (h *histState) observe(r *rng, n float64) {
	add := func(j int, p, lower, upper float64) {
		m := n * p
		var c uint64
		if m < smallCount {
			c = uint64(counterStep(m, r.float(), r.float()))
		} else {
			c = largeCount(m, r.float(), r.float(), r.float(), r.float())
		}
		if c == 0 {
			return
		}
		h.counts[j] += c
		h.sum += float64(c) * (lower + (upper-lower)*r.float())
	}
	if h.bounds != nil {
		prev, lower := 0.0, 0.0
		for j := range h.counts {
			upper := math.Inf(1)
			if j < len(h.bounds) {
				upper = h.bounds[j]
			}
			cdf := logNormalCDF(upper, h.mu, h.sigma)
			if math.IsInf(upper, 1) {
				upper = 2 * lower // a value for the sum; Prometheus cannot tell which
			}
			add(j, cdf-prev, lower, upper)
			prev, lower = cdf, upper
		}
		return
	}
	first := max(expBucket(math.Exp(h.mu-tailSigmas*h.sigma)), h.lo)
	last := min(expBucket(math.Exp(h.mu+tailSigmas*h.sigma)), h.lo+len(h.counts)-1)
	prev := logNormalCDF(expUpper(first-1), h.mu, h.sigma)
	for i := first; i <= last; i++ {
		cdf := logNormalCDF(expUpper(i), h.mu, h.sigma)
		add(i-h.lo, cdf-prev, expUpper(i-1), expUpper(i))
		prev = cdf
	}
}

// smallCount is the expected count below which a bucket's share is drawn with counterStep
// (0 or a few); from it on, largeCount's spread can no longer reach below zero.
const smallCount = 9

// largeCount draws an integer with mean m >= smallCount and a spread like a Poisson
// count's: a roughly normal deviate of standard deviation sqrt(m) (the sum of three
// uniforms, within 3 of 0), floored after adding a uniform, which keeps the mean exact.
func largeCount(m, u1, u2, u3, u4 float64) uint64 {
	z := 2 * (u1 + u2 + u3 - 1.5)
	return uint64(math.Floor(m + math.Sqrt(m)*z + u4))
}

// histogram is what the series exposes now, as a new histogram that shares nothing with
// the state.
func (h *histState) histogram() *histogram.Histogram {
	if h.bounds != nil {
		nh, err := customHistogram(h.bounds, h.counts, h.sum)
		if err != nil {
			panic(fmt.Sprintf("convert classic buckets: %v", err)) // counts are cumulative by construction
		}
		return nh
	}
	return expHistogram(h.lo, h.counts, h.sum)
}

// expHistogram is a schema-3 integer histogram of absolute bucket counts counts[i] of
// bucket lo+i, laid out as client_golang does: spans over the buckets that ever received
// an observation, a gap of up to two empty buckets filled with zeros rather than starting
// a new span (Compact(2)), bucket counts delta-encoded, the zero bucket empty.
func expHistogram(lo int, counts []uint64, sum float64) *histogram.Histogram {
	h := &histogram.Histogram{Schema: expSchema, ZeroThreshold: zeroThreshold, Sum: sum}
	first, last := -1, -1
	for i, c := range counts {
		if c > 0 {
			if first < 0 {
				first = i
			}
			last = i
			h.Count += c
		}
	}
	if first < 0 {
		return h
	}
	h.PositiveSpans = []histogram.Span{{Offset: int32(lo + first), Length: uint32(last - first + 1)}}
	h.PositiveBuckets = make([]int64, 0, last-first+1)
	var prev int64
	for _, c := range counts[first : last+1] {
		h.PositiveBuckets = append(h.PositiveBuckets, int64(c)-prev)
		prev = int64(c)
	}
	return h.Compact(2)
}

// customHistogram converts a classic histogram, absolute counts of the buckets bounded by
// bounds and +Inf, to custom buckets with Prometheus's own conversion.
func customHistogram(bounds []float64, counts []uint64, sum float64) (*histogram.Histogram, error) {
	if len(counts) != len(bounds)+1 {
		return nil, fmt.Errorf("%d bucket counts for %d bounds and +Inf", len(counts), len(bounds))
	}
	th := convertnhcb.NewTempHistogram()
	var cum uint64
	for j, c := range counts {
		cum += c
		le := math.Inf(1)
		if j < len(bounds) {
			le = bounds[j]
		}
		if err := th.SetBucketCount(le, float64(cum)); err != nil {
			return nil, err
		}
	}
	if err := th.SetCount(float64(cum)); err != nil {
		return nil, err
	}
	if err := th.SetSum(sum); err != nil {
		return nil, err
	}
	h, fh, err := th.Convert()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("integer counts converted to a float histogram %v", fh)
	}
	return h, nil
}
