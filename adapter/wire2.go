package adapter

import (
	"errors"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// Field numbers from prompb/io/prometheus/write/v2/types.proto.
const (
	fieldV2Symbols        = 4
	fieldV2Timeseries     = 5
	fieldV2LabelsRefs     = 1
	fieldV2Samples        = 2
	fieldV2Histograms     = 3
	fieldV2Exemplars      = 4
	fieldV2Metadata       = 5
	fieldV2MetadataType   = 1
	fieldV2MetadataHelp   = 3
	fieldV2MetadataUnit   = 4
	maxLabelRefsPerSeries = 1 << 16
)

// errRef: a label or metadata reference past the end of the symbols table, or an odd
// number of label references. The generated Unmarshal does not resolve references, so
// this is the one place the 2.0 parser is stricter than it on purpose.
var errRef = errors.New("invalid symbol reference")

// parseWriteRequestV2 decodes b as a remote-write 2.0 io.prometheus.write.v2.Request into
// the same form as parseWriteRequest, so that validation and batching are shared. Symbols
// are offsets into b, like 1.0 labels. Per-series metadata becomes one prompb.MetricMetadata
// per metric name (the first series of a name wins). Histograms are kept (addHistogram);
// exemplars and start timestamps are checked and dropped.
func parseWriteRequestV2(b []byte, charge func(int64) error, bufs *decodeBuffers) (*wireRequest, error) {
	if int64(len(b)) > math.MaxUint32 {
		return nil, fmt.Errorf("body of %d bytes is too large to parse", len(b))
	}
	b = b[:len(b):len(b)]
	r := &wireRequest{buf: b, charge: charge}
	if err := r.makeArenas(bufs, len(b)/32, len(b)/16, 0); err != nil {
		return nil, err
	}

	// Symbols usually precede the series on the wire, but protobuf allows any order, so
	// they are collected in a pass of their own.
	var symbols [][2]uint32
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldV2Symbols {
			return nil
		}
		if typ != protowire.BytesType {
			return fmt.Errorf("symbols: %w %d", errWireType, typ)
		}
		start := offset(b, v)
		var err error
		symbols, err = appendCharged(symbols, [2]uint32{start, start + uint32(len(v))}, charge)
		return err
	})
	if err != nil {
		return nil, err
	}
	var refs []uint32
	metadataOf := map[string]bool{}
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldV2Timeseries {
			return nil
		}
		if typ != protowire.BytesType {
			return fmt.Errorf("timeseries: %w %d", errWireType, typ)
		}
		var err error
		refs, err = r.parseSeriesV2(v, symbols, refs[:0], metadataOf)
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (r *wireRequest) parseSeriesV2(b []byte, symbols [][2]uint32, refs []uint32, metadataOf map[string]bool) ([]uint32, error) {
	s := wireSeries{labelStart: uint32(len(r.labels)), sampleStart: uint32(len(r.samples)), histStart: uint32(len(r.hists))}
	var md *writev2.Metadata
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldV2LabelsRefs:
			var err error
			if refs, err = appendVarints(refs, typ, v); err != nil {
				return fmt.Errorf("labels_refs: %w", err)
			}
			if len(refs) > maxLabelRefsPerSeries {
				return fmt.Errorf("%d label references in one series", len(refs))
			}
		case fieldV2Samples:
			if typ != protowire.BytesType {
				return fmt.Errorf("sample: %w %d", errWireType, typ)
			}
			smp, err := parseSample(v)
			if err != nil {
				return err
			}
			r.samples, err = appendCharged(r.samples, smp, r.charge)
			return err
		case fieldV2Histograms, fieldV2Exemplars, fieldV2Metadata:
			// Checked like the generated code checks them, so that a malformed one fails
			// the request here too.
			if typ != protowire.BytesType {
				return fmt.Errorf("field %d: %w %d", num, errWireType, typ)
			}
			switch num {
			case fieldV2Histograms:
				var h writev2.Histogram
				return r.addHistogram(v, &h,
					func() store.HistogramSample { return store.HistogramSample{T: h.Timestamp, H: h.ToIntHistogram()} },
					func() store.HistogramSample { return store.HistogramSample{T: h.Timestamp, FH: h.ToFloatHistogram()} },
				)
			case fieldV2Exemplars:
				var e writev2.Exemplar
				return r.unmarshalCharged(v, e.Unmarshal)
			default:
				// A message field that appears twice is merged, as protobuf specifies and
				// the generated code does: the second occurrence overwrites only the
				// fields it carries.
				if md == nil {
					md = &writev2.Metadata{}
				}
				return md.Unmarshal(v)
			}
		}
		return nil
	})
	if err != nil {
		return refs, fmt.Errorf("series %d: %w", len(r.series), err)
	}
	if len(refs)%2 != 0 {
		return refs, fmt.Errorf("series %d: %w: %d label references, want pairs", len(r.series), errRef, len(refs))
	}
	var name []byte
	for i := 0; i < len(refs); i += 2 {
		if int(refs[i]) >= len(symbols) || int(refs[i+1]) >= len(symbols) {
			return refs, fmt.Errorf("series %d: %w: label refs %d, %d of %d symbols", len(r.series), errRef, refs[i], refs[i+1], len(symbols))
		}
		n, v := symbols[refs[i]], symbols[refs[i+1]]
		l := wireLabel{nameStart: n[0], nameEnd: n[1], valueStart: v[0], valueEnd: v[1]}
		var err error
		if r.labels, err = appendCharged(r.labels, l, r.charge); err != nil {
			return refs, fmt.Errorf("series %d: %w", len(r.series), err)
		}
		if string(l.name(r.buf)) == labels.MetricName {
			name = l.value(r.buf)
		}
	}
	// A zero Metadata is what the generated code sees when the field is absent; it carries
	// nothing and refers to nothing, even in a request without symbols.
	if md != nil && (md.Type != 0 || md.HelpRef != 0 || md.UnitRef != 0) {
		if err := r.addMetadataV2(md, name, symbols, metadataOf); err != nil {
			return refs, fmt.Errorf("series %d: %w", len(r.series), err)
		}
	}
	s.labelEnd, s.sampleEnd, s.histEnd = uint32(len(r.labels)), uint32(len(r.samples)), uint32(len(r.hists))
	r.series, err = appendCharged(r.series, s, r.charge)
	return refs, err
}

// addMetadataV2 records a series' metadata under its metric name, once per name. Remote
// write 2.0 repeats metadata on every series of every request; 1.0 sends it separately.
//
// Strings are copied out of the body only for metadata that is kept: symbols can be large
// and shared by any number of series.
func (r *wireRequest) addMetadataV2(md *writev2.Metadata, name []byte, symbols [][2]uint32, seen map[string]bool) error {
	sym := func(ref uint32) ([]byte, error) {
		if int(ref) >= len(symbols) {
			return nil, fmt.Errorf("%w: metadata ref %d of %d symbols", errRef, ref, len(symbols))
		}
		return r.buf[symbols[ref][0]:symbols[ref][1]], nil
	}
	help, err := sym(md.HelpRef)
	if err != nil {
		return err
	}
	unit, err := sym(md.UnitRef)
	if err != nil {
		return err
	}
	if len(name) == 0 || seen[string(name)] || (md.Type == writev2.Metadata_METRIC_TYPE_UNSPECIFIED && len(help) == 0 && len(unit) == 0) {
		return nil
	}
	if err := r.reserve(int64(len(name) + len(help) + len(unit))); err != nil {
		return err
	}
	family := string(name)
	seen[family] = true
	// The two enums number the types alike: COUNTER 1, GAUGE 2, ... STATESET 7.
	r.metadata, err = appendCharged(r.metadata, prompb.MetricMetadata{
		Type: prompb.MetricMetadata_MetricType(md.Type), MetricFamilyName: family, Help: string(help), Unit: string(unit),
	}, r.charge)
	return err
}

// appendVarints appends a repeated uint32 field's values, packed or not, as the generated
// code accepts both.
func appendVarints(dst []uint32, typ protowire.Type, v []byte) ([]uint32, error) {
	switch typ {
	case protowire.VarintType:
		x, _ := protowire.ConsumeVarint(v)
		return append(dst, uint32(x)), nil
	case protowire.BytesType:
		for len(v) > 0 {
			x, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return dst, fmt.Errorf("%w: %w", errMalformed, protowire.ParseError(n))
			}
			dst = append(dst, uint32(x))
			v = v[n:]
		}
		return dst, nil
	default:
		return dst, fmt.Errorf("%w %d", errWireType, typ)
	}
}
