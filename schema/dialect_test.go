package schema

import (
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Version
		wantErr bool
	}{
		{in: "18.16.1", want: Version{18, 16, 1}},
		{in: "22.8.21.38", want: Version{22, 8, 21}},
		{in: "25.3.2.39-lts", want: Version{25, 3, 2}},
		{in: " 24.1 ", want: Version{24, 1, 0}},
		{in: "23.3.1-stable", want: Version{23, 3, 1}},
		{in: "22", wantErr: true},
		{in: "", wantErr: true},
		{in: "x.y.z", wantErr: true},
	} {
		got, err := ParseVersion(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParseVersion(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseVersion(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestDialectFor(t *testing.T) {
	for _, tc := range []struct {
		v    Version
		want Dialect
	}{
		{Version{18, 16, 1}, Legacy},
		{Version{20, 3, 0}, Legacy},
		{Version{22, 7, 9}, Legacy},
		{Version{22, 8, 0}, Modern},
		{Version{23, 1, 0}, Modern},
		{Version{25, 10, 1}, Modern},
	} {
		if got := DialectFor(tc.v); got != tc.want {
			t.Errorf("DialectFor(%v) = %v, want %v", tc.v, got, tc.want)
		}
		d := DialectFor(tc.v)
		if d.Codecs() != (tc.want == Modern) || d.TTL() != (tc.want == Modern) || d.LowCardinality() != (tc.want == Modern) {
			t.Errorf("%v: features of %v are not all %v", tc.v, d, tc.want == Modern)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		cfg Config
		ok  bool
	}{
		{Config{Database: "pyramid", RawRetention: 30 * day}, true},
		{Config{Database: "_p2", RawRetention: 0}, true},
		{Config{Database: "", RawRetention: day}, false},
		{Config{Database: "2p", RawRetention: day}, false},
		{Config{Database: "p; DROP DATABASE x", RawRetention: day}, false},
		{Config{Database: "p-q", RawRetention: day}, false},
		{Config{Database: "p", RawRetention: -day}, false},
		{Config{Database: "p", RawRetention: 36 * time.Hour}, false},
		{Config{Database: "p", SamplesGranularity: 8192}, true},
		{Config{Database: "p", SamplesGranularity: 65536}, true},
		{Config{Database: "p", SamplesGranularity: 65537}, false},
		{Config{Database: "p", SamplesGranularity: -1}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", tc.cfg, err, tc.ok)
		}
	}
}
