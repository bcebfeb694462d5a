package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/prometheus/prometheus/tsdb"
)

// compareT0 is the first sample's time, in seconds; the data spans an hour after it.
const compareT0 = 1_700_000_000

// writeCompareData writes the data both servers answer from as OpenMetrics for promtool:
// counters with a reset, a classic histogram, and one series per value whose formatting
// matters. Samples are 15 s apart; queries ask at times 7 s off that grid, so that no
// sample lies on the edge of a range, where Prometheus 3 (left-open ranges) and 2.42
// (closed ranges) differ by design.
func writeCompareData(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	series := func(name string, v func(i int) float64) {
		for i := range 240 {
			fmt.Fprintf(w, "%s %s %d\n", name, strconv.FormatFloat(v(i), 'g', -1, 64), compareT0+15*i)
		}
	}
	for _, job := range []string{"a", "b"} {
		scale := map[string]float64{"a": 1, "b": 2.5}[job]
		series(fmt.Sprintf(`c_total{job="%s",instance="x"}`, job), func(i int) float64 {
			if i >= 120 { // a counter reset half way
				return scale * float64(i-120)
			}
			return scale * float64(i) * 1.5
		})
	}
	for _, le := range []string{"0.1", "1", "10", "+Inf"} {
		bound, _ := strconv.ParseFloat(le, 64)
		series(fmt.Sprintf(`b_bucket{le="%s"}`, le), func(i int) float64 {
			return math.Floor(float64(i) * math.Min(1, math.Log10(bound+1.01)))
		})
	}
	for k, v := range map[string]float64{
		"nan": math.NaN(), "pinf": math.Inf(1), "ninf": math.Inf(-1), "negzero": math.Copysign(0, -1),
		"tiny": 1e-300, "small": 1e-6, "big": 1e21, "int": 9007199254740992, "frac": 0.1, "third": 1.0 / 3,
	} {
		series(fmt.Sprintf(`f{k="%s"}`, k), func(int) float64 { return v })
	}
	fmt.Fprintln(w, "# EOF")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCompareWithPrometheus answers the same requests from the same TSDB blocks through
// this API and through Debian's Prometheus 2.42, and compares the bodies byte for byte.
func TestCompareWithPrometheus(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err == nil {
		_, err = exec.LookPath("promtool")
	}
	if err != nil {
		if os.Getenv("PYRAMID_TEST_REQUIRE") == "1" {
			t.Fatalf("prometheus and promtool are needed: %v", err)
		}
		t.Skip("prometheus or promtool not installed")
	}
	dir := t.TempDir()
	om := filepath.Join(dir, "data.om")
	writeCompareData(t, om)
	blocks := filepath.Join(dir, "blocks")
	if out, err := exec.Command("promtool", "tsdb", "create-blocks-from", "openmetrics", om, blocks).CombinedOutput(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out)
	}
	// Prometheus gets a copy: it writes its WAL and lock next to the blocks.
	promData := filepath.Join(dir, "prometheus")
	if out, err := exec.Command("cp", "-r", blocks, promData).CombinedOutput(); err != nil {
		t.Fatalf("copy blocks: %v\n%s", err, out)
	}
	// A read-only TSDB wants a (here empty) write-ahead log next to its blocks.
	if err := os.Mkdir(filepath.Join(blocks, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte("global: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freeTCPPort(t)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prom, "--config.file="+cfgPath, "--storage.tsdb.path="+promData,
		"--storage.tsdb.retention.time=100y", fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	promURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, "prometheus ready", func() bool {
		resp, err := http.Get(promURL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	db, err := tsdb.OpenDBReadOnly(blocks, "", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	srv := newTestServer(t, testConfig(), db)

	at := func(s int) string { return strconv.Itoa(compareT0 + s) }
	instant := func(q string, s int) url.Values { return url.Values{"query": {q}, "time": {at(s)}} }
	ranged := func(q string, start, end, step int) url.Values {
		return url.Values{"query": {q}, "start": {at(start)}, "end": {at(end)}, "step": {strconv.Itoa(step)}}
	}
	for _, tc := range []struct {
		path   string
		params url.Values
		// approx: the engines of 2.42 and 3.11 compute rate's extrapolation in another
		// order, so that at some steps values differ in their last bit (0.1 against
		// 0.09999999999999999); the rest must not differ.
		approx bool
		// versionDiff names a message Prometheus 3 words differently from 2.42; the
		// status and error type must still agree.
		versionDiff string
	}{
		{path: "/api/v1/query", params: instant("f", 1807)},
		{path: "/api/v1/query", params: instant("c_total", 1807)},
		{path: "/api/v1/query", params: instant("rate(c_total[5m])", 1807)},
		{path: "/api/v1/query", params: instant("irate(c_total[5m])", 1807)},
		{path: "/api/v1/query", params: instant("increase(c_total[10m])", 1807)},
		{path: "/api/v1/query", params: instant("resets(c_total[1h])", 3607)},
		{path: "/api/v1/query", params: instant("deriv(c_total[5m])", 1207)},
		{path: "/api/v1/query", params: instant("predict_linear(c_total[10m], 3600)", 1207)},
		{path: "/api/v1/query", params: instant("sum by (job) (c_total)", 1807)},
		{path: "/api/v1/query", params: instant("sum without (instance) (rate(c_total[5m]))", 1807)},
		{path: "/api/v1/query", params: instant("avg_over_time(f[5m])", 1807)},
		{path: "/api/v1/query", params: instant(`max_over_time(c_total{job=~"a|b"}[10m:1m])`, 1807)},
		{path: "/api/v1/query", params: instant("histogram_quantile(0.9, rate(b_bucket[5m]))", 1807)},
		{path: "/api/v1/query", params: instant(`c_total / on(job) group_left sum by (job) (c_total)`, 1807)},
		{path: "/api/v1/query", params: instant("c_total offset 10m", 1807)},
		{path: "/api/v1/query", params: instant("c_total @ "+at(607), 1807)},
		{path: "/api/v1/query", params: instant("absent(nothing)", 1807)},
		{path: "/api/v1/query", params: instant("topk(1, c_total)", 1807)},
		{path: "/api/v1/query", params: instant("1/0", 1807)},
		{path: "/api/v1/query", params: instant("-1/0", 1807)},
		{path: "/api/v1/query", params: instant("0/0", 1807)},
		{path: "/api/v1/query", params: instant(`scalar(f{k="third"})`, 1807)},
		{path: "/api/v1/query", params: instant(`"text"`, 1807)},
		{path: "/api/v1/query", params: url.Values{"query": {"time()"}, "time": {at(1807) + ".123"}}},
		{path: "/api/v1/query", params: url.Values{"query": {"c_total"}, "time": {"2023-11-14T22:43:27.5Z"}}},
		{path: "/api/v1/query_range", params: ranged("c_total", 7, 3600, 60)},
		{path: "/api/v1/query_range", params: ranged("rate(c_total[5m])", 3, 3000, 47), approx: true},
		{path: "/api/v1/query_range", params: ranged(`f{k=~"nan|pinf|ninf|negzero|tiny|big"}`, 7, 600, 120)},
		{path: "/api/v1/query_range", params: ranged("sum(rate(b_bucket[5m])) by (le)", 307, 3600, 300)},
		{path: "/api/v1/query_range", params: url.Values{"query": {"c_total"}, "start": {at(7) + ".25"}, "end": {at(600)}, "step": {"59.5"}}},
		{path: "/api/v1/series", params: url.Values{"match[]": {"c_total"}}},
		{path: "/api/v1/series", params: url.Values{"match[]": {`{__name__=~"c_total|b_bucket"}`}, "start": {at(0)}, "end": {at(3600)}}},
		{path: "/api/v1/labels", params: nil},
		{path: "/api/v1/labels", params: url.Values{"match[]": {"c_total"}}},
		{path: "/api/v1/label/__name__/values", params: nil},
		{path: "/api/v1/label/le/values", params: nil},
		{path: "/api/v1/label/job/values", params: url.Values{"match[]": {"c_total"}}},
		// What Grafana's data source and Metrics Drilldown ask.
		{path: "/api/v1/labels", params: url.Values{"match[]": {`{__name__="c_total"}`}, "start": {at(0)}, "end": {at(3600)}}},
		{path: "/api/v1/label/__name__/values", params: url.Values{"start": {at(0)}, "end": {at(3600)}}},
		{path: "/api/v1/label/job/values", params: url.Values{"match[]": {`{__name__="c_total"}`}, "start": {at(0)}, "end": {at(3600)}}},
		{path: "/api/v1/series", params: url.Values{"match[]": {`{__name__=~"f|c_total",k!="nan"}`}, "start": {at(1800)}, "end": {at(3600)}}},
		{path: "/api/v1/query_range", params: url.Values{"query": {`sum by (job) (rate(c_total[2m]))`}, "start": {at(17)}, "end": {at(3317)}, "step": {"45"}}},
		{path: "/api/v1/query_exemplars", params: url.Values{"query": {"c_total"}, "start": {at(0)}, "end": {at(3600)}}},
		{path: "/api/v1/format_query", params: url.Values{"query": {`sum(rate(c_total{job="a"}[5m]))by(job)/on(job)group_left sum(c_total)by(job)`}}},
		// Errors.
		{path: "/api/v1/query", params: url.Values{"query": {"sum("}}},
		{path: "/api/v1/query", params: url.Values{"query": {"c_total"}, "time": {"x"}}, versionDiff: "2.42 writes \"Invalid time value\""},
		{path: "/api/v1/query_range", params: ranged("c_total", 100, 7, 60)},
		{path: "/api/v1/query_range", params: ranged("c_total", 7, 100, 0)},
		{path: "/api/v1/query_range", params: url.Values{"query": {"c_total"}, "start": {"0"}, "end": {"11001"}, "step": {"1"}}},
		{path: "/api/v1/series", params: nil},
		{path: "/api/v1/series", params: url.Values{"match[]": {`{job=""}`}}},
		{path: "/api/v1/query", params: instant(`c_total - on() c_total`, 1807)},
	} {
		u := tc.path + "?" + tc.params.Encode()
		ours := srv.get(t, tc.path, tc.params)
		theirs := getURL(t, promURL+u)
		if ours.code == theirs.code && ours.body == theirs.body {
			continue
		}
		same := false
		switch {
		case ours.code != theirs.code:
		case tc.versionDiff != "":
			o, p := ours.decode(t), theirs.decode(t)
			same = o.Status == p.Status && o.ErrorType == p.ErrorType
		case tc.approx:
			same = sameWithin(t, ours.body, theirs.body, 1e-14)
			if same {
				t.Logf("%s: values differ in their last bits only", u)
			}
		}
		if !same {
			t.Errorf("%s\n  pyramid    %d %s\n  prometheus %d %s", u, ours.code, ours.body, theirs.code, theirs.body)
		}
	}
}

func getURL(t *testing.T, u string) response {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(b)}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// sameWithin reports whether two JSON answers are the same but for sample values that
// differ relatively by at most tol.
func sameWithin(t *testing.T, a, b string, tol float64) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	return jsonClose(x, y, tol)
}

func jsonClose(x, y any, tol float64) bool {
	switch xv := x.(type) {
	case map[string]any:
		yv, ok := y.(map[string]any)
		if !ok || len(xv) != len(yv) {
			return false
		}
		for k := range xv {
			if !jsonClose(xv[k], yv[k], tol) {
				return false
			}
		}
		return true
	case []any:
		yv, ok := y.([]any)
		if !ok || len(xv) != len(yv) {
			return false
		}
		for i := range xv {
			if !jsonClose(xv[i], yv[i], tol) {
				return false
			}
		}
		return true
	case string:
		ys, ok := y.(string)
		if !ok {
			return false
		}
		if xv == ys {
			return true
		}
		xf, err1 := strconv.ParseFloat(xv, 64)
		yf, err2 := strconv.ParseFloat(ys, 64)
		return err1 == nil && err2 == nil && math.Abs(xf-yf) <= tol*math.Max(math.Abs(xf), math.Abs(yf))
	default:
		return x == y
	}
}
