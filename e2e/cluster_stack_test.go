package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/pyramid-metrics/pyramid/adapter"
)

// clusterName is the cluster deploy/cluster.sh joins its servers in.
const clusterName = "pyramid"

// clickhouseCluster is a local ClickHouse cluster run through deploy/cluster.sh: one
// ZooKeeper and 2 shards x 2 replicas, so the tests fail and restart servers the way
// operators do with the same script.
type clickhouseCluster struct {
	script, dir string
	nodes       []clusterNode
}

// clusterNode is one server of the cluster as `cluster.sh nodes` lists it.
type clusterNode struct {
	name           string
	tcp, http      int
	shard, replica int
}

func (n clusterNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.tcp)) }

// startCluster starts a 2x2 cluster with its state in a fresh temporary directory and
// stops it when t ends. It needs ZooKeeper (Debian's zookeeper package) besides what the
// single-server tests need.
func startCluster(t testing.TB) *clickhouseCluster {
	t.Helper()
	requireTools(t, "bash", "clickhouse-server", "clickhouse-client", "java")
	if _, err := os.Stat("/usr/share/java/zookeeper.jar"); err != nil {
		msg := "ZooKeeper is not installed (deploy/install.sh installs it)"
		if os.Getenv("PYRAMID_TEST_REQUIRE") == "1" {
			t.Fatal(msg + " but PYRAMID_TEST_REQUIRE=1")
		}
		t.Skip(msg)
	}
	script, err := filepath.Abs("../deploy/cluster.sh")
	if err != nil {
		t.Fatalf("locate deploy/cluster.sh: %v", err)
	}
	c := &clickhouseCluster{script: script, dir: t.TempDir()}
	// ZooKeeper and three ports per server: 13 in a row.
	base := freePortRange(t, 13)
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("---- last lines of %s's ClickHouse error log:\n%s", n.name, tail(filepath.Join(c.dir, n.name, "log", "clickhouse-server.err.log"), 15))
			}
		}
		if _, err := c.run("stop"); err != nil {
			t.Logf("stop the cluster: %v; killing its servers", err)
			for _, n := range c.nodes {
				if _, err := c.run("node", "kill", n.name); err != nil {
					t.Errorf("kill %s: %v", n.name, err)
				}
			}
		}
	})
	if _, err := c.run("start", strconv.Itoa(base), "2", "2"); err != nil {
		t.Fatalf("start the cluster: %v", err)
	}
	out, err := c.run("nodes")
	if err != nil {
		t.Fatalf("list the cluster's servers: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var n clusterNode
		if _, err := fmt.Sscan(line, &n.name, &n.tcp, &n.http, &n.shard, &n.replica); err != nil {
			t.Fatalf("parse cluster.sh nodes line %q: %v", line, err)
		}
		c.nodes = append(c.nodes, n)
	}
	if len(c.nodes) != 4 {
		t.Fatalf("cluster.sh nodes lists %d servers, want 4:\n%s", len(c.nodes), out)
	}
	return c
}

// freePortRange finds n consecutive free loopback ports below the kernel's ephemeral range
// (which starts at 32768), so that no port freePort hands out can fall inside it.
func freePortRange(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		base := 20000 + rand.IntN(12000-n)
		free := true
		for p := base; p < base+n && free; p++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return base
		}
	}
	t.Fatalf("found no %d consecutive free ports", n)
	return 0
}

// run runs cluster.sh with the command and the cluster's directory placed as the script
// wants them, and returns its output.
func (c *clickhouseCluster) run(cmd string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var argv []string
	switch cmd {
	case "node", "zookeeper":
		argv = []string{c.script, cmd, args[0], c.dir}
		argv = append(argv, args[1:]...)
	default:
		argv = append([]string{c.script, cmd, c.dir}, args...)
	}
	out, err := exec.CommandContext(ctx, "bash", argv...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("cluster.sh %s %s: %w\n%s", cmd, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// addrs is every server's tcp address, comma-separated, as PYRAMID_CLICKHOUSE_ADDR takes it.
func (c *clickhouseCluster) addrs() string {
	var a []string
	for _, n := range c.nodes {
		a = append(a, n.addr())
	}
	return strings.Join(a, ",")
}

func (c *clickhouseCluster) node(t testing.TB, name string) clusterNode {
	t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no server %s in the cluster", name)
	return clusterNode{}
}

// nodeAction starts, stops (SIGTERM) or kills (SIGKILL) one server; start returns once it
// answers queries.
func (c *clickhouseCluster) nodeAction(t testing.TB, action, name string) {
	t.Helper()
	if _, err := c.run("node", action, name); err != nil {
		t.Fatal(err)
	}
}

// zookeeper starts or stops ZooKeeper; its data is kept.
func (c *clickhouseCluster) zookeeper(t testing.TB, action string) {
	t.Helper()
	if _, err := c.run("zookeeper", action); err != nil {
		t.Fatal(err)
	}
}

// query runs a query returning one unsigned number on one server.
func (n clusterNode) query(ctx context.Context, q string, args ...any) (uint64, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{n.addr()}, DialTimeout: 5 * time.Second})
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", n.name, err)
	}
	defer conn.Close()
	var v uint64
	if err := conn.QueryRow(ctx, q, args...).Scan(&v); err != nil {
		return 0, fmt.Errorf("query %s: %w", n.name, err)
	}
	return v, nil
}

// localSamples counts the distinct (series, timestamp) pairs in [from, to] (ms) in one
// server's own replica of the samples table. Distinct, because replicas merge their parts
// at different moments and a merge collapses retried rows.
func (n clusterNode) localSamples(ctx context.Context, db string, from, to int64) (uint64, error) {
	return n.query(ctx, "SELECT uniqExact(fingerprint, ts) FROM "+db+".samples_local WHERE ts >= ? AND ts <= ?", from, to)
}

// shardOf is the shard (0 or 1, in the order remote_servers lists them) that the 2-shard
// cluster's Distributed tables send a scrape target's rows to: target modulo the shards'
// total weight.
func shardOf(job, instance string) int { return int(adapter.TargetHash(job, instance) % 2) }

// writeCounts is what pyramid has answered to remote writes so far: 2xx, 503 and any
// other status.
type writeCounts struct{ ok, unavailable, other float64 }

// readWriteCounts sums pyramid_http_requests_total of the write handler by kind of answer.
func readWriteCounts(pyramidURL string) (writeCounts, error) {
	samples, err := scrapeMetric(pyramidURL+"/metrics", "pyramid_http_requests_total")
	if err != nil {
		return writeCounts{}, err
	}
	var c writeCounts
	for _, s := range samples {
		if s.labels["handler"] != "write" {
			continue
		}
		switch code := s.labels["code"]; {
		case strings.HasPrefix(code, "2"):
			c.ok += s.value
		case code == "503":
			c.unavailable += s.value
		default:
			c.other += s.value
		}
	}
	return c, nil
}

// writeMonitor polls pyramid's write answers twice a second, so that the test can say
// afterwards when writes were refused and when they were accepted again.
type writeMonitor struct {
	mu     sync.Mutex
	points []monitorPoint
	stop   chan struct{}
	done   chan struct{}
}

type monitorPoint struct {
	at time.Time
	writeCounts
}

// startWriteMonitor polls pyramid at pyramidURL until t ends.
func startWriteMonitor(t testing.TB, pyramidURL string) *writeMonitor {
	m := &writeMonitor{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if c, err := readWriteCounts(pyramidURL); err == nil {
				m.mu.Lock()
				m.points = append(m.points, monitorPoint{time.Now(), c})
				m.mu.Unlock()
			}
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { close(m.stop); <-m.done })
	return m
}

// refusals describes the 503s of [from, to): how many, and when the first and the last
// came and the first 2xx after the last (to the monitor's resolution; zero if none).
type refusals struct {
	count                  float64
	first, last, recovered time.Time
}

func (m *writeMonitor) refusals(from, to time.Time) refusals {
	m.mu.Lock()
	defer m.mu.Unlock()
	var r refusals
	for i := 1; i < len(m.points); i++ {
		p, prev := m.points[i], m.points[i-1]
		if p.at.Before(from) || !p.at.Before(to) {
			continue
		}
		if d := p.unavailable - prev.unavailable; d > 0 {
			r.count += d
			if r.first.IsZero() {
				r.first = p.at
			}
			r.last = p.at
			r.recovered = time.Time{}
		} else if p.ok > prev.ok && !r.last.IsZero() && r.recovered.IsZero() {
			r.recovered = p.at
		}
	}
	return r
}

// last is the newest poll, or zero counts before the first.
func (m *writeMonitor) last() monitorPoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.points) == 0 {
		return monitorPoint{}
	}
	return m.points[len(m.points)-1]
}
