package main

import (
	"errors"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadConfigPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want func(config) bool
		rest []string
	}{
		{"defaults", nil, nil, func(c config) bool {
			return c.ListenAddr == ":9201" && c.ClickHouseAddr == "127.0.0.1:9000" && c.ClickHouseDatabase == "pyramid" &&
				c.rawRetention() == 30*24*time.Hour && c.BatchWait == 100*time.Millisecond && c.BatchRows == 100000 &&
				c.adapterConfig().RollupUnitWidth == 3_600_000 && c.ReadRollups && c.ReadLookback == 5*time.Minute &&
				len(c.adapterConfig().Tiers) == 3
		}, nil},
		{"environment", map[string]string{"PYRAMID_LISTEN_ADDR": ":1", "PYRAMID_BATCH_WAIT": "2s", "PYRAMID_TIERS": "raw:0,5m:0", "PYRAMID_READ_ROLLUPS": "false"}, nil,
			func(c config) bool {
				return c.ListenAddr == ":1" && c.BatchWait == 2*time.Second && c.rawRetention() == 0 &&
					c.adapterConfig().RollupUnitWidth == 300_000 && !c.storeConfig().Rollups
			}, nil},
		{"flags win", map[string]string{"PYRAMID_LISTEN_ADDR": ":1"}, []string{"-listen-addr", ":2", "-max-rows-in-flight", "7", "migrate"},
			func(c config) bool { return c.ListenAddr == ":2" && c.MaxRowsInFlight == 7 }, []string{"migrate"}},
		{"web config by Prometheus's flag name", map[string]string{"PYRAMID_WEB_CONFIG_FILE": "/env.yml"}, []string{"--web.config.file=/flag.yml"},
			func(c config) bool { return c.WebConfigFile == "/flag.yml" }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, rest, err := loadConfig(tc.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("config %+v", c)
			}
			if strings.Join(rest, " ") != strings.Join(tc.rest, " ") {
				t.Errorf("rest %v, want %v", rest, tc.rest)
			}
			if err := c.adapterConfig().Validate(); err != nil && tc.name != "flags win" {
				t.Errorf("defaults do not validate: %v", err)
			}
			if err := c.schemaConfig().Validate(); err != nil {
				t.Errorf("schema config does not validate: %v", err)
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	t.Setenv("PYRAMID_BATCH_ROWS", "many")
	if _, _, err := loadConfig(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "BATCH_ROWS") {
		t.Errorf("bad environment value: err = %v, want one naming BATCH_ROWS", err)
	}
	t.Setenv("PYRAMID_BATCH_ROWS", "1")
	t.Setenv("PYRAMID_TIERS", "raw:30d,7m:1y")
	if _, _, err := loadConfig(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "7m") {
		t.Errorf("bad tiers: err = %v, want one naming the bad tier", err)
	}
	t.Setenv("PYRAMID_TIERS", "raw:30d")
	t.Setenv("PYRAMID_INSERT_QUORUM", "2")
	if _, _, err := loadConfig(nil, io.Discard); err == nil || !strings.Contains(err.Error(), "INSERT_QUORUM") {
		t.Errorf("quorum without a cluster: err = %v, want one naming INSERT_QUORUM", err)
	}
}

// TestClickHouseSettings: one server gets no settings; a cluster synchronous Distributed
// inserts, and a quorum above one the quorum with the insert timeout as its own.
func TestClickHouseSettings(t *testing.T) {
	for _, tc := range []struct {
		cluster string
		quorum  int
		want    map[string]any
	}{
		{"", 0, nil},
		{"c", 0, map[string]any{"insert_distributed_sync": 1}},
		{"c", 1, map[string]any{"insert_distributed_sync": 1}},
		{"c", 2, map[string]any{"insert_distributed_sync": 1, "insert_quorum": 2, "insert_quorum_timeout": 30000}},
	} {
		c := config{ClickHouseCluster: tc.cluster, InsertQuorum: tc.quorum, InsertTimeout: 30 * time.Second}
		if got := c.clickhouseSettings(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("cluster %q quorum %d: settings %v, want %v", tc.cluster, tc.quorum, got, tc.want)
		}
	}
}

// TestHelpListsEveryVariable: --help documents each setting with its environment variable.
func TestHelpListsEveryVariable(t *testing.T) {
	var out strings.Builder
	_, _, err := loadConfig([]string{"--help"}, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	for _, want := range []string{"PYRAMID_LISTEN_ADDR", "PYRAMID_CLICKHOUSE_ADDR", "PYRAMID_CLICKHOUSE_DATABASE", "PYRAMID_CLICKHOUSE_USER",
		"PYRAMID_CLICKHOUSE_PASSWORD", "PYRAMID_BATCH_ROWS", "PYRAMID_BATCH_WAIT", "PYRAMID_MAX_REQUEST_BYTES", "PYRAMID_MAX_DECODED_BYTES",
		"PYRAMID_TIERS", "PYRAMID_ROLLUP_INTERVAL", "-clickhouse-addr", "migrate", "PYRAMID_WEB_CONFIG_FILE", "-web.config.file string"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}
