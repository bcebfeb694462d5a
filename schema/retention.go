package schema

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DropExpiredPartitions enforces RawRetention on servers without TTL: it drops every day
// partition of the samples table that ends before now minus the retention. It returns the
// day numbers (days since 1970-01-01 UTC) it dropped. Dropping a partition that another
// replica dropped a moment ago is a no-op on the server, so replicas may all run this. On a
// cluster it lists the partitions of every shard and drops them on every server.
func DropExpiredPartitions(ctx context.Context, conn driver.Conn, cfg Config, now time.Time) ([]int64, error) {
	days := cfg.retentionDays()
	if days == 0 {
		return nil, nil
	}
	// A partition holds day d, [d, d+1) days; it has expired once d+1 <= cutoff.
	cutoff := now.UnixMilli()/DayMillis - int64(days)
	p := cfg.Place()
	rows, err := conn.Query(ctx, "SELECT DISTINCT partition FROM "+p.Parts()+
		" WHERE database = ? AND table = ? AND active", p.Database, p.Stored(TableSamples))
	if err != nil {
		return nil, fmt.Errorf("list partitions of %s.%s: %w", cfg.Database, TableSamples, err)
	}
	defer rows.Close()
	var expired []int64
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("scan partition: %w", err)
		}
		day, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("partition %q of %s is not a day number: %w", p, TableSamples, err)
		}
		if day+1 <= cutoff {
			expired = append(expired, day)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list partitions of %s.%s: %w", cfg.Database, TableSamples, err)
	}
	for i, day := range expired {
		q := fmt.Sprintf("%s DROP PARTITION %d", p.AlterStored(TableSamples), day)
		if err := conn.Exec(ctx, q); err != nil {
			return expired[:i], fmt.Errorf("drop expired partition %d (%d of %d): %w", day, i+1, len(expired), err)
		}
	}
	return expired, nil
}
