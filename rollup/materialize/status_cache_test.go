package materialize_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pyramid-metrics/pyramid/adapter/store"
	"github.com/pyramid-metrics/pyramid/schema/schematest"
)

// stallProxy passes TCP connections through to a server until stall is called; from then
// on it passes no more bytes either way, and neither do connections made later, which it
// still accepts: a server that hangs rather than one that is gone. resume lets the bytes
// through again.
type stallProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	gate     chan struct{} // closed while bytes may pass
	conns    []net.Conn
}

func startStallProxy(t *testing.T, upstream string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, upstream: upstream, gate: make(chan struct{})}
	close(p.gate)
	go p.accept()
	t.Cleanup(func() {
		p.resume()
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed by the test's cleanup
		}
		server, err := net.Dial("tcp", p.upstream)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		go p.pipe(server, client)
		go p.pipe(client, server)
	}
}

// pipe copies src to dst, holding each read back while the proxy stalls.
func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			gate := p.gate
			p.mu.Unlock()
			<-gate
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default:
	}
}

func (p *stallProxy) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// tierFigures gathers the pyramid_tier_* metrics: rows by tier, and the figures' age (-1
// when absent).
func tierFigures(t *testing.T, g prometheus.Gatherer) (rows map[string]float64, age float64) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	rows, age = map[string]float64{}, -1
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "pyramid_tier_rows":
				rows[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			case "pyramid_tier_status_age_seconds":
				age = m.GetGauge().GetValue()
			}
		}
	}
	return rows, age
}

// waitTierFigures gathers until cond accepts the figures, and fails t after a minute or
// at once when cond returns a stopErr.
func waitTierFigures(t *testing.T, g prometheus.Gatherer, what string, cond func(rows map[string]float64, age float64) error) (map[string]float64, float64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		rows, age := tierFigures(t, g)
		err := cond(rows, age)
		if err == nil {
			return rows, age
		}
		var stop stopErr
		if errors.As(err, &stop) {
			t.Fatal(stop.error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("wait for %s: %v (rows %v, age %v)", what, err, rows, age)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStatusMetricsWhileClickHouseStalls: /metrics serves the tier figures from a cache.
// While ClickHouse hangs (a proxy that passes no bytes), every gather still returns, with
// the figures last read and an age that grows; once ClickHouse answers again, the figures
// are read afresh.
func TestStatusMetricsWhileClickHouseStalls(t *testing.T) {
	e := newEnv(t, "raw:60d,5m:365d,1h:0")
	e.write(t, counterSamples(9, 91, epoch+700*hour, 100)) // 101 rows
	proxy := startStallProxy(t, schematest.Addr(t))
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{proxy.addr()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.New(store.Config{Database: e.db, Tiers: e.tiers, TierRefresh: time.Minute}, conn, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(store.NewStatusCollector(st, logger))

	_, fresh := waitTierFigures(t, reg, "the first figures", func(rows map[string]float64, age float64) error {
		if rows["raw"] != 101 {
			return errors.New("not read yet")
		}
		return nil
	})

	proxy.stall()
	// More rows arrive, which the hung server can no longer report. Gathers go on until a
	// refresh has been tried against it: the figures are then older than the least age
	// at which a scrape refreshes them.
	e.write(t, counterSamples(9, 92, epoch+700*hour, 100))
	gathers := 0
	_, stale := waitTierFigures(t, reg, "the figures to age past a refresh", func(rows map[string]float64, age float64) error {
		gathers++
		if rows["raw"] != 101 {
			return stopErr{fmt.Errorf("gather %d while ClickHouse hangs: raw rows %v; want the cached 101", gathers, rows["raw"])}
		}
		if age < 7 {
			return errors.New("not old enough yet")
		}
		return nil
	})
	if stale <= fresh {
		t.Errorf("age %v while ClickHouse hangs, not above the %v of the fresh figures", stale, fresh)
	}
	t.Logf("%d gathers while ClickHouse hung, all with the cached figures; age %.1fs", gathers, stale)

	proxy.resume()
	waitTierFigures(t, reg, "fresh figures once ClickHouse answers", func(rows map[string]float64, age float64) error {
		if rows["raw"] != 202 || age >= stale {
			return errors.New("not refreshed yet")
		}
		return nil
	})
}

// stopErr is a condition's verdict that waiting cannot change.
type stopErr struct{ error }
