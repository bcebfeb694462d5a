package api

import (
	"math"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// valueData holds one series per value whose formatting matters, each with one sample at
// 10 s, and two series of g an hour and a half apart.
func valueData() map[string][]sample {
	return map[string][]sample{
		`f{k="nan"}`:     {{10_000, math.NaN()}},
		`f{k="pinf"}`:    {{10_000, math.Inf(1)}},
		`f{k="ninf"}`:    {{10_000, math.Inf(-1)}},
		`f{k="negzero"}`: {{10_000, math.Copysign(0, -1)}},
		`f{k="tiny"}`:    {{10_000, 1e-300}},
		`f{k="small"}`:   {{10_000, 1e-6}},
		`f{k="big"}`:     {{10_000, 1e21}},
		// 2^53+1 is not a float64; the sample holds 2^53.
		`f{k="int"}`:    {{10_000, 9007199254740993}},
		`f{k="frac"}`:   {{10_000, 0.1}},
		`f{k="<a&b>"}`:  {{10_000, 1}},
		`g{job="a"}`:    {{100_000, 1}},
		`g{job="b"}`:    {{5_500_000, 2}},
		`h{job="a"}`:    {{100_000, 3}},
		`h{job="html"}`: {{100_000, 4}},
	}
}

// ask sends one request.
type ask func(t *testing.T, path string, params url.Values) response

// bothMethods runs f with GET and with a POSTed form, which Prometheus answers alike.
func bothMethods(t *testing.T, srv *testServer, f func(t *testing.T, ask ask)) {
	t.Run("GET", func(t *testing.T) { f(t, srv.get) })
	t.Run("POST", func(t *testing.T) { f(t, srv.post) })
}

// TestResultJSON checks each result type's bytes against hand-written strings: values
// in Prometheus's shortest round-trip form with NaN and ±Inf spelled out, timestamps as
// seconds with up to three decimals, labels in order and not HTML-escaped. Prometheus
// writes a sample's timestamp as seconds, a dot and the milliseconds in three digits
// (10.500), but a scalar's and a string's as a float (10.5).
func TestResultJSON(t *testing.T) {
	srv := newTestServer(t, testConfig(), openTSDB(t, valueData()))
	bothMethods(t, srv, func(t *testing.T, ask ask) {
		for _, tc := range []struct {
			name, path string
			params     url.Values
			want       string
		}{
			{"vector", "/api/v1/query", url.Values{"query": {"f"}, "time": {"10.5"}},
				`{"status":"success","data":{"resultType":"vector","result":[` +
					`{"metric":{"__name__":"f","k":"<a&b>"},"value":[10.500,"1"]},` +
					`{"metric":{"__name__":"f","k":"big"},"value":[10.500,"1e+21"]},` +
					`{"metric":{"__name__":"f","k":"frac"},"value":[10.500,"0.1"]},` +
					`{"metric":{"__name__":"f","k":"int"},"value":[10.500,"9007199254740992"]},` +
					`{"metric":{"__name__":"f","k":"nan"},"value":[10.500,"NaN"]},` +
					`{"metric":{"__name__":"f","k":"negzero"},"value":[10.500,"-0"]},` +
					`{"metric":{"__name__":"f","k":"ninf"},"value":[10.500,"-Inf"]},` +
					`{"metric":{"__name__":"f","k":"pinf"},"value":[10.500,"+Inf"]},` +
					`{"metric":{"__name__":"f","k":"small"},"value":[10.500,"0.000001"]},` +
					`{"metric":{"__name__":"f","k":"tiny"},"value":[10.500,"1e-300"]}]}}`},
			{"vector without name", "/api/v1/query", url.Values{"query": {`f{k="frac"} * 3`}, "time": {"10"}},
				`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"k":"frac"},"value":[10,"0.30000000000000004"]}]}}`},
			{"empty vector", "/api/v1/query", url.Values{"query": {"nothing"}, "time": {"10"}},
				`{"status":"success","data":{"resultType":"vector","result":[]}}`},
			{"matrix", "/api/v1/query_range", url.Values{"query": {`f{k=~"frac|tiny"}`}, "start": {"10.001"}, "end": {"30.001"}, "step": {"10"}},
				`{"status":"success","data":{"resultType":"matrix","result":[` +
					`{"metric":{"__name__":"f","k":"frac"},"values":[[10.001,"0.1"],[20.001,"0.1"],[30.001,"0.1"]]},` +
					`{"metric":{"__name__":"f","k":"tiny"},"values":[[10.001,"1e-300"],[20.001,"1e-300"],[30.001,"1e-300"]]}]}}`},
			{"matrix from instant query", "/api/v1/query", url.Values{"query": {`g{job="a"}[1m]`}, "time": {"100.05"}},
				`{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"g","job":"a"},"values":[[100,"1"]]}]}}`},
			{"scalar", "/api/v1/query", url.Values{"query": {"1/0"}, "time": {"10.5"}},
				`{"status":"success","data":{"resultType":"scalar","result":[10.5,"+Inf"]}}`},
			{"negative scalar", "/api/v1/query", url.Values{"query": {"-1.25"}, "time": {"1435781451.781"}},
				`{"status":"success","data":{"resultType":"scalar","result":[1435781451.781,"-1.25"]}}`},
			{"string", "/api/v1/query", url.Values{"query": {`"a<b"`}, "time": {"10.5"}},
				`{"status":"success","data":{"resultType":"string","result":[10.5,"a\u003cb"]}}`},
			{"series", "/api/v1/series", url.Values{"match[]": {`{__name__="h"}`}},
				`{"status":"success","data":[{"__name__":"h","job":"a"},{"__name__":"h","job":"html"}]}`},
			{"label values", "/api/v1/label/job/values", url.Values{"match[]": {"g"}},
				`{"status":"success","data":["a","b"]}`},
			{"labels", "/api/v1/labels", url.Values{"match[]": {"g"}},
				`{"status":"success","data":["__name__","job"]}`},
			{"bad query", "/api/v1/query", url.Values{"query": {"sum("}},
				`{"status":"error","errorType":"bad_data","error":"invalid parameter \"query\": 1:5: parse error: unclosed left parenthesis"}`},
		} {
			if tc.path == "/api/v1/label/job/values" && strings.Contains(t.Name(), "POST") {
				continue // Prometheus serves label values with GET only.
			}
			got := ask(t, tc.path, tc.params)
			if got.body != tc.want {
				t.Errorf("%s:\n got %s\nwant %s", tc.name, got.body, tc.want)
			}
			if ct := got.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: Content-Type %q", tc.name, ct)
			}
		}
	})
}

// TestErrors checks the error type, status code and message of requests Prometheus
// refuses, with its own messages.
func TestErrors(t *testing.T) {
	srv := newTestServer(t, testConfig(), openTSDB(t, valueData()))
	bothMethods(t, srv, func(t *testing.T, ask ask) {
		for _, tc := range []struct {
			name, path string
			params     url.Values
			code       int
			errorType  string
			msg        string
		}{
			{"bad time", "/api/v1/query", url.Values{"query": {"f"}, "time": {"abc"}}, 400, "bad_data",
				`invalid parameter "time": invalid time value for 'time': cannot parse "abc" to a valid timestamp`},
			{"bad timeout", "/api/v1/query", url.Values{"query": {"f"}, "timeout": {"x"}}, 400, "bad_data",
				`invalid parameter "timeout": cannot parse "x" to a valid duration`},
			{"bad lookback", "/api/v1/query", url.Values{"query": {"f"}, "lookback_delta": {"x"}}, 400, "bad_data",
				`error parsing lookback delta duration: cannot parse "x" to a valid duration`},
			{"negative limit", "/api/v1/query", url.Values{"query": {"f"}, "limit": {"-1"}}, 400, "bad_data",
				`invalid parameter "limit": limit must be non-negative`},
			{"missing start", "/api/v1/query_range", url.Values{"query": {"f"}, "end": {"10"}, "step": {"1"}}, 400, "bad_data",
				`invalid parameter "start": cannot parse "" to a valid timestamp`},
			{"end before start", "/api/v1/query_range", url.Values{"query": {"f"}, "start": {"10"}, "end": {"9"}, "step": {"1"}}, 400, "bad_data",
				`invalid parameter "end": end timestamp must not be before start time`},
			{"zero step", "/api/v1/query_range", url.Values{"query": {"f"}, "start": {"0"}, "end": {"10"}, "step": {"0"}}, 400, "bad_data",
				`invalid parameter "step": zero or negative query resolution step widths are not accepted. Try a positive integer`},
			{"negative step", "/api/v1/query_range", url.Values{"query": {"f"}, "start": {"0"}, "end": {"10"}, "step": {"-1m"}}, 400, "bad_data",
				`invalid parameter "step": cannot parse "-1m" to a valid duration`},
			{"too many points", "/api/v1/query_range", url.Values{"query": {"f"}, "start": {"0"}, "end": {"11001"}, "step": {"1"}}, 400, "bad_data",
				`exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)`},
			{"many-to-many", "/api/v1/query", url.Values{"query": {`f{k=~"big|frac"} - on() f{k=~"big|frac"}`}, "time": {"10"}}, 422, "execution",
				`found duplicate series for the match group {} on the right hand-side of the operation: [{__name__="f", k="frac"}, {__name__="f", k="big"}];many-to-many matching not allowed: matching labels must be unique on one side`},
			{"series without match", "/api/v1/series", url.Values{}, 400, "bad_data", "no match[] parameter provided"},
			{"series matching everything", "/api/v1/series", url.Values{"match[]": {`{a=""}`}}, 400, "bad_data",
				`invalid parameter "match[]": match[] must contain at least one non-empty matcher`},
			{"series bad selector", "/api/v1/series", url.Values{"match[]": {`{a=`}}, 400, "bad_data", ""},
			{"labels bad end", "/api/v1/labels", url.Values{"end": {"x"}}, 400, "bad_data",
				`invalid parameter "end": invalid time value for 'end': cannot parse "x" to a valid timestamp`},
			{"labels matching everything", "/api/v1/labels", url.Values{"match[]": {`{__name__=~".*"}`}}, 400, "bad_data",
				`match[] must contain at least one non-empty matcher`},
			{"exemplars end before start", "/api/v1/query_exemplars", url.Values{"query": {"f"}, "start": {"10"}, "end": {"9"}}, 400, "bad_data",
				"end timestamp must not be before start timestamp"},
			{"format bad query", "/api/v1/format_query", url.Values{"query": {"sum("}}, 400, "bad_data",
				`invalid parameter "query": 1:5: parse error: unclosed left parenthesis`},
		} {
			got := ask(t, tc.path, tc.params)
			e := got.decode(t)
			if got.code != tc.code || e.Status != "error" || e.ErrorType != tc.errorType || (tc.msg != "" && e.Error != tc.msg) {
				t.Errorf("%s: %d %s\nwant %d %s %q", tc.name, got.code, got.body, tc.code, tc.errorType, tc.msg)
			}
		}
	})
	// Label names are checked before anything else; label values are GET only, as in
	// Prometheus, and an unknown path is mux's 404.
	if got := srv.get(t, "/api/v1/label/%FF/values", nil); got.code != 400 || got.decode(t).Error != `invalid label name: "\xff"` {
		t.Errorf("invalid label name: %d %s", got.code, got.body)
	}
	if got := srv.post(t, "/api/v1/label/job/values", nil); got.code != http.StatusMethodNotAllowed {
		t.Errorf("POST label values: %d %s", got.code, got.body)
	}
	if got := srv.get(t, "/api/v1/nope", nil); got.code != http.StatusNotFound {
		t.Errorf("unknown endpoint: %d %s", got.code, got.body)
	}
	// Parameters Prometheus does not know are ignored, as Prometheus ignores them.
	if got := srv.get(t, "/api/v1/query", url.Values{"query": {"1"}, "nonsense": {"x"}}); got.code != 200 {
		t.Errorf("unknown parameter: %d %s", got.code, got.body)
	}
	// Exactly MaxPoints points is still answered.
	if got := srv.get(t, "/api/v1/query_range", url.Values{"query": {"1"}, "start": {"0"}, "end": {"11000"}, "step": {"1"}}); got.code != 200 {
		t.Errorf("11000 points: %d %.200s", got.code, got.body)
	}
}
