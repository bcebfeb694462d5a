package rollup

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/pyramid-metrics/pyramid/schema"
)

// ReadBuckets returns the stored buckets of resolution res (a rollup tier's) whose start
// lies in [from, to], of the series with these fingerprints under these targets, by
// fingerprint and in time order. Of the several versions a bucket may have until the
// table merges them, it keeps the highest, which is the most complete computation (see
// the materializer). It also returns how many rows it read, versions included.
//
// The returned slices belong to the caller.
func ReadBuckets(ctx context.Context, conn driver.Conn, db string, res int64, targets, fingerprints []uint64, from, to int64) (map[uint64][]BucketAggregate, int, error) {
	out := make(map[uint64][]BucketAggregate, len(fingerprints))
	if len(fingerprints) == 0 || from > to {
		return out, 0, nil
	}
	// res, target and fingerprint lead the sorting key and res and bucket the partition
	// key, so ClickHouse reads only the granules of these series in this window.
	rows, err := conn.Query(ctx, "SELECT fingerprint, bucket, cnt, sum_hi, sum_lo, min_v, max_v, first_ts, first_v,"+
		" last_ts, last_v, corr_hi, corr_lo, resets, version FROM "+db+"."+schema.TableRollups+
		" WHERE res = ? AND target IN ? AND fingerprint IN ? AND bucket >= ? AND bucket <= ?",
		res, inSet(targets), inSet(fingerprints), from, to)
	if err != nil {
		return nil, 0, fmt.Errorf("query %d ms rollups of %d series: %w", res, len(fingerprints), err)
	}
	defer rows.Close()
	type versioned struct {
		BucketAggregate
		version uint32
	}
	byFP := make(map[uint64][]versioned, len(fingerprints))
	n := 0
	for rows.Next() {
		var (
			fp uint64
			v  versioned
			a  = &v.Aggregate
		)
		if err := rows.Scan(&fp, &v.Start, &a.Count, &a.Sum, &a.SumComp, &a.Min, &a.Max, &a.FirstT, &a.First,
			&a.LastT, &a.Last, &a.Correction, &a.CorrectionComp, &a.Resets, &v.version); err != nil {
			return nil, n, fmt.Errorf("scan %d ms rollup row %d: %w", res, n, err)
		}
		v.Res = res
		byFP[fp] = append(byFP[fp], v)
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, n, fmt.Errorf("read %d ms rollups of %d series after %d rows: %w", res, len(fingerprints), n, err)
	}
	for fp, vs := range byFP {
		// Highest version first within a bucket, so that the first row of each bucket is
		// the one kept.
		slices.SortFunc(vs, func(a, b versioned) int {
			if a.Start != b.Start {
				return cmp.Compare(a.Start, b.Start)
			}
			return cmp.Compare(b.version, a.version)
		})
		buckets := make([]BucketAggregate, 0, len(vs))
		for i, v := range vs {
			if i > 0 && v.Start == vs[i-1].Start {
				continue
			}
			buckets = append(buckets, v.BucketAggregate)
		}
		out[fp] = buckets
	}
	return out, n, nil
}

// inSet renders as a parenthesised list, the right-hand side of IN.
func inSet[T any](values []T) clickhouse.GroupSet {
	g := clickhouse.GroupSet{Value: make([]any, len(values))}
	for i, v := range values {
		g.Value[i] = v
	}
	return g
}
