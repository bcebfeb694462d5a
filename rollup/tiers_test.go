package rollup

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseTiers(t *testing.T) {
	const (
		d = 24 * time.Hour
		y = 365 * d
	)
	for _, tc := range []struct {
		in   string
		want []Tier
	}{
		{DefaultTiers, []Tier{
			{Name: "raw", Retention: 30 * d},
			{Name: "5m", Resolution: 5 * time.Minute, Retention: y},
			{Name: "1h", Resolution: time.Hour},
		}},
		{"raw:0", []Tier{{Name: "raw"}}},
		{" raw : 2w , 60m : 1y2w , 1d : 0 ", []Tier{
			{Name: "raw", Retention: 14 * d},
			{Name: "1h", Resolution: time.Hour, Retention: y + 14*d},
			{Name: "1d", Resolution: d},
		}},
		{"raw:7d,1m:7d,5m:30d,1h:0,1d:0", []Tier{
			{Name: "raw", Retention: 7 * d},
			{Name: "1m", Resolution: time.Minute, Retention: 7 * d},
			{Name: "5m", Resolution: 5 * time.Minute, Retention: 30 * d},
			{Name: "1h", Resolution: time.Hour},
			{Name: "1d", Resolution: d},
		}},
		{"raw:1d,500ms:1d,30s:1d1h30m", []Tier{
			{Name: "raw", Retention: d},
			{Name: "500ms", Resolution: 500 * time.Millisecond, Retention: d},
			{Name: "30s", Resolution: 30 * time.Second, Retention: d + 90*time.Minute},
		}},
	} {
		got, err := ParseTiers(tc.in)
		if err != nil {
			t.Errorf("ParseTiers(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseTiers(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
		if again, err := ParseTiers(FormatTiers(got)); err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("ParseTiers(FormatTiers(%q)) = %+v, %v; want a round trip", tc.in, again, err)
		}
	}
}

func TestParseTiersErrors(t *testing.T) {
	for _, tc := range []struct {
		in string
		// want are substrings of the error: the entry as written and the reason.
		want []string
	}{
		{"", []string{`tier 1 ""`, "empty"}},
		{"raw:30d,", []string{`tier 2 ""`, "empty"}},
		{"raw", []string{`tier 1 "raw"`, "exactly one colon"}},
		{"raw:30d:1", []string{`"raw:30d:1"`, "exactly one colon"}},
		{"raw:30x", []string{`tier 1 "raw:30x"`, "retention", `unknown unit "x"`}},
		{"raw:30d,5q:1y", []string{`tier 2 "5q:1y"`, "resolution"}},
		{"raw:30d,-5m:1y", []string{`tier 2 "-5m:1y"`, "resolution"}},
		{"raw:30d,0:1y", []string{`tier 2 "0:1y"`, "must be positive"}},
		{"raw:30d,0m:1y", []string{`tier 2 "0m:1y"`, "must be positive"}},
		{"5m:1y,raw:30d", []string{`tier 1 "5m:1y"`, "first tier must be raw"}},
		{"raw:30d,raw:60d", []string{`tier 2 "raw:60d"`, "only be the first tier"}},
		{"raw:30d,5m:1y,raw:0", []string{`tier 3 "raw:0"`, "only be the first tier"}},
		{"raw:30d,1h:1y,5m:0", []string{`tier 3 "5m:0"`, "not coarser", "1h"}},
		{"raw:30d,5m:1y,5m:0", []string{`tier 3 "5m:0"`, "not coarser"}},
		{"raw:30d,5m:1y,12m:0", []string{`tier 3 "12m:0"`, "not a whole multiple", "5m"}},
		{"raw:30d,8m:1y,1h:0", []string{`tier 3 "1h:0"`, "not a whole multiple", "8m"}},
		{"raw:30d,7m:1y", []string{`tier 2 "7m:1y"`, "does not divide a day"}},
		{"raw:30d,5m:1y,1d:1y,2d:0", []string{`tier 4 "2d:0"`, "does not divide a day"}},
		{"raw:30d,5m:1y,1w:0", []string{`tier 3 "1w:0"`, "does not divide a day"}},
		{"raw:30d,5m:1m", []string{`tier 2 "5m:1m"`, "shorter than the resolution"}},
		{"raw:30d,5m:7d", []string{`tier 2 "5m:7d"`, "retention 1w is shorter than the previous tier's 30d"}},
		{"raw:30d,5m:1y,1h:30d", []string{`tier 3 "1h:30d"`, "shorter than the previous tier's 1y"}},
		{"raw:1d,500ms:1d,30s:1h30m", []string{`tier 3 "30s:1h30m"`, "retention 1h30m is shorter than the previous tier's 1d"}},
		{"raw:0,5m:1y", []string{`tier 2 "5m:1y"`, "previous tier's (forever)"}},
		{"raw:30d,5m:0,1h:1y", []string{`tier 3 "1h:1y"`, "previous tier's (forever)"}},
	} {
		got, err := ParseTiers(tc.in)
		if err == nil {
			t.Errorf("ParseTiers(%q) = %+v, want an error", tc.in, got)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseTiers(%q) error %q does not mention %q", tc.in, err, w)
			}
		}
	}
}

func TestValidateTiers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tiers []Tier
		want  string // "" for valid
	}{
		{"none", nil, "no tiers"},
		{"raw only", []Tier{{Name: "raw", Retention: time.Hour}}, ""},
		{"sub-millisecond", []Tier{{Name: "raw"}, {Name: "odd", Resolution: 1500 * time.Microsecond}}, `tier 2 "odd": resolution 1.5ms is not a whole number of milliseconds`},
		{"negative retention", []Tier{{Name: "raw", Retention: -time.Hour}}, `tier 1 "raw": retention -1h0m0s is negative`},
		{"negative resolution", []Tier{{Name: "raw"}, {Name: "x", Resolution: -time.Minute}}, `tier 2 "x": resolution -1m0s is negative`},
	} {
		err := ValidateTiers(tc.tiers)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: ValidateTiers: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: ValidateTiers = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
