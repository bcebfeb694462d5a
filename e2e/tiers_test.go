package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/rollup"
)

// What the rollup accuracy test and the rollup benchmark share: the tiers' status, whether
// the rollups of loaded data are complete, which tiers served reads, and promtool blocks.

// readTierStatus reads pyramid's GET /api/v1/status/tiers.
func readTierStatus(pyramidURL string) ([]rollup.TierStatus, error) {
	body, err := httpGet(pyramidURL + "/api/v1/status/tiers")
	if err != nil {
		return nil, fmt.Errorf("read tier status: %w", err)
	}
	var status struct {
		Tiers []rollup.TierStatus `json:"tiers"`
	}
	if err := json.Unmarshal(body, &status); err != nil {
		return nil, fmt.Errorf("decode tier status %s: %w", benchTruncate(body, 300), err)
	}
	if len(status.Tiers) == 0 {
		return nil, fmt.Errorf("tier status lists no tiers: %s", benchTruncate(body, 300))
	}
	return status.Tiers, nil
}

// rollupsComplete returns nil once every rollup tier of pyramid holds the bucket of the
// data's last sample (before end) and no work unit of database db waits to be computed,
// and otherwise says what is missing. The newest bucket alone does not show completeness:
// a unit computed while its hour's samples were still arriving is marked again and
// recomputed, and the materializer may reach the newest unit first. A pyramid that died
// stops the waiting (stopWaiting).
func rollupsComplete(ctx context.Context, pyr *pyramidServer, conn driver.Conn, db string, end int64) error {
	if err := pyr.checkAlive(); err != nil {
		return stopWaiting(err)
	}
	tiers, err := readTierStatus(pyr.url)
	if err != nil {
		return err
	}
	var behind, parts []string
	for _, t := range tiers {
		if t.ResolutionMs == 0 {
			continue
		}
		newest := "nothing"
		if t.Newest != nil {
			newest = time.UnixMilli(*t.Newest).UTC().Format(time.RFC3339)
		}
		parts = append(parts, fmt.Sprintf("%s up to %s", t.Name, newest))
		if t.Newest == nil || *t.Newest < rollup.BucketStart(end-1, t.ResolutionMs) {
			behind = append(behind, t.Name)
		}
	}
	switch {
	case len(parts) == 0:
		return stopWaiting(fmt.Errorf("tier status lists no rollup tier: %+v", tiers))
	case len(behind) > 0:
		return fmt.Errorf("tiers %s have not reached the data's last bucket: %s", strings.Join(behind, ", "), strings.Join(parts, ", "))
	}
	// A unit is pending while its newest mark is at or after its last computation's
	// version, as the materializer decides (rollup/materialize); a unit never computed
	// has version 0 after the join.
	q := fmt.Sprintf(`SELECT count() FROM
(SELECT width, unit, target, max(marked) AS m FROM %[1]s.rollup_dirty GROUP BY width, unit, target)
ANY LEFT JOIN
(SELECT width, unit, target, max(version) AS v FROM %[1]s.rollup_done GROUP BY width, unit, target)
USING (width, unit, target)
WHERE m >= v`, db)
	var pending uint64
	if err := conn.QueryRow(ctx, q).Scan(&pending); err != nil {
		return stopWaiting(fmt.Errorf("count pending rollup units: %w", err))
	}
	if pending > 0 {
		return fmt.Errorf("%d units wait to be computed (again): %s", pending, strings.Join(parts, ", "))
	}
	return nil
}

// segmentCounts is pyramid_read_segments_total by tier and kind ("1h/max"), summed over
// its other labels.
type segmentCounts map[string]float64

// readSegments scrapes pyramid's segment counts. A counter vector shows nothing before its
// first use, so absent means none yet.
func readSegments(pyramidURL string) (segmentCounts, error) {
	samples, err := scrapeMetric(pyramidURL+"/metrics", "pyramid_read_segments_total")
	if err != nil {
		return nil, fmt.Errorf("read pyramid's segment counts: %w", err)
	}
	s := segmentCounts{}
	for _, m := range samples {
		s[m.labels["tier"]+"/"+m.labels["kind"]] += m.value
	}
	return s, nil
}

// minus returns the segments counted since before.
func (s segmentCounts) minus(before segmentCounts) segmentCounts {
	d := segmentCounts{}
	for k, n := range s {
		if n -= before[k]; n != 0 {
			d[k] = n
		}
	}
	return d
}

// tiers returns the segments by tier.
func (s segmentCounts) tiers() map[string]float64 {
	out := map[string]float64{}
	for k, n := range s {
		tier, _, _ := strings.Cut(k, "/")
		out[tier] += n
	}
	return out
}

// describe lists the tier/kind pairs counted, sorted, or says there are none.
func (s segmentCounts) describe() string {
	if len(s) == 0 {
		return "nothing"
	}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

// createBlocks turns an OpenMetrics file into TSDB blocks in dir with Prometheus's own
// promtool, and returns what promtool printed.
func createBlocks(ctx context.Context, promtool, omPath, dir string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, promtool, "tsdb", "create-blocks-from", "openmetrics",
		fmt.Sprintf("--max-block-duration=%dh", int(benchBlockRange.Hours())), omPath, dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("create TSDB blocks with promtool: %w\n%s", err, out)
	}
	return out, nil
}
