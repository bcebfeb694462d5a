package schema

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	chparser "github.com/AfterShip/clickhouse-sql-parser/parser"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenConfig is the configuration the golden files are rendered for: the defaults.
func goldenConfig() Config {
	return Config{Database: "pyramid", RawRetention: 30 * 24 * time.Hour}
}

// TestGoldenDDL pins the DDL of both dialects, on one server and on a cluster. The legacy
// scripts also run for real on 18.16 (TestMigrate, and the cluster e2e tests), the modern
// one on 26.5 (TestConformance*); TestModernDDLParses parses them all.
// Run `go test ./schema -run Golden -update` after an intended change and review the diff.
func TestGoldenDDL(t *testing.T) {
	for _, tc := range []struct {
		d       Dialect
		cluster string
	}{{Legacy, ""}, {Modern, ""}, {Legacy, "pyramid"}, {Modern, "pyramid"}} {
		name := tc.d.String()
		if tc.cluster != "" {
			name += "-cluster"
		}
		t.Run(name, func(t *testing.T) {
			cfg := goldenConfig()
			cfg.Cluster = tc.cluster
			got := strings.Join(Statements(cfg, tc.d), ";\n\n") + ";\n"
			path := filepath.Join("testdata", name+".sql")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("DDL for %s differs from %s; run `go test ./schema -run Golden -update` and review the diff.\n--- got ---\n%s", name, path, got)
			}
		})
	}
}

// TestModernDDLParses runs every statement of both dialects through a ClickHouse SQL
// parser and checks that the features the dialect promises are in the parsed statements.
func TestModernDDLParses(t *testing.T) {
	for _, tc := range []struct {
		d         Dialect
		cluster   string
		retention time.Duration
		want      []string // substrings of the parser's re-rendered SQL
		wantNot   []string
	}{
		{d: Modern, retention: 30 * 24 * time.Hour, want: []string{"CODEC(DoubleDelta, ZSTD(1))", "CODEC(Delta, ZSTD(1))", "CODEC(Gorilla, ZSTD(1))", "LowCardinality(String)", "TTL toDateTime(intDiv(ts, 1000)) + INTERVAL 30 DAY"}},
		{d: Modern, retention: 0, want: []string{"CODEC(", "LowCardinality("}, wantNot: []string{"TTL"}},
		{d: Legacy, retention: 30 * 24 * time.Hour, wantNot: []string{"CODEC(", "LowCardinality(", "TTL"}},
		{d: Modern, cluster: "c1", retention: 30 * 24 * time.Hour, want: []string{"ON CLUSTER c1", "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/samples', '{replica}')", "Distributed(c1, pyramid, samples_local, target)", "TTL"}},
		{d: Legacy, cluster: "c1", retention: 30 * 24 * time.Hour, want: []string{"ReplicatedAggregatingMergeTree(", "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pyramid/rollups', '{replica}', version)"}, wantNot: []string{"CODEC(", "TTL"}},
	} {
		cfg := Config{Database: "pyramid", RawRetention: tc.retention, Cluster: tc.cluster}
		var rendered []string
		for i, stmt := range Statements(cfg, tc.d) {
			exprs, err := chparser.NewParser(stmt).ParseStmts()
			if err != nil {
				t.Fatalf("%s retention %s: statement %d does not parse: %v\n%s", tc.d, tc.retention, i+1, err, stmt)
			}
			if len(exprs) != 1 {
				t.Fatalf("%s: statement %d parsed into %d statements, want 1:\n%s", tc.d, i+1, len(exprs), stmt)
			}
			rendered = append(rendered, exprs[0].String())
		}
		all := strings.Join(rendered, "\n")
		for _, w := range tc.want {
			if !strings.Contains(all, w) {
				t.Errorf("%s retention %s: parsed DDL lacks %q", tc.d, tc.retention, w)
			}
		}
		for _, w := range tc.wantNot {
			if strings.Contains(all, w) {
				t.Errorf("%s retention %s: parsed DDL has %q", tc.d, tc.retention, w)
			}
		}
	}
}
