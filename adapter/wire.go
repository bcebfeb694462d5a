package adapter

import (
	"errors"
	"fmt"
	"math"
	"unsafe"

	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pyramid-metrics/pyramid/adapter/store"
)

// wireRequest is a remote-write 1.0 WriteRequest decoded without copying: label names and
// values are offsets into the decompressed body, and all series share three arenas, so a
// request costs a handful of allocations instead of one per label string (the generated
// prompb.WriteRequest.Unmarshal spent three quarters of the write path's CPU on those; see
// BenchmarkDecodeValidate). The arenas hold no pointers, so the garbage collector neither
// scans them nor runs write barriers while they fill. A wireRequest keeps the body it was
// parsed from: do not modify the body while the request is in use.
type wireRequest struct {
	buf      []byte
	series   []wireSeries
	labels   []wireLabel
	samples  []wireSample
	hists    []store.HistogramSample
	metadata []prompb.MetricMetadata
	// charge, when not nil, is charged for every arena before it is allocated or grown.
	charge func(int64) error
	// known, when not nil, answers for series entries whose label bytes it has seen.
	known *labelCache
	// bufs lends the arenas (makeArenas); release returns them.
	bufs *decodeBuffers
}

// decodeBuffers are the buffers of one decoded write request, kept for the next one:
// under load, allocating and zeroing them anew for each request cost pyramid a tenth of
// its CPU in allocation and garbage collection.
type decodeBuffers struct {
	raw     []byte
	samples []wireSample
	labels  []wireLabel
	series  []wireSeries
}

// release hands r's arenas, as they have grown, back to the decodeBuffers they came
// from. Nothing may use r, or anything that refers into its body or arenas, afterwards.
func (r *wireRequest) release() {
	b := r.bufs
	b.samples, b.labels, b.series = r.samples[:0], r.labels[:0], r.series[:0]
	*r = wireRequest{}
}

// wireSeries locates one TimeSeries' labels, samples and histograms in the request's
// arenas.
type wireSeries struct {
	labelStart, labelEnd   uint32
	sampleStart, sampleEnd uint32
	histStart, histEnd     uint32
	// rawStart and rawEnd locate the entry's label fields in the body when they are
	// contiguous, as every sender writes them (rawEnd is 0 otherwise); rawLabels counts
	// them. When the label cache knew those bytes, known is set, fp and target are its
	// answer, and the labels are parsed only on demand (wireRequest.parseKnownLabels).
	rawStart, rawEnd uint32
	rawLabels        uint32
	known            bool
	fp, target       uint64
}

// wireSample is a sample as pyramid stores it: a third of prompb.Sample, whose fields
// for unknown protobuf content the arena of a large request would pay for every sample.
type wireSample struct {
	Timestamp int64
	Value     float64
}

// wireLabel locates a label's name and value in the request body: [nameStart, nameEnd) and
// [valueStart, valueEnd). Bodies are capped far below 4 GiB, so uint32 offsets suffice.
type wireLabel struct {
	nameStart, nameEnd, valueStart, valueEnd uint32
}

func (l wireLabel) name(buf []byte) []byte  { return buf[l.nameStart:l.nameEnd] }
func (l wireLabel) value(buf []byte) []byte { return buf[l.valueStart:l.valueEnd] }

// offset is where v starts in buf, v being a subslice of buf: subslices keep their capacity
// to the end of the backing array, so the difference of capacities is the offset.
func offset(buf, v []byte) uint32 { return uint32(cap(buf) - cap(v)) }

func (r *wireRequest) seriesLabels(s *wireSeries) []wireLabel {
	return r.labels[s.labelStart:s.labelEnd]
}
func (r *wireRequest) seriesSamples(s *wireSeries) []wireSample {
	return r.samples[s.sampleStart:s.sampleEnd]
}
func (r *wireRequest) seriesHistograms(s *wireSeries) []store.HistogramSample {
	return r.hists[s.histStart:s.histEnd]
}

// addHistogram decodes a Histogram message with the generated code (native histograms
// are far fewer than float samples, and their decoding is intricate) and keeps it in
// Prometheus's model form. decoded is the message itself, filled in by unmarshal; it is
// charged for what the generated code and the conversion may allocate, which the request
// then holds.
func (r *wireRequest) addHistogram(v []byte, decoded interface {
	Unmarshal([]byte) error
	IsFloatHistogram() bool
}, toInt func() store.HistogramSample, toFloat func() store.HistogramSample) error {
	if err := r.reserve(2 * int64(len(v)) * generatedBytesPerByte); err != nil {
		return err
	}
	if err := decoded.Unmarshal(v); err != nil {
		return err
	}
	h := toInt
	if decoded.IsFloatHistogram() {
		h = toFloat
	}
	var err error
	r.hists, err = appendCharged(r.hists, h(), r.charge)
	return err
}

// Field numbers from prompb's remote.proto and types.proto.
const (
	fieldWriteTimeseries = 1
	fieldWriteMetadata   = 3
	fieldSeriesLabels    = 1
	fieldSeriesSamples   = 2
	fieldSeriesExemplar  = 3
	fieldSeriesHistogram = 4
	fieldLabelName       = 1
	fieldLabelValue      = 2
	fieldSampleValue     = 1
	fieldSampleTimestamp = 2

	// labelFieldTag is the tag byte of a TimeSeries' labels field.
	labelFieldTag = fieldSeriesLabels<<3 | byte(protowire.BytesType)
)

var (
	errWireType = errors.New("wrong wire type")
	// errGroup: protobuf groups, deprecated since proto2 and absent from remote write.
	errGroup = errors.New("protobuf groups are not supported")
	// errMalformed: bytes that protowire, the reference protobuf wire decoder, rejects, such
	// as field numbers past 2^29-1 or overlong varints. The generated code is laxer there.
	errMalformed = errors.New("malformed protobuf")
)

// parseWriteRequest decodes b as a prompb.WriteRequest, accepting what the generated
// Unmarshal accepts (a differential fuzz test holds it to that) except protobuf groups, which
// no remote-write sender emits, and bytes the protobuf reference decoder calls malformed. Unknown fields are skipped, exemplars checked and dropped,
// histograms kept in Prometheus's model form (addHistogram).
//
// With a label cache, the labels of an entry whose label bytes the cache knows are not
// parsed (see wireSeries); they are parsed on demand, within the arena reserved for them here.
func parseWriteRequest(b []byte, charge func(int64) error, known *labelCache, bufs *decodeBuffers) (*wireRequest, error) {
	if int64(len(b)) > math.MaxUint32 {
		return nil, fmt.Errorf("body of %d bytes is too large to parse", len(b))
	}
	b = b[:len(b):len(b)] // offset relies on every subslice ending at the body's end
	r := &wireRequest{buf: b, charge: charge, known: known}
	// A sample costs at least 11 bytes on the wire, a label of a real series 20 to 40 and
	// a series entry of Prometheus's, with one sample, 80 to 200; sizing the arenas from
	// the body avoids most regrowth without trusting any length prefix in it.
	if err := r.makeArenas(bufs, len(b)/64, len(b)/32, len(b)/64); err != nil {
		return nil, err
	}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldWriteTimeseries:
			if typ != protowire.BytesType {
				return fmt.Errorf("timeseries: %w %d", errWireType, typ)
			}
			return r.parseSeries(v)
		case fieldWriteMetadata:
			if typ != protowire.BytesType {
				return fmt.Errorf("metadata: %w %d", errWireType, typ)
			}
			// The strings of a metadata entry are copies of at most its bytes.
			if err := r.reserve(int64(len(v))); err != nil {
				return err
			}
			var md prompb.MetricMetadata
			if err := md.Unmarshal(v); err != nil {
				return fmt.Errorf("metadata %d: %w", len(r.metadata), err)
			}
			var err error
			r.metadata, err = appendCharged(r.metadata, md, r.charge)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// The labels of the known entries are charged now, as if parsed, so that parsing
	// them on demand needs no charge that could fail once validation has begun. The
	// arena may double to hold them, hence twice their size.
	deferred := 0
	for i := range r.series {
		if r.series[i].known {
			deferred += int(r.series[i].rawLabels)
		}
	}
	if err := r.reserve(2 * int64(deferred) * int64(unsafe.Sizeof(wireLabel{}))); err != nil {
		return nil, err
	}
	return r, nil
}

// makeArenas gives r sample, label and series arenas with room for the given counts,
// charging them first: bufs's arenas where they are large enough, new ones otherwise.
// bufs, when not nil, then holds r's arenas, to take them back after r is done with.
func (r *wireRequest) makeArenas(bufs *decodeBuffers, samples, labels, series int) error {
	if err := r.reserve(int64(samples)*int64(unsafe.Sizeof(wireSample{})) + int64(labels)*int64(unsafe.Sizeof(wireLabel{})) +
		int64(series)*int64(unsafe.Sizeof(wireSeries{}))); err != nil {
		return err
	}
	if bufs == nil {
		bufs = &decodeBuffers{}
	}
	r.samples, r.labels, r.series = arena(bufs.samples, samples), arena(bufs.labels, labels), arena(bufs.series, series)
	r.bufs = bufs
	return nil
}

// arena is buf emptied when it has room for n elements, else a new slice that has.
func arena[T any](buf []T, n int) []T {
	if cap(buf) >= n {
		return buf[:0]
	}
	return make([]T, 0, n)
}

// unmarshalCharged runs the generated unmarshal of a message that is checked and then
// dropped, charging what it may allocate for as long as it runs.
func (r *wireRequest) unmarshalCharged(v []byte, unmarshal func([]byte) error) error {
	n := int64(len(v)) * generatedBytesPerByte
	if err := r.reserve(n); err != nil {
		return err
	}
	err := unmarshal(v)
	_ = r.reserve(-n)
	return err
}

// reserve charges n bytes about to be allocated for r; a negative n returns bytes.
func (r *wireRequest) reserve(n int64) error {
	if r.charge == nil {
		return nil
	}
	return r.charge(n)
}

func (r *wireRequest) parseSeries(b []byte) error {
	s := wireSeries{labelStart: uint32(len(r.labels)), sampleStart: uint32(len(r.samples)), histStart: uint32(len(r.hists))}
	// With a label cache, label fields are only located in this pass; see parseLabels.
	deferLabels := r.known != nil
	var labelFields uint32
	contiguous := true
	// A loop rather than eachField: this runs for every entry, and a closure per entry
	// cost a tenth of the parse.
	for rest := b; len(rest) > 0; {
		if deferLabels && len(rest) >= 2 && rest[0] == labelFieldTag && rest[1] < 0x80 && int(rest[1])+2 <= len(rest) {
			// A label field with a one-byte length, skipped without nextField.
			start := offset(r.buf, rest)
			if labelFields == 0 {
				s.rawStart = start
			} else if s.rawEnd != start {
				contiguous = false
			}
			rest = rest[int(rest[1])+2:]
			s.rawEnd = offset(r.buf, rest)
			labelFields++
			continue
		}
		num, typ, v, n, err := nextField(rest)
		if err != nil {
			return err
		}
		start := offset(r.buf, rest)
		rest = rest[n:]
		if err := r.seriesField(num, typ, v, deferLabels); err != nil {
			return err
		}
		if num == fieldSeriesLabels && deferLabels {
			if labelFields == 0 {
				s.rawStart = start
			} else if s.rawEnd != start {
				contiguous = false
			}
			s.rawEnd = offset(r.buf, rest)
			labelFields++
		}
	}
	s.sampleEnd, s.histEnd = uint32(len(r.samples)), uint32(len(r.hists))
	if deferLabels {
		if !contiguous || labelFields == 0 {
			s.rawEnd = 0
		} else {
			s.rawLabels = labelFields
			var e labelEntry
			if e, s.known = r.known.get(r.known.key(r.buf[s.rawStart:s.rawEnd])); s.known {
				s.fp, s.target = e.fp, e.target
			}
		}
		if !s.known {
			if err := r.parseLabels(b); err != nil {
				return err
			}
		}
	}
	s.labelEnd = uint32(len(r.labels))
	var err error
	r.series, err = appendCharged(r.series, s, r.charge)
	return err
}

// seriesField handles one field of a TimeSeries entry; label fields are left for later
// when deferLabels is set.
func (r *wireRequest) seriesField(num protowire.Number, typ protowire.Type, v []byte, deferLabels bool) error {
	switch num {
	case fieldSeriesLabels:
		if typ != protowire.BytesType {
			return fmt.Errorf("label: %w %d", errWireType, typ)
		}
		if deferLabels {
			return nil
		}
		return r.addLabel(v)
	case fieldSeriesSamples:
		if typ != protowire.BytesType {
			return fmt.Errorf("sample: %w %d", errWireType, typ)
		}
		smp, err := parseSample(v)
		if err != nil {
			return fmt.Errorf("series %d sample: %w", len(r.series), err)
		}
		r.samples, err = appendCharged(r.samples, smp, r.charge)
		return err
	case fieldSeriesExemplar, fieldSeriesHistogram:
		if typ != protowire.BytesType {
			return fmt.Errorf("field %d: %w %d", num, errWireType, typ)
		}
		if num == fieldSeriesExemplar {
			// Not stored, but checked like the generated code checks it, so that a
			// malformed one fails the request here too.
			var e prompb.Exemplar
			return r.unmarshalCharged(v, e.Unmarshal)
		}
		var h prompb.Histogram
		if err := r.addHistogram(v, &h,
			func() store.HistogramSample { return store.HistogramSample{T: h.Timestamp, H: h.ToIntHistogram()} },
			func() store.HistogramSample { return store.HistogramSample{T: h.Timestamp, FH: h.ToFloatHistogram()} },
		); err != nil {
			return fmt.Errorf("series %d histogram: %w", len(r.series), err)
		}
	}
	return nil
}

// parseLabels parses the label fields among the fields of b, a series entry or the span
// of its label fields, into the label arena.
func (r *wireRequest) parseLabels(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldSeriesLabels {
			return nil
		}
		return r.addLabel(v)
	})
}

// parseKnownLabels parses the labels of a series entry that the label cache knew, which
// parseSeries left unparsed. The bytes are those of a validated entry, so they parse.
func (r *wireRequest) parseKnownLabels(s *wireSeries) error {
	if !s.known || s.labelEnd > s.labelStart {
		return nil
	}
	// parseWriteRequest charged these labels already.
	charge := r.charge
	r.charge = nil
	defer func() { r.charge = charge }()
	s.labelStart = uint32(len(r.labels))
	err := r.parseLabels(r.buf[s.rawStart:s.rawEnd])
	s.labelEnd = uint32(len(r.labels))
	return err
}

// addLabel parses one Label message into the label arena.
func (r *wireRequest) addLabel(v []byte) error {
	l, err := r.parseLabel(v)
	if err != nil {
		return fmt.Errorf("series %d label: %w", len(r.series), err)
	}
	r.labels, err = appendCharged(r.labels, l, r.charge)
	return err
}

// parseLabel locates a Label message's name and value in the body.
func (r *wireRequest) parseLabel(v []byte) (wireLabel, error) {
	start := offset(r.buf, v)
	// The form every sender writes, name then value, each shorter than 128 bytes, read
	// directly; it means what the general loop below would make of it.
	if len(v) >= 4 && v[0] == fieldLabelName<<3|byte(protowire.BytesType) && v[1] < 0x80 {
		n := uint32(v[1])
		if int(n)+4 <= len(v) && v[2+n] == fieldLabelValue<<3|byte(protowire.BytesType) && v[3+n] < 0x80 && int(n)+4+int(v[3+n]) == len(v) {
			return wireLabel{nameStart: start + 2, nameEnd: start + 2 + n, valueStart: start + 4 + n, valueEnd: start + uint32(len(v))}, nil
		}
	}
	var l wireLabel
	err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != fieldLabelName && num != fieldLabelValue {
			return nil
		}
		if typ != protowire.BytesType {
			return fmt.Errorf("label field %d: %w %d", num, errWireType, typ)
		}
		start := offset(r.buf, v)
		if num == fieldLabelName {
			l.nameStart, l.nameEnd = start, start+uint32(len(v))
		} else {
			l.valueStart, l.valueEnd = start, start+uint32(len(v))
		}
		return nil
	})
	return l, err
}

// eachField calls fn for every field of the message b with the field's raw value: the
// payload for length-delimited fields, the encoded bytes for the others.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, v, n, err := nextField(b)
		if err != nil {
			return err
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// nextField decodes the first field of the non-empty message b: its number, type, raw
// value (as eachField passes it) and encoded length.
func nextField(b []byte) (protowire.Number, protowire.Type, []byte, int, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, 0, fmt.Errorf("field tag: %w: %w", errMalformed, protowire.ParseError(n))
	}
	switch typ {
	case protowire.BytesType:
		payload, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return 0, 0, nil, 0, fmt.Errorf("field %d: %w: %w", num, errMalformed, protowire.ParseError(m))
		}
		return num, typ, payload, n + m, nil
	case protowire.StartGroupType, protowire.EndGroupType:
		return 0, 0, nil, 0, fmt.Errorf("field %d: %w", num, errGroup)
	}
	m := protowire.ConsumeFieldValue(num, typ, b[n:])
	if m < 0 {
		return 0, 0, nil, 0, fmt.Errorf("field %d: %w: %w", num, errMalformed, protowire.ParseError(m))
	}
	return num, typ, b[n : n+m], n + m, nil
}

// parseSample decodes a Sample message, the same in remote write 1.0 and 2.0 (2.0's
// start_timestamp, field 3, is skipped: pyramid does not store it).
func parseSample(b []byte) (wireSample, error) {
	// The form every sender writes, value then timestamp, read directly; it means what
	// the general loop below would make of it.
	if len(b) >= 10 && b[0] == fieldSampleValue<<3|byte(protowire.Fixed64Type) && b[9] == fieldSampleTimestamp<<3|byte(protowire.VarintType) {
		if ts, n := protowire.ConsumeVarint(b[10:]); n == len(b)-10 {
			bits, _ := protowire.ConsumeFixed64(b[1:])
			return wireSample{Timestamp: int64(ts), Value: math.Float64frombits(bits)}, nil
		}
	}
	var smp wireSample
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch num {
		case fieldSampleValue:
			if typ != protowire.Fixed64Type {
				return fmt.Errorf("sample value: %w %d", errWireType, typ)
			}
			bits, _ := protowire.ConsumeFixed64(v)
			smp.Value = math.Float64frombits(bits)
		case fieldSampleTimestamp:
			if typ != protowire.VarintType {
				return fmt.Errorf("sample timestamp: %w %d", errWireType, typ)
			}
			ts, _ := protowire.ConsumeVarint(v)
			smp.Timestamp = int64(ts)
		}
		return nil
	})
	return smp, err
}
