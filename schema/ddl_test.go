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

// TestGoldenDDL pins the DDL of both dialects. The legacy script also runs for real on
// 18.16 in TestMigrate; the modern one cannot run here, so TestModernDDLParses parses it.
// Run `go test ./schema -run Golden -update` after an intended change and review the diff.
func TestGoldenDDL(t *testing.T) {
	for _, d := range []Dialect{Legacy, Modern} {
		t.Run(d.String(), func(t *testing.T) {
			got := strings.Join(Statements(goldenConfig(), d), ";\n\n") + ";\n"
			path := filepath.Join("testdata", d.String()+".sql")
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
				t.Errorf("DDL for %s differs from %s; run `go test ./schema -run Golden -update` and review the diff.\n--- got ---\n%s", d, path, got)
			}
		})
	}
}

// TestModernDDLParses runs every statement of both dialects through a ClickHouse SQL
// parser and checks that the features the dialect promises are in the parsed statements.
func TestModernDDLParses(t *testing.T) {
	for _, tc := range []struct {
		d         Dialect
		retention time.Duration
		want      []string // substrings of the parser's re-rendered SQL
		wantNot   []string
	}{
		{d: Modern, retention: 30 * 24 * time.Hour, want: []string{"CODEC(DoubleDelta, ZSTD(1))", "CODEC(Delta, ZSTD(1))", "CODEC(Gorilla, ZSTD(1))", "LowCardinality(String)", "TTL toDateTime(intDiv(ts, 1000)) + INTERVAL 30 DAY"}},
		{d: Modern, retention: 0, want: []string{"CODEC(", "LowCardinality("}, wantNot: []string{"TTL"}},
		{d: Legacy, retention: 30 * 24 * time.Hour, wantNot: []string{"CODEC(", "LowCardinality(", "TTL"}},
	} {
		cfg := Config{Database: "pyramid", RawRetention: tc.retention}
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
