package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
)

// openMetricsWriter writes generated data as OpenMetrics text for `promtool tsdb
// create-blocks-from openmetrics`, which is how the tests give a Prometheus TSDB the same
// samples they send pyramid. Values are written in the shortest form that parses back to the
// same bits, timestamps in whole seconds (the generators put every sample on one). A
// series' samples must come together and in time order.
type openMetricsWriter struct {
	f            *os.File
	w            *bufio.Writer
	prefix, line []byte
	err          error
}

func createOpenMetrics(path string) (*openMetricsWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &openMetricsWriter{f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

// series starts the samples of lset.
func (o *openMetricsWriter) series(lset labels.Labels) {
	o.prefix = append(o.prefix[:0], lset.Get("__name__")...)
	o.prefix = append(o.prefix, '{')
	first := true
	lset.Range(func(l labels.Label) {
		if l.Name == "__name__" {
			return
		}
		if !first {
			o.prefix = append(o.prefix, ',')
		}
		first = false
		o.prefix = append(o.prefix, l.Name...)
		o.prefix = append(o.prefix, '=')
		o.prefix = strconv.AppendQuote(o.prefix, l.Value)
	})
	o.prefix = append(o.prefix, "} "...)
}

// sample adds one sample of the current series; the first write error is kept for close.
func (o *openMetricsWriter) sample(tsMs int64, v float64) {
	if o.err != nil {
		return
	}
	o.line = append(o.line[:0], o.prefix...)
	o.line = strconv.AppendFloat(o.line, v, 'g', -1, 64)
	o.line = append(o.line, ' ')
	o.line = strconv.AppendInt(o.line, tsMs/1000, 10)
	o.line = append(o.line, '\n')
	_, o.err = o.w.Write(o.line)
}

// close ends the text and the file, and reports the first error.
func (o *openMetricsWriter) close() error {
	if o.err == nil {
		_, o.err = o.w.WriteString("# EOF\n")
	}
	if o.err == nil {
		o.err = o.w.Flush()
	}
	if err := o.f.Close(); o.err == nil {
		o.err = err
	}
	return o.err
}

// postRemoteWrite sends a snappy-compressed remote-write body with Prometheus's headers. A
// 5xx is retried once a second, up to 20 times, as Prometheus retries it; any other status
// but 2xx is an error.
func postRemoteWrite(ctx context.Context, url string, body []byte) error {
	for attempt := 1; ; attempt++ {
		resp, msg, err := postSnappy(ctx, url, body, false)
		if err != nil {
			return err
		}
		switch {
		case resp.StatusCode/100 == 2:
			return nil
		case resp.StatusCode/100 == 5 && attempt < 20:
			time.Sleep(time.Second)
		default:
			return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg[:min(len(msg), 4096)]))
		}
	}
}

// postSnappy posts a snappy-compressed protobuf body once, with remote write's headers or,
// with read set, remote read's, and returns the response and its body. An error reading
// the body (a stream broken off) comes with the response and what arrived.
func postSnappy(ctx context.Context, url string, body []byte, read bool) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	if read {
		req.Header.Set("X-Prometheus-Remote-Read-Version", "0.1.0")
	} else {
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// postRead sends a remote-read request to baseURL's /api/v1/read (see postSnappy).
func postRead(ctx context.Context, baseURL string, rr *prompb.ReadRequest) (*http.Response, []byte, error) {
	raw, err := rr.Marshal()
	if err != nil {
		return nil, nil, fmt.Errorf("marshal read request: %w", err)
	}
	return postSnappy(ctx, baseURL+"/api/v1/read", snappy.Encode(nil, raw), true)
}

// decodeSamples decodes a 200 SAMPLES remote-read response.
func decodeSamples(resp *http.Response, body []byte) (*prompb.ReadResponse, error) {
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("remote read: %s: %q", resp.Status, body[:min(200, len(body))])
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		return nil, fmt.Errorf("remote read answered Content-Type %q, want SAMPLES (application/x-protobuf)", ct)
	}
	dec, err := snappy.Decode(nil, body)
	if err != nil {
		return nil, fmt.Errorf("snappy-decode the read response: %w", err)
	}
	var rr prompb.ReadResponse
	if err := rr.Unmarshal(dec); err != nil {
		return nil, fmt.Errorf("unmarshal the read response: %w", err)
	}
	return &rr, nil
}
