package layerstore

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Compression is how a layer blob is compressed.
type Compression int

// Supported compressions. Others (xz, lz4, ...) are refused by magic number
// with a clear error rather than read as a corrupt tar.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
	Bzip2
)

func (c Compression) String() string {
	return [...]string{"none", "gzip", "zstd", "bzip2"}[c]
}

// MediaType is the OCI layer media type for a blob compressed with c.
// bzip2 has no OCI media type; docker's legacy one is used.
func (c Compression) MediaType() string {
	switch c {
	case Gzip:
		return ocispec.MediaTypeImageLayerGzip
	case Zstd:
		return ocispec.MediaTypeImageLayerZstd
	case Bzip2:
		return "application/vnd.docker.image.rootfs.diff.tar.bzip2"
	}
	return ocispec.MediaTypeImageLayer
}

var magics = []struct {
	magic []byte
	c     Compression
	name  string // non-empty: recognised but unsupported
}{
	{[]byte{0x1f, 0x8b}, Gzip, ""},
	{[]byte{0x28, 0xb5, 0x2f, 0xfd}, Zstd, ""},
	{[]byte("BZh"), Bzip2, ""},
	{[]byte{0xfd, '7', 'z', 'X', 'Z', 0x00}, 0, "xz"},
	{[]byte{0x04, 0x22, 0x4d, 0x18}, 0, "lz4"},
	{[]byte{0x5d, 0x00, 0x00}, 0, "lzma"},
	{[]byte("PK\x03\x04"), 0, "zip"},
	{[]byte("7z\xbc\xaf\x27\x1c"), 0, "7z"},
}

// DetectCompression names the compression of the stream behind br by its
// magic number, without consuming anything.
func DetectCompression(br *bufio.Reader) (Compression, error) {
	head, _ := br.Peek(8)
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			if m.name != "" {
				return 0, fmt.Errorf("%w: unsupported compression %s (use a plain, gzip, zstd or bzip2 tar)", ErrInvalidArchive, m.name)
			}
			return m.c, nil
		}
	}
	return Uncompressed, nil
}

// decompress returns a reader of the uncompressed stream and a function that
// releases decoder resources.
func decompress(br *bufio.Reader, c Compression) (io.Reader, func(), error) {
	switch c {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip: %v", ErrInvalidArchive, err)
		}
		return zr, func() { zr.Close() }, nil
	case Zstd:
		// One goroutine and a bounded window: a hostile frame header must
		// not make us allocate gigabytes before the first byte is checked.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(256<<20), zstd.WithDecoderMaxMemory(1<<30))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: zstd: %v", ErrInvalidArchive, err)
		}
		return zr, zr.Close, nil
	case Bzip2:
		return bzip2.NewReader(br), func() {}, nil
	}
	return br, func() {}, nil
}

// boundedReader fails once more than max bytes have been read: the
// decompression-bomb guard, applied to the uncompressed stream.
type boundedReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		return n, fmt.Errorf("%w: uncompressed layer exceeds the limit of %d bytes", ErrInvalidArchive, b.max)
	}
	return n, err
}

// tailReader remembers the last 512-byte block it passed on, so that a tar
// cut at a header boundary (which archive/tar accepts as a clean EOF) can be
// told from one that ends with its zero-block end marker.
type tailReader struct {
	r    io.Reader
	n    int64
	tail [512]byte
}

func (t *tailReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n >= len(t.tail) {
		copy(t.tail[:], p[n-len(t.tail):n])
	} else if n > 0 {
		copy(t.tail[:], t.tail[n:])
		copy(t.tail[len(t.tail)-n:], p[:n])
	}
	t.n += int64(n)
	return n, err
}

// endedCleanly reports whether the stream was non-empty and its last block
// was zeros, as every tar's end-of-archive marker is.
func (t *tailReader) endedCleanly() bool {
	if t.n < 1024 {
		return false
	}
	for _, b := range t.tail {
		if b != 0 {
			return false
		}
	}
	return true
}
