package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apiDo sends one request to a Prometheus HTTP API and returns the data of a successful
// answer; a warning fails it, as in promAPI. A nil form sends a GET without parameters.
func apiDo(ctx context.Context, method, baseURL, path string, form url.Values) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var body io.Reader
	target := baseURL + path
	if method == http.MethodGet && len(form) > 0 {
		target += "?" + form.Encode()
	} else if method == http.MethodPost {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	var env apiEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%s %s answered %s with no API envelope: %s", method, path, resp.Status, bytes.TrimSpace(raw))
	}
	if resp.StatusCode != http.StatusOK || env.Status != "success" {
		return nil, fmt.Errorf("%s %s answered %s: %s: %s", method, path, resp.Status, env.ErrorType, env.Error)
	}
	if len(env.Warnings) > 0 {
		return nil, fmt.Errorf("%s %s answered with warnings: %s", method, path, strings.Join(env.Warnings, "; "))
	}
	return env.Data, nil
}

// metadataFamilies decodes a /api/v1/metadata answer into, per metric family, its sorted
// entries rendered as "type|help|unit", the set Prometheus answers for the family.
func metadataFamilies(data json.RawMessage) (map[string][]string, error) {
	var m map[string][]struct {
		Type string `json:"type"`
		Help string `json:"help"`
		Unit string `json:"unit"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode metadata: %w", err)
	}
	out := make(map[string][]string, len(m))
	for family, entries := range m {
		var set []string
		for _, e := range entries {
			set = append(set, e.Type+"|"+e.Help+"|"+e.Unit)
		}
		sort.Strings(set)
		out[family] = set
	}
	return out, nil
}

// diffMetadata returns "" when both answers hold the same families with the same entries.
func diffMetadata(a, b map[string][]string) string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out strings.Builder
	shown := 0
	for _, k := range keys {
		// Prometheus lists every distinct entry its targets expose for a family; pyramid
		// keeps the one written last, which must be one of them.
		if len(b[k]) == 1 && slices.Contains(a[k], b[k][0]) {
			continue
		}
		if shown++; shown > 8 {
			out.WriteString("  ...\n")
			break
		}
		fmt.Fprintf(&out, "  %s: A %q, pyramid %q\n", k, strings.Join(a[k], "; "), strings.Join(b[k], "; "))
	}
	return out.String()
}

// grafanaVersion is what Grafana accepts as a Prometheus version: it parses buildinfo's
// version as semver to decide which endpoints to call (for example labels with match[]
// from 2.24 on).
var grafanaVersion = regexp.MustCompile(`^v?(\d+)\.(\d+)\.(\d+)`)

// replayGrafana sends the requests Grafana's Prometheus data source and Metrics
// Drilldown send, to A and to pyramid's API, and compares the answers as Prometheus
// answers them: sets for label lists, series and metadata, values for queries. start and
// end cover all of A's samples; metaA is A's /api/v1/metadata answer taken while it still
// scraped (Prometheus answers metadata from its live targets only). rangeWindows says
// whether queries with range selectors may run at whole seconds, as Grafana sends them
// (see subqueryEdgeFree).
//
// Queries must give ref3's answer (the Prometheus 3 engine over A), which is A's wherever
// the engines agree.
func replayGrafana(t *testing.T, ctx context.Context, aURL, apiURL string, ref3 *engine3, start, end int64, metaA json.RawMessage, rangeWindows bool) {
	// Grafana sends whole seconds for label and series lookups: the dashboard's range,
	// snapped by its cache level (getAdjustedInterval in
	// grafana/grafana packages/grafana-prometheus/src/language_provider.ts).
	sec := func(ms int64) string { return strconv.FormatInt(ms/1000, 10) }
	s, e := sec(start), sec(end+999)

	// GET /api/v1/status/buildinfo: Grafana reads data.version to pick the Prometheus
	// flavour and its features (packages/grafana-prometheus/src/datasource.ts,
	// getBuildInfo). A answers its own version; pyramid's must parse as one Grafana takes.
	t.Run("buildinfo", func(t *testing.T) {
		for _, side := range []struct{ name, url string }{{"A", aURL}, {"pyramid", apiURL}} {
			data, err := apiDo(ctx, http.MethodGet, side.url, "/api/v1/status/buildinfo", nil)
			if err != nil {
				t.Errorf("buildinfo on %s: %v", side.name, err)
				continue
			}
			var info map[string]string
			if err := json.Unmarshal(data, &info); err != nil {
				t.Errorf("decode buildinfo of %s: %v: %s", side.name, err, data)
				continue
			}
			m := grafanaVersion.FindStringSubmatch(info["version"])
			if m == nil {
				t.Errorf("buildinfo of %s: version %q is not the semver Grafana parses", side.name, info["version"])
				continue
			}
			if major, _ := strconv.Atoi(m[1]); major < 2 {
				t.Errorf("buildinfo of %s: version %q is older than any Prometheus Grafana supports", side.name, info["version"])
			}
			t.Logf("buildinfo of %s: %s", side.name, data)
		}
	})

	// Label names and values, as the query editor and Metrics Drilldown ask for them:
	// GET with start and end, with and without match[] (fetchLabels,
	// fetchSeriesLabelsMatch, fetchLabelValues and fetchSeriesValuesWithMatch in
	// language_provider.ts).
	t.Run("labels", func(t *testing.T) {
		for _, r := range []labelRequest{
			{"/api/v1/labels", url.Values{"start": {s}, "end": {e}}},
			{"/api/v1/labels", url.Values{"start": {s}, "end": {e}, "match[]": {`e2e_requests_total`}}},
			{"/api/v1/labels", url.Values{"start": {s}, "end": {e}, "match[]": {`{__name__="e2e_latency_seconds_bucket",handler="api"}`}}},
			{"/api/v1/label/__name__/values", url.Values{"start": {s}, "end": {e}}},
			{"/api/v1/label/job/values", url.Values{"start": {s}, "end": {e}}},
			{"/api/v1/label/instance/values", url.Values{"start": {s}, "end": {e}}},
			{"/api/v1/label/code/values", url.Values{"start": {s}, "end": {e}, "match[]": {`e2e_requests_total{method="GET"}`}}},
		} {
			compareLists(t, ctx, aURL, apiURL, http.MethodGet, r)
		}
	})

	// GET /api/v1/series with match[], start and end (fetchSeries and fetchSeriesLabels
	// in language_provider.ts).
	t.Run("series", func(t *testing.T) {
		for _, match := range []string{`e2e_requests_total`, `{__name__=~"e2e_latency_seconds.*",handler="ui"}`, `up`} {
			r := labelRequest{"/api/v1/series", url.Values{"start": {s}, "end": {e}, "match[]": {match}}}
			a, errA := seriesKeys(ctx, aURL, r)
			p, errP := seriesKeys(ctx, apiURL, r)
			switch {
			case errA != nil:
				t.Errorf("%s on A: %v", r, errA)
			case errP != nil:
				t.Errorf("%s on pyramid: %v", r, errP)
			case len(a) == 0:
				t.Errorf("%s: A answers nothing, so the comparison would pass vacuously", r)
			default:
				if d := diffKeys(a, p); d != "" {
					t.Errorf("%s: A and pyramid differ:\n%s", r, d)
				}
			}
		}
	})

	// GET /api/v1/metadata?limit=40000, as Metrics Drilldown loads all metadata at once.
	t.Run("metadata", func(t *testing.T) {
		want, err := metadataFamilies(metaA)
		if err != nil {
			t.Fatalf("A's metadata: %v", err)
		}
		if len(want) == 0 || want["e2e_requests_total"] == nil {
			t.Fatalf("A's metadata holds %d families and none for e2e_requests_total, so the comparison would prove little", len(want))
		}
		data, err := apiDo(ctx, http.MethodGet, apiURL, "/api/v1/metadata", url.Values{"limit": {"40000"}})
		if err != nil {
			t.Fatalf("metadata on pyramid: %v", err)
		}
		got, err := metadataFamilies(data)
		if err != nil {
			t.Fatalf("pyramid's metadata: %v", err)
		}
		if d := diffMetadata(want, got); d != "" {
			t.Errorf("metadata of A (%d families) and pyramid (%d) differ:\n%s", len(want), len(got), d)
		}
		// pyramid keeps the metadata of families whose targets are gone, which Prometheus
		// no longer lists.
		for k := range got {
			if want[k] == nil {
				t.Logf("metadata of %s: only pyramid's (a target A no longer scrapes)", k)
			}
		}
	})

	// POST /api/v1/query_range, form-encoded, with Grafana's parameters: query, start and
	// end as decimal seconds, step as decimal seconds, and the data source's query timeout
	// (QueryRange in grafana/grafana pkg/promlib/client/client.go). The step does not
	// divide the range. Instant queries send query and time, the range's end unaligned
	// (QueryInstant there).
	t.Run("query", func(t *testing.T) {
		exprs := []string{`sum by (code) (e2e_requests_total)`, `e2e_random`, `up`}
		if rangeWindows {
			exprs = append(exprs, `rate(e2e_requests_total[1m])`, `histogram_quantile(0.9, sum by (le) (rate(e2e_latency_seconds_bucket[30s])))`)
		}
		rs, re := start/1000+5, end/1000-2
		step := int64(7)
		if (re-rs)%step == 0 {
			re--
		}
		for _, expr := range exprs {
			for _, c := range []struct {
				method, path string
				form         url.Values
			}{
				{http.MethodPost, "/api/v1/query_range", url.Values{"query": {expr}, "start": {strconv.FormatInt(rs, 10)}, "end": {strconv.FormatInt(re, 10)}, "step": {strconv.FormatInt(step, 10)}, "timeout": {"30s"}}},
				{http.MethodPost, "/api/v1/query", url.Values{"query": {expr}, "time": {strconv.FormatInt(re, 10) + ".5"}, "timeout": {"30s"}}},
				{http.MethodGet, "/api/v1/query", url.Values{"query": {expr}, "time": {strconv.FormatInt(re, 10) + ".5"}}},
			} {
				mode := rangeOver("grafana range", rs*1000, re*1000, time.Duration(step)*time.Second)
				if c.path == "/api/v1/query" {
					mode = instantAt("grafana instant", re*1000+500)
				}
				a, errA := ref3.run(ctx, expr, mode)
				p, errP := decodeQuery(apiDo(ctx, c.method, apiURL, c.path, c.form))
				switch {
				case errA != nil:
					t.Errorf("%s %s %s on the Prometheus 3 engine over A: %v", c.method, c.path, c.form.Encode(), errA)
				case errP != nil:
					t.Errorf("%s %s %s on pyramid: %v", c.method, c.path, c.form.Encode(), errP)
				case a.points() == 0:
					t.Errorf("%s %s %s: A answers nothing, so the comparison would pass vacuously", c.method, c.path, c.form.Encode())
				default:
					if d := diffResults(a, p); d != "" {
						t.Errorf("%s %s %s: A and pyramid differ:\n%s", c.method, c.path, c.form.Encode(), d)
					}
				}
			}
		}
	})
}

// compareLists compares one label name or value lookup on A and on pyramid as sets.
func compareLists(t *testing.T, ctx context.Context, aURL, apiURL, method string, r labelRequest) {
	t.Helper()
	get := func(base string) ([]string, error) { return labelList(ctx, method, base, r) }
	a, err := get(aURL)
	if err != nil {
		t.Errorf("%s on A: %v", r, err)
		return
	}
	p, err := get(apiURL)
	if err != nil {
		t.Errorf("%s on pyramid: %v", r, err)
		return
	}
	if len(a) == 0 {
		t.Errorf("%s: A answers nothing, so the comparison would pass vacuously", r)
	}
	if d := diffKeys(a, p); d != "" {
		t.Errorf("%s: A and pyramid differ:\n%s", r, d)
	}
}

// seriesKeys runs a GET /api/v1/series and returns the series' canonical keys, sorted.
func seriesKeys(ctx context.Context, base string, r labelRequest) ([]string, error) {
	return decodeSeriesKeys(apiDo(ctx, http.MethodGet, base, r.path, r.form))
}
