package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ingestResult holds what phase 1 measured.
type ingestResult struct {
	Receiver      string  `json:"receiver"` // "pyramid" or "prometheus"
	Series        string  `json:"series"`   // "floats" or "histograms"
	Requests      int     `json:"requests"`
	Samples       int     `json:"samples"`
	Histograms    int     `json:"histograms"`
	BodyBytes     int64   `json:"body_bytes"`
	Senders       int     `json:"senders"`
	PregenSeconds float64 `json:"pregen_seconds"`
	WallSeconds   float64 `json:"wall_seconds"`
	SamplesPerSec float64 `json:"samples_per_sec"`
	// HistogramsPerSec counts histogram samples.
	HistogramsPerSec float64          `json:"histograms_per_sec"`
	Retries          int64            `json:"retries"`
	RetryStatuses    map[string]int64 `json:"retry_statuses,omitempty"`
	LatencyP50Ms     float64          `json:"latency_p50_ms"`
	LatencyP90Ms     float64          `json:"latency_p90_ms"`
	LatencyP99Ms     float64          `json:"latency_p99_ms"`
	LatencyMaxMs     float64          `json:"latency_max_ms"`
	// Whole request including retries and backoff.
	EndToEndMaxMs float64    `json:"end_to_end_max_ms"`
	Pyramid       *procStats `json:"pyramid,omitempty"`
	Prometheus    *procStats `json:"prometheus,omitempty"`
	// RollupsCaughtUpSeconds is how long after the ingest pyramid's materializer had
	// computed every settled unit (-wait-rollups); the *WithRollups figures run from the
	// ingest's start until then.
	RollupsCaughtUpSeconds float64    `json:"rollups_caught_up_seconds,omitempty"`
	PyramidWithRollups     *procStats `json:"pyramid_with_rollups,omitempty"`
	ClickHouseWithRollups  *procStats `json:"clickhouse_with_rollups,omitempty"`
	ClickHouse             *procStats `json:"clickhouse,omitempty"`
	LoadgenCPUSec          float64    `json:"loadgen_cpu_seconds"`
}

// procStats are /proc figures of another process over the timed phase.
type procStats struct {
	PID         int     `json:"pid"`
	VmHWMKiB    int64   `json:"vm_hwm_kib"`    // peak RSS over the process lifetime
	MaxRSSKiB   int64   `json:"max_rss_kib"`   // max of VmRSS sampled during the phase
	StartRSSKiB int64   `json:"start_rss_kib"` // VmRSS when the phase began
	EndRSSKiB   int64   `json:"end_rss_kib"`   // VmRSS when the phase ended
	CPUSeconds  float64 `json:"cpu_seconds"`   // user+system during the phase
}

// ---- /proc ------------------------------------------------------------------------------

// procStatusKiB reads a "Key:   123 kB" line of /proc/<pid>/status.
func procStatusKiB(pid int, key string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusKiB(data, key)
}

func parseStatusKiB(data []byte, key string) (int64, error) {
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != key {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			break
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("no %s in status", key)
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports without cgo tricks.
const clockTicks = 100

// procCPUSeconds is utime+stime of a process from /proc/<pid>/stat.
func procCPUSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may contain spaces: split after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(data[i+1:]))
	// Fields after ')': state(3) ... utime is field 14, stime 15 (1-based over the whole line).
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// procWatcher samples a process's VmRSS until stopped.
type procWatcher struct {
	mu       sync.Mutex // guards stats.MaxRSSKiB while watching
	stats    procStats
	cpuStart float64
	stop     chan struct{}
	done     chan struct{}
}

func watchProc(pid int, every time.Duration) (*procWatcher, error) {
	rss, err := procStatusKiB(pid, "VmRSS")
	if err != nil {
		return nil, fmt.Errorf("read /proc/%d/status: %w", pid, err)
	}
	cpu, _ := procCPUSeconds(pid)
	w := &procWatcher{stats: procStats{PID: pid, StartRSSKiB: rss, MaxRSSKiB: rss}, cpuStart: cpu,
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				if rss, err := procStatusKiB(pid, "VmRSS"); err == nil {
					w.mu.Lock()
					w.stats.MaxRSSKiB = max(w.stats.MaxRSSKiB, rss)
					w.mu.Unlock()
				}
			}
		}
	}()
	return w, nil
}

// snapshot returns the figures so far and keeps watching.
func (w *procWatcher) snapshot() *procStats {
	w.mu.Lock()
	st := w.stats
	w.mu.Unlock()
	w.read(&st)
	return &st
}

func (w *procWatcher) finish() *procStats {
	close(w.stop)
	<-w.done
	w.read(&w.stats)
	return &w.stats
}

// read completes st with the process's figures now.
func (w *procWatcher) read(st *procStats) {
	pid := st.PID
	if rss, err := procStatusKiB(pid, "VmRSS"); err == nil {
		st.EndRSSKiB = rss
		st.MaxRSSKiB = max(st.MaxRSSKiB, rss)
	}
	if hwm, err := procStatusKiB(pid, "VmHWM"); err == nil {
		st.VmHWMKiB = hwm
	}
	if cpu, err := procCPUSeconds(pid); err == nil {
		st.CPUSeconds = cpu - w.cpuStart
	}
}

// ---- HTTP -------------------------------------------------------------------------------

// fatalError is a response Prometheus would not retry (4xx other than 429).
type fatalError struct {
	status int
	msg    string
}

func (e *fatalError) Error() string {
	return fmt.Sprintf("pyramid answered %d (not retryable): %s", e.status, e.msg)
}

type sender struct {
	client     *http.Client
	url        string
	userAgent  string
	maxRetries int
	retries    atomic.Int64
	statusMu   sync.Mutex
	statuses   map[string]int64
}

// retryDelay is how long to wait before the next attempt: Retry-After when the server sent
// one (seconds or an HTTP date), else the exponential backoff.
func retryDelay(h http.Header, backoff time.Duration, now time.Time) time.Duration {
	ra := strings.TrimSpace(h.Get("Retry-After"))
	if ra == "" {
		return backoff
	}
	if s, err := strconv.Atoi(ra); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(ra); err == nil {
		return max(t.Sub(now), 0)
	}
	return backoff
}

// retryable reports whether Prometheus would retry a response with this status. 429 is
// retried here as with retry_on_http_429: true.
func retryable(status int) bool { return status >= 500 || status == http.StatusTooManyRequests }

const (
	minBackoff = 30 * time.Millisecond // Prometheus's queue_config min_backoff
	maxBackoff = 5 * time.Second       // and max_backoff
)

// post sends one request until it is accepted, retrying like Prometheus does. It returns
// the latency of each 2xx attempt, the time including retries, and a *fatalError for a
// non-retryable answer.
func (s *sender) post(ctx context.Context, body []byte) (attempt, total time.Duration, err error) {
	start := time.Now()
	backoff := minBackoff
	for try := 0; ; try++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
		if err != nil {
			return 0, 0, err
		}
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		req.Header.Set("User-Agent", s.userAgent)
		if try > 0 {
			req.Header.Set("Retry-Attempt", strconv.Itoa(try))
		}
		t0 := time.Now()
		resp, err := s.client.Do(req)
		var status int
		var hdr http.Header
		var msg []byte
		if err == nil {
			msg, _ = io.ReadAll(io.LimitReader(resp.Body, 4096))
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status, hdr = resp.StatusCode, resp.Header
		}
		lat := time.Since(t0)
		switch {
		case err == nil && status/100 == 2:
			return lat, time.Since(start), nil
		case err == nil && !retryable(status):
			return 0, 0, &fatalError{status: status, msg: strings.TrimSpace(string(msg))}
		case ctx.Err() != nil:
			return 0, 0, ctx.Err()
		}
		key := "network"
		if err == nil {
			key = strconv.Itoa(status)
		}
		s.statusMu.Lock()
		s.statuses[key]++
		s.statusMu.Unlock()
		if try >= s.maxRetries {
			if err != nil {
				return 0, 0, fmt.Errorf("giving up after %d retries: %w", try, err)
			}
			return 0, 0, fmt.Errorf("giving up after %d retries: last answer %d: %s", try, status, strings.TrimSpace(string(msg)))
		}
		s.retries.Add(1)
		delay := backoff
		if hdr != nil {
			delay = retryDelay(hdr, backoff, time.Now())
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// waitReady polls pyramid's /-/ready next to the write URL.
func waitReady(ctx context.Context, client *http.Client, writeURL string, timeout time.Duration) error {
	u, err := url.Parse(writeURL)
	if err != nil {
		return fmt.Errorf("parse -url: %w", err)
	}
	u.Path, u.RawQuery = "/-/ready", ""
	deadline := time.Now().Add(timeout)
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pyramid not ready at %s after %s: %s", u, timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// percentile of sorted durations, nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runSenders posts each shard's requests in order from its own goroutine and measures.
// next(shard) yields that shard's requests (pre-generated or from a pipeline).
func runSenders(ctx context.Context, s *sender, shards int, next func(shard int) (request, bool), res *ingestResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type shardOut struct {
		lat      []time.Duration
		e2eMax   time.Duration
		requests int
		samples  int
		hists    int
		bytes    int64
		err      error
	}
	outs := make([]shardOut, shards)
	var wg sync.WaitGroup
	start := time.Now()
	for sh := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[sh]
			for {
				r, ok := next(sh)
				if !ok {
					return
				}
				lat, total, err := s.post(ctx, r.body)
				if err != nil {
					o.err = fmt.Errorf("sender %d, request %d: %w", sh, o.requests+1, err)
					cancel()
					return
				}
				o.lat = append(o.lat, lat)
				o.e2eMax = max(o.e2eMax, total)
				o.requests++
				o.samples += r.samples
				o.hists += r.histograms
				o.bytes += int64(len(r.body))
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)

	var lat []time.Duration
	var errs []error
	for _, o := range outs {
		lat = append(lat, o.lat...)
		res.Requests += o.requests
		res.Samples += o.samples
		res.Histograms += o.hists
		res.BodyBytes += o.bytes
		res.EndToEndMaxMs = max(res.EndToEndMaxMs, ms(o.e2eMax))
		if o.err != nil && !errors.Is(o.err, context.Canceled) {
			errs = append(errs, o.err)
		}
	}
	slices.Sort(lat)
	res.Senders = shards
	res.WallSeconds = wall.Seconds()
	if wall > 0 {
		res.SamplesPerSec = float64(res.Samples) / wall.Seconds()
		res.HistogramsPerSec = float64(res.Histograms) / wall.Seconds()
	}
	res.Retries = s.retries.Load()
	res.RetryStatuses = s.statuses
	res.LatencyP50Ms = ms(percentile(lat, 0.50))
	res.LatencyP90Ms = ms(percentile(lat, 0.90))
	res.LatencyP99Ms = ms(percentile(lat, 0.99))
	if len(lat) > 0 {
		res.LatencyMaxMs = ms(lat[len(lat)-1])
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return ctx.Err()
}
