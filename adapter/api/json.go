package api

import (
	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/util/jsonutil"
	"github.com/prometheus/prometheus/util/stats"
)

// Responses are written as Prometheus writes them (web/api/v1/json_codec.go), byte for
// byte: its encoder is jsoniter in its standard-library mode, with its own encoders for
// samples, series and label sets. Those are registered globally there; here they are plain
// functions called on a borrowed stream, so that nothing else in the binary changes how
// it encodes these types.

// queryData is the data of a query or query_range answer.
type queryData struct {
	resultType parser.ValueType
	result     parser.Value
	// stats is set when the request asked for them.
	stats stats.QueryStats
}

// encodeSuccess renders {"status":"success","data":...,"warnings":[...],"infos":[...]} and
// passes it to write, which must not keep it: the buffer goes back to jsoniter's pool.
func encodeSuccess(data any, warnings, infos []string, write func([]byte)) error {
	s := jsoniter.ConfigCompatibleWithStandardLibrary.BorrowStream(nil)
	defer jsoniter.ConfigCompatibleWithStandardLibrary.ReturnStream(s)
	s.WriteObjectStart()
	s.WriteObjectField("status")
	s.WriteString("success")
	if data != nil {
		s.WriteMore()
		s.WriteObjectField("data")
		writeData(s, data)
	}
	writeStrings(s, "warnings", warnings)
	writeStrings(s, "infos", infos)
	s.WriteObjectEnd()
	if s.Error != nil {
		return s.Error
	}
	write(s.Buffer())
	return nil
}

// errorResponse is Prometheus's error envelope.
type errorResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

func encodeError(errorType, msg string) ([]byte, error) {
	return jsoniter.ConfigCompatibleWithStandardLibrary.Marshal(errorResponse{Status: "error", ErrorType: errorType, Error: msg})
}

func writeStrings(s *jsoniter.Stream, field string, v []string) {
	if len(v) == 0 {
		return
	}
	s.WriteMore()
	s.WriteObjectField(field)
	s.WriteVal(v)
}

func writeData(s *jsoniter.Stream, data any) {
	switch d := data.(type) {
	case *queryData:
		s.WriteObjectStart()
		s.WriteObjectField("resultType")
		s.WriteString(string(d.resultType))
		s.WriteMore()
		s.WriteObjectField("result")
		switch v := d.result.(type) {
		case promql.Vector:
			writeVector(s, v)
		case promql.Matrix:
			writeMatrix(s, v)
		default:
			// Scalar and String marshal themselves, as in Prometheus.
			s.WriteVal(v)
		}
		if d.stats != nil {
			s.WriteMore()
			s.WriteObjectField("stats")
			s.WriteVal(d.stats)
		}
		s.WriteObjectEnd()
	case []labels.Labels:
		s.WriteArrayStart()
		for i, l := range d {
			if i > 0 {
				s.WriteMore()
			}
			writeLabels(s, l)
		}
		s.WriteArrayEnd()
	default:
		s.WriteVal(d)
	}
}

func writeVector(s *jsoniter.Stream, v promql.Vector) {
	s.WriteArrayStart()
	for i, smpl := range v {
		if i > 0 {
			s.WriteMore()
		}
		s.WriteObjectStart()
		s.WriteObjectField("metric")
		writeLabels(s, smpl.Metric)
		s.WriteMore()
		if smpl.H == nil {
			s.WriteObjectField("value")
		} else {
			s.WriteObjectField("histogram")
		}
		s.WriteArrayStart()
		jsonutil.MarshalTimestamp(smpl.T, s)
		s.WriteMore()
		if smpl.H == nil {
			jsonutil.MarshalFloat(smpl.F, s)
		} else {
			jsonutil.MarshalHistogram(smpl.H, s)
		}
		s.WriteArrayEnd()
		s.WriteObjectEnd()
	}
	s.WriteArrayEnd()
}

func writeMatrix(s *jsoniter.Stream, m promql.Matrix) {
	s.WriteArrayStart()
	for i, ser := range m {
		if i > 0 {
			s.WriteMore()
		}
		s.WriteObjectStart()
		s.WriteObjectField("metric")
		writeLabels(s, ser.Metric)
		for j, p := range ser.Floats {
			s.WriteMore()
			if j == 0 {
				s.WriteObjectField("values")
				s.WriteArrayStart()
			}
			s.WriteArrayStart()
			jsonutil.MarshalTimestamp(p.T, s)
			s.WriteMore()
			jsonutil.MarshalFloat(p.F, s)
			s.WriteArrayEnd()
		}
		if len(ser.Floats) > 0 {
			s.WriteArrayEnd()
		}
		for j, p := range ser.Histograms {
			s.WriteMore()
			if j == 0 {
				s.WriteObjectField("histograms")
				s.WriteArrayStart()
			}
			s.WriteArrayStart()
			jsonutil.MarshalTimestamp(p.T, s)
			s.WriteMore()
			jsonutil.MarshalHistogram(p.H, s)
			s.WriteArrayEnd()
		}
		if len(ser.Histograms) > 0 {
			s.WriteArrayEnd()
		}
		s.WriteObjectEnd()
	}
	s.WriteArrayEnd()
}

// writeLabels writes a label set as an object in label order. Like Prometheus it escapes
// no HTML characters, unlike the rest of the envelope.
func writeLabels(s *jsoniter.Stream, l labels.Labels) {
	s.WriteObjectStart()
	first := true
	l.Range(func(lb labels.Label) {
		if !first {
			s.WriteMore()
		}
		first = false
		s.WriteString(lb.Name)
		s.WriteRaw(":")
		s.WriteString(lb.Value)
	})
	s.WriteObjectEnd()
}
