// Package deploy holds the scripts that install and run pyramid's servers and the
// deployment kit (compose/, kubernetes/); its test validates the kit, since no container
// engine or Kubernetes runs where the tests do.
package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// pyramidSettings are the environment variables pyramid reads, from the envconfig tags
// of cmd/pyramid/config.go, so that a kit cannot set one pyramid ignores.
func pyramidSettings(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("../cmd/pyramid/config.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range regexp.MustCompile(`envconfig:"([A-Z0-9_]+)"`).FindAllSubmatch(src, -1) {
		out = append(out, "PYRAMID_"+string(m[1]))
	}
	if len(out) < 20 {
		t.Fatalf("found %d settings in cmd/pyramid/config.go; the pattern no longer matches", len(out))
	}
	return out
}

// pyramidMetrics are the metric names pyramid's code registers.
func pyramidMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	re := regexp.MustCompile(`"(pyramid_[a-z_]+)"`)
	for _, dir := range []string{"../adapter", "../adapter/store", "../adapter/api", "../rollup/materialize"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllSubmatch(src, -1) {
				out[string(m[1])] = true
			}
		}
	}
	return out
}

// TestComposeKit loads deploy/compose/compose.yaml with the compose specification's own
// loader, which validates it against the specification's schema, and checks what a
// schema cannot: pyramid's settings exist, the Prometheus config parses with Prometheus's
// own loader and points at pyramid, and every Grafana panel's query parses as PromQL and
// names pyramid's metrics.
func TestComposeKit(t *testing.T) {
	opts, err := cli.NewProjectOptions([]string{"compose/compose.yaml"}, cli.WithWorkingDirectory("compose"), cli.WithName("pyramid"))
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load the compose file: %v", err)
	}
	if got := project.ServiceNames(); !slices.Equal(sorted(got), []string{"clickhouse", "grafana", "prometheus", "pyramid"}) {
		t.Fatalf("services %v, want clickhouse, grafana, prometheus and pyramid", got)
	}
	pyr := project.Services["pyramid"]
	if pyr.Build == nil || pyr.Build.Dockerfile != "Dockerfile" {
		t.Errorf("pyramid is not built from the repository's Dockerfile: %+v", pyr.Build)
	}
	if _, err := os.Stat(filepath.Join(pyr.Build.Context, pyr.Build.Dockerfile)); err != nil {
		t.Errorf("pyramid's build context: %v", err)
	}
	settings := pyramidSettings(t)
	for name, v := range pyr.Environment {
		if !slices.Contains(settings, name) {
			t.Errorf("pyramid's environment sets %s, which pyramid does not read", name)
		}
		if name == "PYRAMID_CLICKHOUSE_ADDR" && (v == nil || !strings.HasPrefix(*v, "clickhouse:")) {
			t.Errorf("PYRAMID_CLICKHOUSE_ADDR = %v, want the clickhouse service", v)
		}
	}
	if dep, ok := pyr.DependsOn["clickhouse"]; !ok || dep.Condition != types.ServiceConditionHealthy {
		t.Errorf("pyramid does not wait for a healthy ClickHouse: %+v", pyr.DependsOn)
	}
	// Every file the services mount exists.
	for _, name := range project.ServiceNames() {
		for _, v := range project.Services[name].Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("service %s mounts %s: %v", name, v.Source, err)
				}
			}
		}
	}
	checkPrometheusConfig(t, "compose/prometheus.yml", "pyramid:9201")
	checkDashboard(t, "compose/grafana/dashboards/pyramid.json", pyramidMetrics(t))
	var ds struct {
		Datasources []struct{ Name, Type, URL string } `json:"datasources"`
	}
	raw, err := os.ReadFile("compose/grafana/provisioning/datasources/pyramid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Grafana's format has more fields than this struct reads, so not strictly.
	if err := yaml.Unmarshal(raw, &ds); err != nil {
		t.Fatalf("parse the data sources: %v", err)
	}
	if !slices.ContainsFunc(ds.Datasources, func(d struct{ Name, Type, URL string }) bool {
		return d.Type == "prometheus" && d.URL == "http://pyramid:9201"
	}) {
		t.Errorf("no Grafana data source queries pyramid's API directly: %+v", ds.Datasources)
	}
}

// checkPrometheusConfig loads a Prometheus config with Prometheus's own loader and
// requires remote write and read to pyramid at host.
func checkPrometheusConfig(t *testing.T, path, host string) {
	t.Helper()
	cfg, err := config.LoadFile(path, false, nil)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	checkPrometheus(t, cfg, host)
}

func checkPrometheus(t *testing.T, cfg *config.Config, host string) {
	t.Helper()
	if len(cfg.RemoteWriteConfigs) != 1 || len(cfg.RemoteReadConfigs) != 1 {
		t.Fatalf("%d remote writes and %d remote reads, want one of each", len(cfg.RemoteWriteConfigs), len(cfg.RemoteReadConfigs))
	}
	for what, u := range map[string]*url.URL{"/api/v1/write": cfg.RemoteWriteConfigs[0].URL.URL, "/api/v1/read": cfg.RemoteReadConfigs[0].URL.URL} {
		if u.Host != host || u.Path != what {
			t.Errorf("remote %s goes to %s, want http://%s%s", what, u, host, what)
		}
	}
	if !cfg.RemoteWriteConfigs[0].SendNativeHistograms {
		t.Errorf("remote write does not send native histograms, which pyramid stores")
	}
}

// checkDashboard parses a Grafana dashboard and every panel query, which must name only
// metrics pyramid registers (histogram series through their _bucket).
func checkDashboard(t *testing.T, path string, metrics map[string]bool) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	p := parser.NewParser(parser.Options{})
	queries := 0
	for _, panel := range d.Panels {
		for _, target := range panel.Targets {
			expr, err := p.ParseExpr(target.Expr)
			if err != nil {
				t.Errorf("panel %q: %v", panel.Title, err)
				continue
			}
			queries++
			for _, sel := range parser.ExtractSelectors(expr) {
				for _, m := range sel {
					if m.Name != "__name__" {
						continue
					}
					name := strings.TrimSuffix(m.Value, "_bucket")
					if !metrics[name] {
						t.Errorf("panel %q queries %s, which pyramid does not export", panel.Title, m.Value)
					}
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("%s has %d queries; want a panel for ingest, reads, tiers and the materializer", path, queries)
	}
}

// TestKubernetesKit decodes every manifest strictly into the Kubernetes API's own Go types
// (k8s.io/api), so a misspelt or misplaced field fails, and checks the pyramid containers:
// probes on /-/ready and /-/healthy, resources, settings pyramid reads, and in the
// sidecar, a Prometheus config pointing at pyramid on localhost.
func TestKubernetesKit(t *testing.T) {
	settings := pyramidSettings(t)
	pyramids := 0
	for _, file := range []string{"kubernetes/sidecar.yaml", "kubernetes/shared.yaml"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
			var head struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s document %d: %v", file, i, err)
			}
			var pod *corev1.PodTemplateSpec
			switch head.Kind {
			case "StatefulSet":
				var o appsv1.StatefulSet
				strict(t, file, doc, &o)
				pod = &o.Spec.Template
			case "Deployment":
				var o appsv1.Deployment
				strict(t, file, doc, &o)
				pod = &o.Spec.Template
			case "Service":
				var o corev1.Service
				strict(t, file, doc, &o)
			case "ConfigMap":
				var o corev1.ConfigMap
				strict(t, file, doc, &o)
				cfg, err := config.Load(o.Data["prometheus.yml"], nil)
				if err != nil {
					t.Fatalf("%s: the Prometheus config does not load: %v", file, err)
				}
				checkPrometheus(t, cfg, "localhost:9201")
			default:
				t.Fatalf("%s document %d: kind %q", file, i, head.Kind)
			}
			if pod == nil {
				continue
			}
			for _, c := range pod.Spec.Containers {
				if c.Name != "pyramid" {
					continue
				}
				pyramids++
				checkPyramidContainer(t, file, c, settings)
			}
		}
	}
	if pyramids != 2 {
		t.Errorf("%d pyramid containers, want one in the sidecar and one in the shared Deployment", pyramids)
	}
}

func strict(t *testing.T, file string, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func checkPyramidContainer(t *testing.T, file string, c corev1.Container, settings []string) {
	t.Helper()
	where := fmt.Sprintf("%s, container %s", file, c.Name)
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/-/ready" {
		t.Errorf("%s: no readiness probe on /-/ready", where)
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" {
		t.Errorf("%s: no liveness probe on /-/healthy", where)
	}
	if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: no memory request and limit", where)
	}
	var limit string
	for _, e := range c.Env {
		if !slices.Contains(settings, e.Name) {
			t.Errorf("%s sets %s, which pyramid does not read", where, e.Name)
		}
		if e.Name == "PYRAMID_MEMORY_LIMIT" {
			limit = e.Value
		}
	}
	// pyramid keeps itself under PYRAMID_MEMORY_LIMIT; a container limit below it would
	// have the kernel kill it first.
	if limit == "" || c.Resources.Limits.Memory().CmpInt64(mustAtoi(t, limit)) < 0 {
		t.Errorf("%s: PYRAMID_MEMORY_LIMIT %q is not within the container's memory limit %s", where, limit, c.Resources.Limits.Memory())
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q is not a number: %v", s, err)
	}
	return n
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
