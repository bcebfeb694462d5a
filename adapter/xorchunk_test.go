package adapter

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
)

// chunkencXORChunks is the reference of xorChunks: the same cuts, encoded by Prometheus's
// own XOR appender, one chunk after another, as pyramid encoded them before xorChunks.
func chunkencXORChunks(ts []int64, values []float64) ([]prompb.Chunk, error) {
	chunks := make([]prompb.Chunk, 0, (len(ts)+samplesPerChunk-1)/samplesPerChunk)
	for lo := 0; lo < len(ts); lo += samplesPerChunk {
		hi := min(lo+samplesPerChunk, len(ts))
		c := chunkenc.NewXORChunk()
		app, err := c.Appender()
		if err != nil {
			return nil, fmt.Errorf("open XOR appender: %w", err)
		}
		for i := lo; i < hi; i++ {
			app.Append(0, ts[i], values[i])
		}
		chunks = append(chunks, prompb.Chunk{
			MinTimeMs: ts[lo], MaxTimeMs: ts[hi-1], Type: prompb.Chunk_XOR, Data: c.Bytes(),
		})
	}
	return chunks, nil
}

// sameChunks says how got differs from want, chunk by chunk and byte by byte, or returns
// nil. It also requires each chunk of got to end its capacity at its own end, so that an
// append to one cannot overwrite the next.
func sameChunks(got, want []prompb.Chunk) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d chunks, want %d", len(got), len(want))
	}
	for k := range got {
		g, w := got[k], want[k]
		if g.MinTimeMs != w.MinTimeMs || g.MaxTimeMs != w.MaxTimeMs || g.Type != w.Type {
			return fmt.Errorf("chunk %d: [%d, %d] type %v, want [%d, %d] type %v", k, g.MinTimeMs, g.MaxTimeMs, g.Type, w.MinTimeMs, w.MaxTimeMs, w.Type)
		}
		if !bytes.Equal(g.Data, w.Data) {
			i := 0
			for i < min(len(g.Data), len(w.Data)) && g.Data[i] == w.Data[i] {
				i++
			}
			return fmt.Errorf("chunk %d: %d bytes, want %d; first difference at byte %d:\n got %x\nwant %x", k, len(g.Data), len(w.Data), i, g.Data[i:min(i+16, len(g.Data))], w.Data[i:min(i+16, len(w.Data))])
		}
		if cap(g.Data) != len(g.Data) {
			return fmt.Errorf("chunk %d: capacity %d past its %d bytes", k, cap(g.Data), len(g.Data))
		}
	}
	return nil
}

// TestXORChunksMatchChunkenc encodes samples picked to take every branch of chunkenc's
// XOR appender and compares the bytes with its own.
func TestXORChunksMatchChunkenc(t *testing.T) {
	const t0 = 1_700_000_000_000
	// steady returns n timestamps 15 s apart and n values of v.
	steady := func(n int, v float64) ([]int64, []float64) {
		ts, vs := make([]int64, n), make([]float64, n)
		for i := range ts {
			ts[i], vs[i] = t0+int64(i)*15_000, v
		}
		return ts, vs
	}
	// bitsOf returns values with the given bits, one sample each 15 s.
	bitsOf := func(b ...uint64) ([]int64, []float64) {
		ts, vs := steady(len(b), 0)
		for i := range b {
			vs[i] = math.Float64frombits(b[i])
		}
		return ts, vs
	}
	// dod returns four samples whose last delta of delta is d, and a fifth back at a
	// delta of delta of zero after it.
	dod := func(d int64) ([]int64, []float64) {
		ts := []int64{t0, t0 + 15_000, t0 + 30_000, t0 + 45_000 + d}
		ts = append(ts, ts[3]+15_000+d)
		return ts, []float64{1, 2, 3, 4, 5}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	// series returns n samples 15 s apart with a jitter of up to 20 ms, and values from
	// next.
	series := func(n int, next func(i int) float64) ([]int64, []float64) {
		ts, vs := make([]int64, n), make([]float64, n)
		for i := range ts {
			ts[i], vs[i] = t0+int64(i)*15_000+rng.Int64N(20), next(i)
		}
		return ts, vs
	}
	// worst returns n samples that each take the most bits there are: a delta of delta
	// past 20 bits, and a value XOR whose window never fits the previous one.
	worst := func(n int) ([]int64, []float64) {
		ts, vs := make([]int64, n), make([]float64, n)
		for i := range ts {
			ts[i] = int64(i/2)*(1<<40+1) + int64(i%2)
			// The XORs alternate between 63 bits from the top and 63 bits from the bottom.
			x, y := uint64(1<<63|1<<1), uint64(1<<62|1)
			vs[i] = math.Float64frombits([]uint64{0, x, x ^ y, y}[i%4])
		}
		return ts, vs
	}
	counter := 0.0
	one := math.Float64bits(1)
	cases := map[string]func() ([]int64, []float64){
		"no samples":               func() ([]int64, []float64) { return nil, nil },
		"1 sample":                 func() ([]int64, []float64) { return []int64{-1}, []float64{math.Pi} },
		"2 samples":                func() ([]int64, []float64) { return []int64{-1, 1 << 40}, []float64{math.Pi, math.E} },
		"3 samples":                func() ([]int64, []float64) { return steady(3, 7) },
		"119 samples":              func() ([]int64, []float64) { return steady(119, 7) },
		"120 samples":              func() ([]int64, []float64) { return steady(120, 7) },
		"121 samples":              func() ([]int64, []float64) { return steady(121, 7) },
		"240 samples":              func() ([]int64, []float64) { return steady(240, 7) },
		"241 samples":              func() ([]int64, []float64) { return steady(241, 7) },
		"242 samples":              func() ([]int64, []float64) { return steady(242, 7) },
		"timestamp 0 and negative": func() ([]int64, []float64) { return []int64{-30_000, -15_000, 0, 15_000}, []float64{1, 1, 1, 1} },
		"int64 extremes":           func() ([]int64, []float64) { return []int64{math.MinInt64, -1, math.MaxInt64}, []float64{1, 2, 3} },
		"delta of 1 ms then a year": func() ([]int64, []float64) {
			return []int64{0, 1, 2, 365 * 86_400_000, 365*86_400_000 + 1}, []float64{1, 1, 1, 1, 1}
		},
		"dod 0, value changes":        func() ([]int64, []float64) { ts, _ := steady(4, 0); return ts, []float64{1, 2, 3, 4} },
		"dod 1":                       func() ([]int64, []float64) { return dod(1) },
		"dod -1":                      func() ([]int64, []float64) { return dod(-1) },
		"dod 2^13-1":                  func() ([]int64, []float64) { return dod(1<<13 - 1) },
		"dod -(2^13-1)":               func() ([]int64, []float64) { return dod(-(1<<13 - 1)) },
		"dod 2^13":                    func() ([]int64, []float64) { return dod(1 << 13) },
		"dod -2^13":                   func() ([]int64, []float64) { return dod(-1 << 13) },
		"dod 2^13+1":                  func() ([]int64, []float64) { return dod(1<<13 + 1) },
		"dod 2^16-1":                  func() ([]int64, []float64) { return dod(1<<16 - 1) },
		"dod -(2^16-1)":               func() ([]int64, []float64) { return dod(-(1<<16 - 1)) },
		"dod 2^16":                    func() ([]int64, []float64) { return dod(1 << 16) },
		"dod -2^16":                   func() ([]int64, []float64) { return dod(-1 << 16) },
		"dod 2^16+1":                  func() ([]int64, []float64) { return dod(1<<16 + 1) },
		"dod 2^19-1":                  func() ([]int64, []float64) { return dod(1<<19 - 1) },
		"dod -(2^19-1)":               func() ([]int64, []float64) { return dod(-(1<<19 - 1)) },
		"dod 2^19":                    func() ([]int64, []float64) { return dod(1 << 19) },
		"dod -2^19":                   func() ([]int64, []float64) { return dod(-1 << 19) },
		"dod 2^19+1":                  func() ([]int64, []float64) { return dod(1<<19 + 1) },
		"dod 2^40":                    func() ([]int64, []float64) { return dod(1 << 40) },
		"dod most negative (delta 1)": func() ([]int64, []float64) { return dod(-14_999) },
		"equal values":                func() ([]int64, []float64) { return steady(5, 42) },
		"zero then -0":                func() ([]int64, []float64) { return bitsOf(0, 1<<63, 0, 1<<63) },
		"infinities":                  func() ([]int64, []float64) { return bitsOf(0x7ff0000000000000, 0xfff0000000000000, 0x7ff0000000000000) },
		"NaN payloads": func() ([]int64, []float64) {
			return bitsOf(0x7ff8000000000001, 0x7ff8000000000000, 0xfff8000000000000, 0x7fffffffffffffff, 0x7ff0000000000001)
		},
		"stale markers": func() ([]int64, []float64) {
			return bitsOf(one, 0x7ff0000000000002, one, 0x7ff0000000000002, 0x7ff0000000000002)
		},
		"xor 1: 63 leading, clamped": func() ([]int64, []float64) { return bitsOf(one, one^1, one) },
		"xor of 32 leading zeros":    func() ([]int64, []float64) { return bitsOf(one, one^1<<31, one) },
		"xor of 31 leading zeros":    func() ([]int64, []float64) { return bitsOf(one, one^1<<32, one) },
		"xor without trailing zeros": func() ([]int64, []float64) { return bitsOf(one, one^0x0f0f0f0f0f0f0f0f) },
		"64 significant bits":        func() ([]int64, []float64) { return bitsOf(one, one^(1<<63|1), one) },
		"new window of 52 bits":      func() ([]int64, []float64) { return bitsOf(0, 1<<51|1) },
		"new window of 51 bits":      func() ([]int64, []float64) { return bitsOf(0, 1<<50|1) },
		"reuse window of 64 bits":    func() ([]int64, []float64) { return bitsOf(0, 1<<63|1, 1<<63|1^1<<62|1<<1) },
		"reuse window of 63 bits":    func() ([]int64, []float64) { return bitsOf(0, 1<<63|1<<1, 1<<63|1<<1^1<<62|1<<2) },
		"reuse window of 62 bits":    func() ([]int64, []float64) { return bitsOf(0, 1<<62|1<<1, 1<<62|1<<1^1<<61|1<<2) },
		"reuse, then wider leading": func() ([]int64, []float64) {
			return bitsOf(0, 0x00ff<<48, 0x00ff<<48^0x0010<<48, 0x00ff<<48^0x0010<<48^0x0100<<48)
		},
		"reuse, then wider trailing": func() ([]int64, []float64) {
			return bitsOf(0, 0x00ff<<48, 0x00ff<<48^0x0010<<48, 0x00ff<<48^0x0010<<48^1<<47)
		},
		"window set only after no xor":  func() ([]int64, []float64) { return bitsOf(5, 5, 5, 6, 6, 7) },
		"the most bits a sample, 121":   func() ([]int64, []float64) { return worst(121) },
		"the most bits a sample, 5,760": func() ([]int64, []float64) { return worst(5760) },
		"counter, 5,760 samples": func() ([]int64, []float64) {
			return series(5760, func(int) float64 { counter += float64(rng.IntN(1000)); return counter })
		},
		"gauge of full floats, 5,760": func() ([]int64, []float64) { return series(5760, func(int) float64 { return rng.NormFloat64() }) },
		"random bits, 1,000 samples": func() ([]int64, []float64) {
			return series(1000, func(int) float64 { return math.Float64frombits(rng.Uint64()) })
		},
		"few digits, 1,000 samples": func() ([]int64, []float64) {
			return series(1000, func(int) float64 { return float64(rng.IntN(10000)) / 100 })
		},
		"mostly flat with spikes, 1000": func() ([]int64, []float64) { return series(1000, func(i int) float64 { return float64(i / 97 % 3) }) },
	}
	for name, gen := range cases {
		ts, vs := gen()
		got := xorChunks(ts, vs)
		want, err := chunkencXORChunks(ts, vs)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameChunks(got, want); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Every length meets the end of the first guess of the buffer at another point of a
	// sample, and a sample that takes the most bits must still find room.
	for n := 1; n <= 3*samplesPerChunk; n++ {
		ts, vs := worst(n)
		want, err := chunkencXORChunks(ts, vs)
		if err != nil {
			t.Fatal(err)
		}
		if err := sameChunks(xorChunks(ts, vs), want); err != nil {
			t.Errorf("the most bits a sample, %d: %v", n, err)
		}
	}
}

// TestXORChunksSeparate: appending to a chunk's bytes leaves the next chunk as it was.
func TestXORChunksSeparate(t *testing.T) {
	ts, vs := make([]int64, 2*samplesPerChunk), make([]float64, 2*samplesPerChunk)
	for i := range ts {
		ts[i], vs[i] = int64(i)*15_000, float64(i)
	}
	chunks := xorChunks(ts, vs)
	second := bytes.Clone(chunks[1].Data)
	_ = append(chunks[0].Data, 0xff, 0xff, 0xff, 0xff)
	if !bytes.Equal(chunks[1].Data, second) {
		t.Errorf("an append to the first chunk changed the second: %x, was %x", head64(chunks[1].Data), head64(second))
	}
}

// BenchmarkXORChunks encodes a day of one series scraped every 15 s with a few
// milliseconds of jitter (5,760 samples, 48 chunks), a counter of integer increments and a
// gauge of full-precision floats, with xorChunks (pyramid) and with Prometheus's XOR
// appender (chunkenc), which pyramid used before.
func BenchmarkXORChunks(b *testing.B) {
	const n = 5760
	rng := rand.New(rand.NewPCG(9, 10))
	ts := make([]int64, n)
	counter, gauge := make([]float64, n), make([]float64, n)
	c, g := 0.0, 50.0
	for i := range n {
		ts[i] = 1_700_000_000_000 + int64(i)*15_000 + rng.Int64N(20)
		c += float64(rng.IntN(100))
		g += rng.NormFloat64()
		counter[i], gauge[i] = c, g
	}
	for _, data := range []struct {
		name   string
		values []float64
	}{{"counter", counter}, {"gauge", gauge}} {
		b.Run(data.name+"/pyramid", func(b *testing.B) {
			b.ReportAllocs()
			var size int
			for b.Loop() {
				size = 0
				for _, c := range xorChunks(ts, data.values) {
					size += len(c.Data)
				}
			}
			b.ReportMetric(float64(size)/n, "bytes/sample")
		})
		b.Run(data.name+"/chunkenc", func(b *testing.B) {
			b.ReportAllocs()
			var size int
			for b.Loop() {
				chunks, err := chunkencXORChunks(ts, data.values)
				if err != nil {
					b.Fatal(err)
				}
				size = 0
				for _, c := range chunks {
					size += len(c.Data)
				}
			}
			b.ReportMetric(float64(size)/n, "bytes/sample")
		})
	}
}
