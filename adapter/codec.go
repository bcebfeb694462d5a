package adapter

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/golang/snappy"
)

// Remote-write protobuf messages, as named in the Content-Type's proto parameter.
const (
	protoWriteV1 = "prometheus.WriteRequest"
	protoWriteV2 = "io.prometheus.write.v2.Request"
)

// checkWriteHeaders accepts Content-Encoding snappy with Content-Type application/x-protobuf
// and returns the message named by its proto parameter: none or prometheus.WriteRequest is
// remote write 1.0, io.prometheus.write.v2.Request is 2.0. Anything else is refused with
// 415, because a 2xx for a body that was not understood would silently lose data.
func checkWriteHeaders(h http.Header) (string, error) {
	if enc := h.Get("Content-Encoding"); !strings.EqualFold(enc, "snappy") {
		return "", fmt.Errorf("%w: Content-Encoding %q, want snappy", ErrUnsupportedMediaType, enc)
	}
	ct := h.Get("Content-Type")
	if ct == "" {
		return protoWriteV1, nil // Prometheus always sends one; other senders get the benefit of the doubt.
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", fmt.Errorf("%w: Content-Type %q: %v", ErrUnsupportedMediaType, ct, err)
	}
	if mt != "application/x-protobuf" {
		return "", fmt.Errorf("%w: Content-Type %q, want application/x-protobuf", ErrUnsupportedMediaType, ct)
	}
	switch proto := params["proto"]; proto {
	case "", protoWriteV1:
		return protoWriteV1, nil
	case protoWriteV2:
		return protoWriteV2, nil
	default:
		return "", fmt.Errorf("%w: proto %q, want %s or %s", ErrUnsupportedMediaType, proto, protoWriteV1, protoWriteV2)
	}
}

// decompress undoes snappy block compression, checking the decoded length in the snappy
// header against maxDecoded and charging it (charge may be nil) before allocating
// anything. The result is dst when it has room, else a new buffer; body may be reused
// after return.
func decompress(body []byte, maxDecoded int64, charge func(int64) error, dst []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy header: %v", ErrDecode, err)
	}
	if int64(n) > maxDecoded {
		return nil, fmt.Errorf("%w: decompresses to %d bytes, over the limit of %d", ErrTooLarge, n, maxDecoded)
	}
	if charge != nil {
		if err := charge(int64(n)); err != nil {
			return nil, fmt.Errorf("decompress %d bytes: %w", n, err)
		}
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	raw, err := snappy.Decode(dst[:n], body)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy block of %d bytes: %v", ErrDecode, len(body), err)
	}
	return raw, nil
}

// decodeWriteRequest decompresses and parses a remote-write body of the given proto
// (protoWriteV1 or protoWriteV2), charging what it allocates to charge (nil charges
// nothing). known, when not nil, is the label cache of 1.0 requests. bufs, when not nil,
// lends its buffers to the request and takes them back grown (see decodeBuffers). The result aliases a buffer of its own; body may be reused after return.
func decodeWriteRequest(body []byte, maxDecoded int64, proto string, charge func(int64) error, known *labelCache, bufs *decodeBuffers) (*wireRequest, error) {
	var dst []byte
	if bufs != nil {
		dst = bufs.raw
	}
	raw, err := decompress(body, maxDecoded, charge, dst)
	if err != nil {
		return nil, err
	}
	if bufs != nil {
		bufs.raw = raw
	}
	var req *wireRequest
	if proto == protoWriteV2 {
		req, err = parseWriteRequestV2(raw, charge, bufs)
	} else {
		req, err = parseWriteRequest(raw, charge, known, bufs)
	}
	if errors.Is(err, ErrMemoryBudget) || errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("parse %s of %d bytes: %w", proto, len(raw), err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: protobuf %s of %d bytes: %v", ErrDecode, proto, len(raw), err)
	}
	return req, nil
}
