package main

import (
	"io"
	"math"
	"testing"
	"time"

	"github.com/pyramid-metrics/pyramid/rollup"
)

func TestBackfillConfig(t *testing.T) {
	tiers, err := rollup.ParseTiers("raw:30d,1h:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config{tiers: tiers}
	for _, tc := range []struct {
		name     string
		args     []string
		wantErr  bool
		min, max int64
		matchers int
		remote   bool
		metadata string
	}{
		{name: "path only", args: []string{"/data"}, min: math.MinInt64, max: math.MaxInt64},
		{name: "Unix seconds and RFC 3339", args: []string{"--min-time", "1.5", "--max-time", "2026-01-02T03:04:05Z", "/data"},
			min: 1500, max: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixMilli()},
		{name: "remote read", args: []string{"--from-remote-read", "http://p/api/v1/read", "--min-time", "10"}, min: 10_000, max: math.MaxInt64, remote: true},
		{name: "a selector", args: []string{"--match", `{job="node", instance=~"a.*"}`, "/data"}, min: math.MinInt64, max: math.MaxInt64, matchers: 2},
		{name: "no path", args: nil, wantErr: true},
		{name: "two paths", args: []string{"/a", "/b"}, wantErr: true},
		{name: "a time that is neither", args: []string{"--min-time", "yesterday", "/data"}, wantErr: true},
		{name: "min after max", args: []string{"--min-time", "20", "--max-time", "10", "/data"}, wantErr: true},
		{name: "a selector that does not parse", args: []string{"--match", `{job=}`, "/data"}, wantErr: true},
		{name: "no batch", args: []string{"--batch-rows", "0", "/data"}, wantErr: true},
		{name: "remote read without a start", args: []string{"--from-remote-read", "http://p/api/v1/read"}, wantErr: true},
		{name: "remote read and a path", args: []string{"--from-remote-read", "http://p/api/v1/read", "--min-time", "0", "/data"}, wantErr: true},
		{name: "remote read with a metadata URL", args: []string{"--from-remote-read", "http://p/read", "--metadata-url", "http://p/api/v1/metadata", "--min-time", "10"},
			min: 10_000, max: math.MaxInt64, remote: true, metadata: "http://p/api/v1/metadata"},
		{name: "a metadata URL without remote read", args: []string{"--metadata-url", "http://p/api/v1/metadata", "/data"}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bc, err := backfillConfig(tc.args, cfg, io.Discard)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error for %q", tc.args)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantPath := "/data"
			if tc.remote {
				wantPath = ""
			}
			if bc.Path != wantPath || (bc.RemoteRead != "") != tc.remote || bc.MinTime != tc.min || bc.MaxTime != tc.max || len(bc.Matchers) != tc.matchers || bc.MetadataURL != tc.metadata {
				t.Errorf("got path %q, remote %q, times %d..%d, %d matchers, metadata URL %q; want %q, %d..%d, %d, %q", bc.Path, bc.RemoteRead,
					bc.MinTime, bc.MaxTime, len(bc.Matchers), bc.MetadataURL, wantPath, tc.min, tc.max, tc.matchers, tc.metadata)
			}
		})
	}
}
