package adapter

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/prometheus/prometheus/prompb"
)

// xorChunks encodes samples (strictly increasing timestamps) as XOR chunks of at most
// samplesPerChunk samples each. The bytes are those of Prometheus's own encoder
// (chunkenc.NewXORChunk, its appender, then Bytes), as TestXORChunksMatchChunkenc and
// FuzzXORChunks check bit for bit. It does not use that encoder because CPU profiles of
// streamed reads put a large share of pyramid's time in it: its bit stream writes one bit
// or byte at a time and grows by append, and each chunk is an allocation of its own
// (BenchmarkXORChunks compares the two). All chunks of a series share one byte slice,
// each capped at its own end so that none can grow into the next.
func xorChunks(ts []int64, values []float64) []prompb.Chunk {
	if len(ts) == 0 {
		return nil
	}
	chunks := make([]prompb.Chunk, (len(ts)+samplesPerChunk-1)/samplesPerChunk)
	// Counters and gauges of few digits take one to two bytes a sample, full-precision
	// floats around nine; the encoder grows the slice when this guess is short.
	e := xorEncoder{buf: make([]byte, len(chunks)*(chunkHeadBytes+sampleMaxBytes)+len(ts)*4), total: len(ts)}
	for k := range chunks {
		lo := k * samplesPerChunk
		hi := min(lo+samplesPerChunk, len(ts))
		start := e.pos
		e.appendChunk(ts[lo:hi], values[lo:hi], lo)
		chunks[k] = prompb.Chunk{MinTimeMs: ts[lo], MaxTimeMs: ts[hi-1], Type: prompb.Chunk_XOR, Data: e.buf[start:e.pos]}
	}
	// A growth moved the bytes, so slice them all again from the final array; they lie
	// back to back in chunk order.
	off := 0
	for k := range chunks {
		end := off + len(chunks[k].Data)
		chunks[k].Data = e.buf[off:end:end]
		off = end
	}
	return chunks
}

const (
	// chunkHeadBytes is the most a chunk takes before its second value: the sample
	// count, the first timestamp as a varint, the first value, and the second timestamp's
	// delta as a uvarint.
	chunkHeadBytes = 2 + binary.MaxVarintLen64 + 8 + binary.MaxVarintLen64
	// sampleMaxBytes is the most that encoding a sample and then flushing the chunk
	// writes into the buffer: a sample takes at most 4+64 bits of timestamp and 2+5+6+64
	// of value, which with the 63 bits that may be pending in the word fill at most
	// three words, and the flush writes at most one more.
	sampleMaxBytes = 4 * 8
)

// xorEncoder writes the XOR chunks of a series into one buffer. Its bit writer gathers
// bits in a 64-bit word and stores eight bytes at a time at an index, where chunkenc's
// bstream writes one bit or byte at a time and appends. Writing at an index rather than
// appending also keeps the slice header still: storing it back into the struct after
// every append would pay the garbage collector's write barrier while a collection runs.
type xorEncoder struct {
	buf   []byte // Bytes past pos are scratch; the length is always the capacity.
	pos   int    // Where the next word goes.
	acc   uint64 // Pending bits, from the top: bit 63 goes out first.
	n     uint   // How many bits of acc are pending, 0 to 63.
	total int    // Samples of the series, to extrapolate a growth from.

	// The window of leading and trailing zeros of the last value XOR written in full.
	leading, trailing uint8
}

// appendChunk writes the XOR chunk of one to 65,535 samples, the first of which is the
// series' sample done, as chunkenc's xorAppender writes it (tsdb/chunkenc/xor.go); the
// comments name the choices that must stay as they are there for the bytes to match.
func (e *xorEncoder) appendChunk(ts []int64, values []float64, done int) {
	e.reserve(chunkHeadBytes+sampleMaxBytes, done)
	binary.BigEndian.PutUint16(e.buf[e.pos:], uint16(len(ts)))
	e.pos += 2
	e.pos += binary.PutVarint(e.buf[e.pos:], ts[0])
	binary.BigEndian.PutUint64(e.buf[e.pos:], math.Float64bits(values[0]))
	e.pos += 8
	if len(ts) == 1 {
		return
	}
	// Everything so far was whole bytes, so the second delta is too.
	tDelta := uint64(ts[1] - ts[0])
	e.pos += binary.PutUvarint(e.buf[e.pos:], tDelta)
	prev := math.Float64bits(values[0])
	// 0xff marks a window not yet set: the first non-zero XOR always writes its own.
	e.leading, e.trailing = 0xff, 0
	e.writeXOR(math.Float64bits(values[1]) ^ prev)
	prev = math.Float64bits(values[1])
	for i := 2; i < len(ts); i++ {
		if e.pos+sampleMaxBytes > len(e.buf) {
			e.reserve(sampleMaxBytes, done+i)
		}
		// Deltas wrap as unsigned numbers, as chunkenc's do.
		d := uint64(ts[i] - ts[i-1])
		dod := int64(d - tDelta)
		tDelta = d
		v := math.Float64bits(values[i])
		delta := v ^ prev
		prev = v
		// The buckets hold -(2^(n-1)-1) to 2^(n-1) (chunkenc's bitRange), each after its
		// size code, the dod in two's complement cut to n bits.
		switch {
		case dod == 0:
			if delta == 0 { // The most common sample of all: both zero bits at once.
				e.writeBits(0, 2)
				continue
			}
			e.writeBits(0, 1)
		case -(1<<13-1) <= dod && dod <= 1<<13:
			e.writeBits(0b10<<14|uint64(dod)&(1<<14-1), 16)
		case -(1<<16-1) <= dod && dod <= 1<<16:
			e.writeBits(0b110<<17|uint64(dod)&(1<<17-1), 20)
		case -(1<<19-1) <= dod && dod <= 1<<19:
			e.writeBits(0b1110<<20|uint64(dod)&(1<<20-1), 24)
		default:
			e.writeBits(0b1111, 4)
			e.writeBits(uint64(dod), 64)
		}
		e.writeXOR(delta)
	}
	e.flush()
}

// reserve makes room for need bytes past pos, done samples of the series into it. It
// extrapolates from the bytes so far, so that a series grows about once.
func (e *xorEncoder) reserve(need, done int) {
	if e.pos+need <= len(e.buf) {
		return
	}
	perSample := e.pos/max(done, 1) + 1
	buf := make([]byte, e.pos+need+perSample*(e.total-done)*9/8)
	copy(buf, e.buf[:e.pos])
	e.buf = buf
}

// writeBits writes the nbits (1 to 64) right-most bits of u; the bits above them are
// ignored.
func (e *xorEncoder) writeBits(u uint64, nbits uint) {
	u <<= 64 - nbits
	e.acc |= u >> e.n
	e.n += nbits
	if e.n >= 64 {
		binary.BigEndian.PutUint64(e.buf[e.pos:], e.acc)
		e.pos += 8
		e.n -= 64
		// The bits of u that did not fit; Go shifts by 64 to zero, as needed when none
		// are left.
		e.acc = u << (nbits - e.n)
	}
}

// flush writes the pending bits, the last byte padded with zero bits.
func (e *xorEncoder) flush() {
	binary.BigEndian.PutUint64(e.buf[e.pos:], e.acc)
	e.pos += int(e.n+7) / 8
	e.acc, e.n = 0, 0
}

// writeXOR writes the XOR of a value with the previous one as chunkenc's xorWrite does:
// one zero bit for no change; else the previous window of leading and trailing zeros
// when the new ones fit in it, or a new window (leading zeros clamped to 31 to fit five
// bits, 64 significant bits written as 0 to fit six).
func (e *xorEncoder) writeXOR(delta uint64) {
	if delta == 0 {
		e.writeBits(0, 1)
		return
	}
	leading := min(uint8(bits.LeadingZeros64(delta)), 31)
	trailing := uint8(bits.TrailingZeros64(delta))
	if e.leading != 0xff && leading >= e.leading && trailing >= e.trailing {
		sig := 64 - uint(e.leading) - uint(e.trailing)
		if sig <= 62 {
			e.writeBits(0b10<<sig|delta>>e.trailing, 2+sig)
		} else {
			e.writeBits(0b10, 2)
			e.writeBits(delta>>e.trailing, sig)
		}
		return
	}
	e.leading, e.trailing = leading, trailing
	sig := 64 - uint(leading) - uint(trailing)
	head := 0b11<<11 | uint64(leading)<<6 | uint64(sig)&(1<<6-1)
	if sig <= 64-13 {
		e.writeBits(head<<sig|delta>>trailing, 13+sig)
	} else {
		e.writeBits(head, 13)
		e.writeBits(delta>>trailing, sig)
	}
}
