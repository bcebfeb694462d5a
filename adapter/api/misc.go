package api

import (
	"errors"
	"net/http"
	"runtime"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

// EngineVersion is the Prometheus release whose PromQL engine pyramid embeds (module
// github.com/prometheus/prometheus v0.311.0 is Prometheus 3.11.0).
const EngineVersion = "3.11.0"

// buildInfoData is /api/v1/status/buildinfo's data, in Prometheus's field order.
type buildInfoData struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Branch    string `json:"branch"`
	BuildUser string `json:"buildUser"`
	BuildDate string `json:"buildDate"`
	GoVersion string `json:"goVersion"`
}

// buildInfo answers with EngineVersion as the version, pyramid's own as its semver build
// metadata ("3.11.0+pyramid.1.4.0"). Grafana's Prometheus data source reads the version to
// decide which endpoints to call: with no "application" field it takes the server for a
// Prometheus, parses the version as semver and, for 2.24 and later, asks
// /api/v1/labels?match[] and label values with match[] instead of walking /api/v1/series,
// and from 2.x on uses the other newer features its editor knows. A version that is not
// semver (pyramid's own, "dev") would make it fall back to the oldest behaviour. Build
// metadata is ignored by semver comparisons, so the version still compares as the engine's.
func (a *API) buildInfo(http.ResponseWriter, *http.Request) result {
	b := a.cfg.Build
	version := EngineVersion
	if b.Version != "" {
		version += "+pyramid." + semverBuildMetadata(b.Version)
	}
	return result{data: buildInfoData{Version: version, Revision: b.Revision, Branch: b.Branch,
		BuildUser: b.BuildUser, BuildDate: b.BuildDate, GoVersion: runtime.Version()}}
}

// semverBuildMetadata makes v valid as semver build metadata: dot-separated non-empty
// identifiers of [0-9A-Za-z-]; anything else becomes '-'.
func semverBuildMetadata(v string) string {
	v = strings.TrimPrefix(v, "v")
	ids := strings.Split(v, ".")
	for i, id := range ids {
		id = strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' {
				return r
			}
			return '-'
		}, id)
		if id == "" {
			id = "-"
		}
		ids[i] = id
	}
	return strings.Join(ids, ".")
}

// queryExemplars answers as Prometheus does when it holds no exemplars: pyramid accepts
// them on remote write and does not store them.
func (a *API) queryExemplars(_ http.ResponseWriter, r *http.Request) result {
	start, err := parseTimeParam(r, "start", minTime())
	if err != nil {
		return result{err: invalidParam(err, "start")}
	}
	end, err := parseTimeParam(r, "end", maxTime())
	if err != nil {
		return result{err: invalidParam(err, "end")}
	}
	if end.Before(start) {
		return result{err: &badDataError{errors.New("end timestamp must not be before start timestamp")}}
	}
	expr, err := a.parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		return result{err: &badDataError{err}}
	}
	if len(parser.ExtractSelectors(expr)) == 0 {
		return result{noContent: true}
	}
	return result{data: []struct{}{}}
}

func (a *API) formatQuery(_ http.ResponseWriter, r *http.Request) result {
	expr, err := a.parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		return result{err: invalidParam(err, "query")}
	}
	return result{data: expr.Pretty(0)}
}

func (a *API) parseQuery(_ http.ResponseWriter, r *http.Request) result {
	expr, err := a.parser.ParseExpr(r.FormValue("query"))
	if err != nil {
		return result{err: invalidParam(err, "query")}
	}
	return result{data: translateAST(expr)}
}

// metadataEntry is one metric family's metadata as Prometheus writes it.
type metadataEntry struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// metadata answers /api/v1/metadata from the metadata remote write carried: one entry per
// family (the last written), where Prometheus lists what its live targets expose. limit
// caps the families as Prometheus's does (0 answers none); limit_per_metric is accepted
// and always met, as pyramid keeps one entry per family.
func (a *API) metadata(_ http.ResponseWriter, r *http.Request) result {
	limit := -1
	if s := r.FormValue("limit"); s != "" {
		var err error
		if limit, err = strconv.Atoi(s); err != nil {
			return result{err: &badDataError{errors.New("limit must be a number")}}
		}
	}
	if s := r.FormValue("limit_per_metric"); s != "" {
		if _, err := strconv.Atoi(s); err != nil {
			return result{err: &badDataError{errors.New("limit_per_metric must be a number")}}
		}
	}
	out := map[string][]metadataEntry{}
	if limit == 0 {
		return result{data: out}
	}
	md, err := a.st.Metadata(r.Context(), r.FormValue("metric"), max(limit, 0))
	if err != nil {
		return result{err: err}
	}
	for _, m := range md {
		out[m.Family] = []metadataEntry{{Type: m.Type, Help: m.Help, Unit: m.Unit}}
	}
	return result{data: out}
}
