package relay

import (
	"bytes"
	"io"
	"slices"
	"sync/atomic"
	"testing"
)

// scriptedReader returns, for each Read, at most the next of its chunk
// sizes, and records how large each buffer it was given was.
type scriptedReader struct {
	data   []byte
	chunks []int
	bufs   []int
}

func (r *scriptedReader) Read(p []byte) (int, error) {
	r.bufs = append(r.bufs, len(p))
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	k := min(r.chunks[0], len(p))
	r.chunks = r.chunks[1:]
	n := copy(p, r.data[:k])
	r.data = r.data[n:]
	return n, nil
}

// TestCopyCountBuffers checks which buffer each read of a splice gets: the
// small one while a session is idle or interactive, a pooled large one once
// a read fills the small one (bytes are flowing), and the small one again
// as soon as a read leaves the large one part empty (the source is drained,
// and the next read may wait for a long time: it must not hold 128 KiB).
// The bytes arrive whole and counted whatever the buffers.
func TestCopyCountBuffers(t *testing.T) {
	cases := []struct {
		name   string
		chunks []int
		bufs   []int
	}{
		{"interactive", []int{10, 200, 3}, []int{copySmall, copySmall, copySmall, copySmall}},
		{"bulk, then idle", []int{copySmall, copyLarge, copyLarge, 5000, 7},
			[]int{copySmall, copyLarge, copyLarge, copyLarge, copySmall, copySmall}},
		{"bulk twice", []int{copySmall, 9000, copySmall, copyLarge},
			[]int{copySmall, copyLarge, copySmall, copyLarge, copyLarge}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var total int
			for _, c := range tc.chunks {
				total += c
			}
			data := make([]byte, total)
			for i := range data {
				data[i] = byte(i * 7)
			}
			src := &scriptedReader{data: data, chunks: slices.Clone(tc.chunks)}
			var dst bytes.Buffer
			var n atomic.Int64
			copyCount(&dst, src, &n, &Counter{})
			if !bytes.Equal(dst.Bytes(), data) {
				t.Errorf("copied %d bytes, not the %d sent", dst.Len(), len(data))
			}
			if n.Load() != int64(total) {
				t.Errorf("counted %d bytes, want %d", n.Load(), total)
			}
			if !slices.Equal(src.bufs, tc.bufs) {
				t.Errorf("read buffers %v, want %v", src.bufs, tc.bufs)
			}
		})
	}
}
