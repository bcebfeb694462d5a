package store

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/pyramid-metrics/pyramid/rollup"
	"github.com/pyramid-metrics/pyramid/schema"
)

// partStats are the active parts of one partition.
type partStats struct {
	rows, bytes uint64
}

// Status reports every tier. It reads part statistics from system.parts and scans only the
// oldest and newest partition of each tier for its exact bounds, so it stays cheap however
// much the tiers hold. A tier's figures cover its float and its histogram table together:
// raw is samples and histograms, a rollup tier rollups and histogram_rollups.
func (s *Store) Status(ctx context.Context) ([]rollup.TierStatus, error) {
	p, tiers := s.cfg.place(), s.cfg.Tiers
	samples, rollups := p.Stored(schema.TableSamples), p.Stored(schema.TableRollups)
	hists, hrollups := p.Stored(schema.TableHistograms), p.Stored(schema.TableHistogramRollups)
	rows, err := s.conn.Query(ctx, "SELECT table IN (?, ?), table IN (?, ?), partition, sum(rows), sum(bytes_on_disk) FROM "+p.Parts()+
		" WHERE active AND database = ? AND table IN (?, ?, ?, ?) GROUP BY table, partition",
		samples, hists, hists, hrollups, p.Database, samples, rollups, hists, hrollups)
	if err != nil {
		return nil, fmt.Errorf("read part statistics of %s: %w", p.Database, err)
	}
	defer rows.Close()
	// Partitions are keyed by table kind, by resolution (0 for raw) and by their block:
	// the day for raw, the 30-day block for rollups.
	type tableRes struct {
		histograms bool
		res        int64
	}
	parts := map[tableRes]map[int64]partStats{}
	for rows.Next() {
		var (
			isRaw, isHist uint8
			partition     string
			n, bytes      uint64
		)
		if err := rows.Scan(&isRaw, &isHist, &partition, &n, &bytes); err != nil {
			return nil, fmt.Errorf("scan part statistics: %w", err)
		}
		res, block, err := parsePartition(isRaw == 1, partition)
		if err != nil {
			return nil, err
		}
		k := tableRes{isHist == 1, res}
		if parts[k] == nil {
			parts[k] = map[int64]partStats{}
		}
		p := parts[k][block]
		parts[k][block] = partStats{rows: p.rows + n, bytes: p.bytes + bytes}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read part statistics: %w", err)
	}

	out := make([]rollup.TierStatus, 0, len(tiers))
	var rawNewest *int64
	for _, t := range tiers {
		st := rollup.NewTierStatus(t)
		for _, histograms := range []bool{false, true} {
			blocks := parts[tableRes{histograms, t.ResolutionMs()}]
			if len(blocks) == 0 {
				continue
			}
			lo, hi := int64(1<<62), int64(-1<<62)
			for b, p := range blocks {
				st.Rows += p.rows
				st.BytesOnDisk += p.bytes
				lo, hi = min(lo, b), max(hi, b)
			}
			oldest, newest, err := s.bounds(ctx, t, histograms, lo, hi)
			if err != nil {
				return nil, err
			}
			if st.Oldest == nil {
				st.Oldest, st.Newest = &oldest, &newest
				continue
			}
			*st.Oldest, *st.Newest = min(*st.Oldest, oldest), max(*st.Newest, newest)
		}
		switch {
		case t.IsRaw():
			rawNewest = st.Newest
		case rawNewest != nil && st.Newest == nil:
			st.LagMs = -1 // Nothing computed yet.
		case rawNewest != nil:
			st.LagMs = max(0, *rawNewest-(*st.Newest+t.ResolutionMs()-1))
		}
		out = append(out, st)
	}
	return out, nil
}

// parsePartition reads system.parts.partition: "18262" (a day) for samples (raw),
// "(300000,612)" (resolution, 30-day block) for rollups.
func parsePartition(raw bool, partition string) (res, block int64, err error) {
	if raw {
		block, err = strconv.ParseInt(partition, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse samples partition %q: %w", partition, err)
		}
		return 0, block, nil
	}
	a, b, ok := strings.Cut(strings.Trim(partition, "()"), ",")
	if !ok {
		return 0, 0, fmt.Errorf("parse rollups partition %q: want (res,block)", partition)
	}
	if res, err = strconv.ParseInt(strings.TrimSpace(a), 10, 64); err == nil {
		block, err = strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("parse rollups partition %q: %w", partition, err)
	}
	return res, block, nil
}

// bounds finds the first and last timestamp of a tier's float or histogram table with one query that reads only its
// oldest and newest partition (blocks lo and hi).
func (s *Store) bounds(ctx context.Context, t rollup.Tier, histograms bool, lo, hi int64) (oldest, newest int64, err error) {
	table, col, width, cond := schema.TableSamples, "ts", int64(schema.DayMillis), ""
	if histograms {
		table = schema.TableHistograms
	}
	var args []any
	if !t.IsRaw() {
		table, col, width, cond = schema.TableRollups, "bucket", int64(schema.RollupPartitionMillis), " AND res = ?"
		if histograms {
			table = schema.TableHistogramRollups
		}
		args = []any{t.ResolutionMs()}
	}
	q := fmt.Sprintf("SELECT minIf(%[1]s, %[1]s < ?), maxIf(%[1]s, %[1]s >= ?) FROM %[2]s.%[3]s"+
		" WHERE ((%[1]s >= ? AND %[1]s < ?) OR (%[1]s >= ? AND %[1]s < ?))%[4]s", col, s.cfg.Database, table, cond)
	args = append([]any{(lo + 1) * width, hi * width, lo * width, (lo + 1) * width, hi * width, (hi + 1) * width}, args...)
	if err := s.conn.QueryRow(ctx, q, args...).Scan(&oldest, &newest); err != nil {
		return 0, 0, fmt.Errorf("read the bounds of tier %s: %w", t.Name, err)
	}
	return oldest, newest, nil
}

// The tier status on /metrics comes from a cache, so that a scrape never waits long for a
// ClickHouse that stalls or is gone. A scrape starts a refresh when the cached figures are
// older than statusMinAge, waits at most statusScrapeWait for it, and then serves the
// figures it has, with their age. One refresh runs at a time, for at most
// statusRefreshTimeout; scrapes during it wait for that one rather than start another.
const (
	statusMinAge         = 5 * time.Second
	statusScrapeWait     = time.Second
	statusRefreshTimeout = 10 * time.Second
)

// statusCollector exports the cached Status on /metrics (see statusMinAge).
type statusCollector struct {
	st     *Store
	logger *slog.Logger
	rows   *prometheus.Desc
	bytes  *prometheus.Desc
	lag    *prometheus.Desc
	newest *prometheus.Desc
	age    *prometheus.Desc

	mu sync.Mutex
	// status was read at at; at is zero until the first read succeeds.
	status []rollup.TierStatus
	at     time.Time
	// refreshing is closed when the running refresh ends; nil while none runs.
	refreshing chan struct{}
}

// NewStatusCollector returns a collector of pyramid_tier_* metrics: rows and bytes per
// tier, the newest sample or bucket, how far each rollup tier lags behind raw, and how old
// these figures are.
func NewStatusCollector(st *Store, logger *slog.Logger) prometheus.Collector {
	l := []string{"tier"}
	return &statusCollector{st: st, logger: logger,
		rows:   prometheus.NewDesc("pyramid_tier_rows", "Rows stored per tier, unmerged versions and duplicates included.", l, nil),
		bytes:  prometheus.NewDesc("pyramid_tier_bytes_on_disk", "Bytes on disk per tier.", l, nil),
		lag:    prometheus.NewDesc("pyramid_tier_lag_seconds", "How far a rollup tier's newest bucket ends before raw's newest sample (-1: nothing computed yet).", l, nil),
		newest: prometheus.NewDesc("pyramid_tier_newest_timestamp_seconds", "Newest raw sample or rollup bucket start per tier.", l, nil),
		age: prometheus.NewDesc("pyramid_tier_status_age_seconds",
			"How long ago the pyramid_tier_* figures were read from ClickHouse; they are served from a cache, which grows old while ClickHouse does not answer.", nil, nil),
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.rows
	ch <- c.bytes
	ch <- c.lag
	ch <- c.newest
	ch <- c.age
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	if done := c.refresh(); done != nil {
		wait := time.NewTimer(statusScrapeWait)
		select {
		case <-done:
		case <-wait.C:
		}
		wait.Stop()
	}
	c.mu.Lock()
	st, at := c.status, c.at
	c.mu.Unlock()
	if at.IsZero() {
		return // Never read yet: a scrape lacks these series rather than show zeros.
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, time.Since(at).Seconds())
	for _, s := range st {
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.GaugeValue, float64(s.Rows), s.Name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.BytesOnDisk), s.Name)
		if s.Newest != nil {
			ch <- prometheus.MustNewConstMetric(c.newest, prometheus.GaugeValue, float64(*s.Newest)/1000, s.Name)
		}
		if s.ResolutionMs > 0 {
			lag := float64(s.LagMs) / 1000
			if s.LagMs < 0 {
				lag = -1
			}
			ch <- prometheus.MustNewConstMetric(c.lag, prometheus.GaugeValue, lag, s.Name)
		}
	}
}

// refresh starts reading the status unless the cached figures are recent enough, and
// returns a channel closed when the running read ends, or nil when no read is needed.
func (c *statusCollector) refresh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.refreshing != nil {
		return c.refreshing
	}
	if !c.at.IsZero() && time.Since(c.at) < statusMinAge {
		return nil
	}
	done := make(chan struct{})
	c.refreshing = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), statusRefreshTimeout)
		defer cancel()
		st, err := c.st.Status(ctx)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.refreshing = nil
		if err != nil {
			// The cached figures stay, and their age tells how stale they are.
			c.logger.Debug("tier status for /metrics", "err", err)
			return
		}
		c.status, c.at = st, time.Now()
	}()
	return done
}
