package adapter

import (
	"fmt"
	"io"
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

// readBody reads at most limit bytes of r. It refuses a declared Content-Length over the
// limit before reading anything, and any other body as soon as it passes the limit.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, fmt.Errorf("%w: body of %d bytes exceeds the limit of %d", ErrTooLarge, r.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read body after %d bytes: %w", len(body), err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: body exceeds the limit of %d bytes", ErrTooLarge, limit)
	}
	return body, nil
}

// decompress undoes snappy block compression, checking the decoded length in the snappy
// header against maxDecoded before allocating anything. The result is a new buffer; body
// may be reused after return.
func decompress(body []byte, maxDecoded int64) ([]byte, error) {
	n, err := snappy.DecodedLen(body)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy header: %v", ErrDecode, err)
	}
	if int64(n) > maxDecoded {
		return nil, fmt.Errorf("%w: decompresses to %d bytes, over the limit of %d", ErrTooLarge, n, maxDecoded)
	}
	raw, err := snappy.Decode(make([]byte, n), body)
	if err != nil {
		return nil, fmt.Errorf("%w: snappy block of %d bytes: %v", ErrDecode, len(body), err)
	}
	return raw, nil
}

// decodeWriteRequest decompresses and parses a remote-write body of the given proto
// (protoWriteV1 or protoWriteV2). The result aliases a buffer of its own; body may be
// reused after return.
func decodeWriteRequest(body []byte, maxDecoded int64, proto string) (*wireRequest, error) {
	raw, err := decompress(body, maxDecoded)
	if err != nil {
		return nil, err
	}
	parse := parseWriteRequest
	if proto == protoWriteV2 {
		parse = parseWriteRequestV2
	}
	req, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: protobuf %s of %d bytes: %v", ErrDecode, proto, len(raw), err)
	}
	return req, nil
}
