package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/pyramid-metrics/pyramid/adapter/auth/authtest"
)

// The identities of the auth test's web config, with their secrets.
const (
	authWriterPass = "writer-secret"
	authReaderPass = "reader-secret"
	authPushToken  = "push-3f9c2a7e51d84b06a1c7e9d2"
	authPullToken  = "pull-8b1e4d6f2a9c7035e4b8d1f6"
)

// TestAuthWithPrometheus runs Prometheus 2.42 against pyramid served over TLS (a CA made in
// the test) with the web config: Prometheus remote-writes with basic_auth and with an
// authorization bearer token, and reads back through remote_read with both; queues with a
// wrong password, a wrong token and read-only credentials are refused (401, 403) and
// nothing they sent is stored. Direct requests check what Prometheus cannot show: a writer
// cannot read, probes stay open as configured, /metrics does not.
func TestAuthWithPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of about half a minute; skipped in -short mode")
	}
	tools := requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "prometheus")
	work := t.TempDir()
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf("[%5.1fs] "+format, append([]any{time.Since(began).Seconds()}, args...)...)
	}
	bin := buildPyramid(t, work)
	ch := startClickHouse(t)
	logf("ClickHouse ready on %s", ch.addr())

	ca := authtest.NewCA(t)
	cert := ca.Server(t, "pyramid")
	webConfig := filepath.Join(work, "web.yml")
	if err := os.WriteFile(webConfig, []byte(fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
basic_auth_users:
  writer: %s
  reader: %s
pyramid:
  user_permissions:
    writer: [write]
    reader: [read]
  bearer_tokens:
    push: {sha256: %s, permissions: [write]}
    pull: {sha256: %s, permissions: [read]}
  unauthenticated_paths: [/-/healthy, /-/ready]
`, cert.CertFile, cert.KeyFile, authtest.Bcrypt(t, authWriterPass), authtest.Bcrypt(t, authReaderPass),
		authtest.SHA256(authPushToken), authtest.SHA256(authPullToken))), 0o600); err != nil {
		t.Fatal(err)
	}

	const db = "e2e_auth"
	hostPort := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	pyr := startProcess(t, "pyramid", filepath.Join(work, "pyramid.log"), []string{
		"PYRAMID_LISTEN_ADDR=" + hostPort,
		"PYRAMID_CLICKHOUSE_ADDR=" + ch.addr(),
		"PYRAMID_CLICKHOUSE_DATABASE=" + db,
		"PYRAMID_WEB_CONFIG_FILE=" + webConfig,
		"PYRAMID_BATCH_WAIT=100ms",
	}, bin)
	pyrURL := "https://" + hostPort
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	// /-/ready is open in this config, so the probe needs no credentials.
	waitFor(t, "pyramid to be ready over TLS", 90*time.Second, func() error {
		if err := pyr.checkAlive(); err != nil {
			return stopWaiting(err)
		}
		code, body, err := request(client, http.MethodGet, pyrURL+"/-/ready", "")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("status %d: %s", code, body)
		}
		return err
	})
	logf("pyramid ready on %s", pyrURL)

	promBin := tools["prometheus"]
	promAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	writer := startAuthPrometheus(t, promBin, work, "prometheus-writer", promAddr, promWriterConfig(promAddr, hostPort, pyrURL, ca.CertFile))
	logf("Prometheus writing to pyramid, on %s", writer.url)

	// Wait until both good queues have stored samples and every bad queue has had answers
	// (Prometheus counts a queue's samples once pyramid has answered for them).
	good := []string{"basic", "bearer"}
	bad := []string{"wrong_password", "wrong_token", "read_only"}
	queueMetric := func(name, queue string) (float64, error) {
		return sumMetric(writer.url+"/metrics", name, map[string]string{"remote_name": queue})
	}
	waitFor(t, "Prometheus's queues to be answered", 2*time.Minute, func() error {
		if err := allAlive(pyr, writer.process); err != nil {
			return stopWaiting(err)
		}
		stored, err := seriesByLabel(ch.addr(), db, "via")
		if err != nil {
			return err
		}
		for _, q := range good {
			if stored[q] == 0 {
				return fmt.Errorf("no series from queue %s stored yet (stored: %v)", q, stored)
			}
		}
		for _, q := range bad {
			sent, err := queueMetric("prometheus_remote_storage_samples_total", q)
			if err != nil {
				return err
			}
			if sent == 0 {
				return fmt.Errorf("queue %s has had no answer yet", q)
			}
		}
		return nil
	})
	// The writer keeps running, so that the readers below find recent samples.
	stored, err := seriesByLabel(ch.addr(), db, "via")
	if err != nil {
		t.Fatalf("read pyramid's series: %v", err)
	}
	logf("stored series by queue: %v", stored)
	if got := slices.Sorted(maps.Keys(stored)); !slices.Equal(got, good) {
		t.Errorf("pyramid holds series from queues %v, want only %v: refused credentials must store nothing", got, good)
	}
	for _, q := range append(good, bad...) {
		sent, err1 := queueMetric("prometheus_remote_storage_samples_total", q)
		failed, err2 := queueMetric("prometheus_remote_storage_samples_failed_total", q)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("read Prometheus's metrics: %v", err)
		}
		if isBad := slices.Contains(bad, q); (isBad && failed == 0) || (!isBad && failed != 0) {
			t.Errorf("queue %s: Prometheus gave up on %v of %v samples", q, failed, sent)
		}
	}
	for _, want := range []string{"401 Unauthorized", "403 Forbidden"} {
		if !strings.Contains(tail(writer.logPath, 1000), want) {
			t.Errorf("Prometheus's log shows no %q from pyramid", want)
		}
	}

	// Remote read through Prometheus, once with each credential. Prometheus turns a refused
	// read into a warning, which runQuery reports as an error.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, r := range []struct{ name, auth string }{
		{"prometheus-read-basic", fmt.Sprintf("basic_auth:\n      username: reader\n      password: %s", authReaderPass)},
		{"prometheus-read-bearer", fmt.Sprintf("authorization:\n      credentials: %s", authPullToken)},
	} {
		cfg := fmt.Sprintf("scrape_configs: []\nremote_read:\n  - url: %q\n    read_recent: true\n    %s\n    tls_config:\n      ca_file: %s\n",
			pyrURL+"/api/v1/read", r.auth, ca.CertFile)
		reader := startQueryPrometheus(t, promBin, work, r.name, filepath.Join(work, r.name), cfg)
		res, err := runQuery(ctx, reader.url, `count by (via) ({via!=""})`, instantAt("now", time.Now().UnixMilli()))
		if err != nil {
			t.Errorf("%s: remote read: %v", r.name, err)
			continue
		}
		if got := slices.Sorted(maps.Keys(res.series)); !slices.Equal(got, []string{`{via="basic"}`, `{via="bearer"}`}) {
			t.Errorf("%s: remote read returned %v, want the series of the basic and bearer queues", r.name, got)
		}
		reader.stop(10 * time.Second)
	}
	logf("remote read through Prometheus with basic_auth and with a bearer token")

	// What Prometheus cannot show: status codes and challenges, probes, /metrics.
	for _, c := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"writer cannot read", http.MethodPost, "/api/v1/read", basicHeader("writer", authWriterPass), http.StatusForbidden},
		{"write token cannot read", http.MethodPost, "/api/v1/read", "Bearer " + authPushToken, http.StatusForbidden},
		{"writer cannot read tier status", http.MethodGet, "/api/v1/status/tiers", basicHeader("writer", authWriterPass), http.StatusForbidden},
		{"reader reads tier status", http.MethodGet, "/api/v1/status/tiers", basicHeader("reader", authReaderPass), http.StatusOK},
		{"wrong password cannot read", http.MethodPost, "/api/v1/read", basicHeader("reader", authWriterPass), http.StatusUnauthorized},
		{"no credentials cannot write", http.MethodPost, "/api/v1/write", "", http.StatusUnauthorized},
		{"healthy is open", http.MethodGet, "/-/healthy", "", http.StatusOK},
		{"metrics is not open", http.MethodGet, "/metrics", "", http.StatusUnauthorized},
		{"metrics for any identity", http.MethodGet, "/metrics", "Bearer " + authPushToken, http.StatusOK},
	} {
		code, body, err := request(client, c.method, pyrURL+c.path, c.auth)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		} else if code != c.want {
			t.Errorf("%s: %s %s answered %d (%s), want %d", c.name, c.method, c.path, code, body, c.want)
		}
	}
	if code, _, err := request(http.DefaultClient, http.MethodGet, "http://"+hostPort+"/-/healthy", ""); err == nil && code == http.StatusOK {
		t.Error("pyramid answers plain HTTP on its TLS port")
	}
	_, metrics, err := request(client, http.MethodGet, pyrURL+"/metrics", basicHeader("reader", authReaderPass))
	if err != nil {
		t.Fatalf("read pyramid's metrics: %v", err)
	}
	for _, reason := range []string{"missing_credentials", "wrong_credentials", "forbidden"} {
		if v := metricValue(metrics, "pyramid_auth_failures_total", "reason", reason); v <= 0 {
			t.Errorf("pyramid_auth_failures_total{reason=%q} = %v, want > 0", reason, v)
		}
	}
	logf("checked statuses, open probes and failure counts")
}

// promWriterConfig is the config of the writing Prometheus: it scrapes itself, and pyramid
// over TLS with the reader's credentials, and remote-writes to pyramid through five queues
// that differ only in credentials. Each queue labels what it sends with via=<queue>, so
// that pyramid's tables tell which credentials stored what.
func promWriterConfig(self, pyramidHostPort, pyramidURL, caFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global:
  scrape_interval: 1s
  scrape_timeout: 1s

scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [%q]
  - job_name: pyramid
    scheme: https
    basic_auth: {username: reader, password: %s}
    tls_config: {ca_file: %s}
    static_configs:
      - targets: [%q]

remote_write:
`, self, authReaderPass, caFile, pyramidHostPort)
	for _, q := range []struct{ name, auth string }{
		{"basic", "basic_auth: {username: writer, password: " + authWriterPass + "}"},
		{"bearer", "authorization: {credentials: " + authPushToken + "}"},
		{"wrong_password", "basic_auth: {username: writer, password: not-" + authWriterPass + "}"},
		{"wrong_token", "authorization: {credentials: not-" + authPushToken + "}"},
		{"read_only", "basic_auth: {username: reader, password: " + authReaderPass + "}"},
	} {
		fmt.Fprintf(&b, `  - name: %s
    url: %q
    %s
    tls_config: {ca_file: %s}
    write_relabel_configs:
      - target_label: via
        replacement: %s
    queue_config: {batch_send_deadline: 1s, min_backoff: 50ms, max_backoff: 1s}
`, q.name, pyramidURL+"/api/v1/write", q.auth, caFile, q.name)
	}
	return b.String()
}

// startAuthPrometheus runs Prometheus on addr with cfg and waits until it is ready.
func startAuthPrometheus(t *testing.T, bin, work, name, addr, cfg string) *prometheusServer {
	t.Helper()
	cfgPath := filepath.Join(work, name+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("write %s config: %v", name, err)
	}
	p := startProcess(t, name, filepath.Join(work, name+".log"), nil, bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(work, name),
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	s := &prometheusServer{process: p, url: "http://" + addr, cfgPath: cfgPath}
	waitReady(t, p, s.url+"/-/ready")
	return s
}

// request sends a request with an Authorization header (none if auth is empty) and returns
// the status and body.
func request(client *http.Client, method, url, auth string) (int, []byte, error) {
	req, err := http.NewRequest(method, url, strings.NewReader("not a real body"))
	if err != nil {
		return 0, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		return 0, nil, fmt.Errorf("%s %s: 401 without WWW-Authenticate", method, url)
	}
	return resp.StatusCode, bytes.TrimSpace(body), err
}

func basicHeader(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pass)
	return req.Header.Get("Authorization")
}

// metricValue finds name{label="value"} in a metrics page, or returns -1.
func metricValue(page []byte, name, label, value string) float64 {
	prefix := fmt.Sprintf("%s{%s=%q} ", name, label, value)
	sc := bufio.NewScanner(bytes.NewReader(page))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
				return v
			}
		}
	}
	return -1
}

// seriesByLabel counts pyramid's catalogued series by the value of one label, read
// straight from ClickHouse; series without the label are not counted.
func seriesByLabel(addr, db, label string) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, Auth: clickhouse.Auth{Database: "default"}, DialTimeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open ClickHouse %s: %w", addr, err)
	}
	defer conn.Close()
	rows, err := conn.Query(ctx, "SELECT DISTINCT fingerprint, label_names, label_values FROM "+db+".series")
	if err != nil {
		return nil, fmt.Errorf("query series: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var (
			fp            uint64
			names, values []string
		)
		if err := rows.Scan(&fp, &names, &values); err != nil {
			return nil, fmt.Errorf("scan series: %w", err)
		}
		if i := slices.Index(names, label); i >= 0 && i < len(values) {
			out[values[i]]++
		}
	}
	return out, rows.Err()
}
