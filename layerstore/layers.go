package layerstore

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// Layer is one unpacked, read-only layer. Layers are shared between images
// by ChainID, so a base layer common to ten images is stored once.
type Layer struct {
	ChainID digest.Digest `json:"chainID"`
	DiffID  digest.Digest `json:"diffID"` // sha256 of the uncompressed tar
	Parent  digest.Digest `json:"parent,omitempty"`
	// Size is the bytes of file data in the layer (docker's layer size).
	Size int64 `json:"size"`
	// Blob is the layer tar as received (possibly compressed), kept in
	// blobs/ so export can hand back exactly what was imported.
	Blob      digest.Digest `json:"blob"`
	BlobSize  int64         `json:"blobSize"`
	MediaType string        `json:"mediaType"`
	Created   time.Time     `json:"created"`
}

// ChainID computes the chain ID of a stack of diff IDs, bottom first
// (image-spec config.md): ChainID(L0) = DiffID(L0),
// ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
func ChainID(diffIDs []digest.Digest) digest.Digest {
	var c digest.Digest
	for i, d := range diffIDs {
		if i == 0 {
			c = d
			continue
		}
		c = digest.FromString(c.String() + " " + d.String())
	}
	return c
}

// stagedLayer is a layer unpacked in a stage, ready to be committed.
type stagedLayer struct {
	layer   Layer
	dir     string // stage path holding diff/ and layer.json
	blobTmp string // stage path of the blob file
}

// countingHash is a sha256 that counts what it hashes.
type countingHash struct {
	hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.Hash.Write(p)
}

// stageLayer reads a layer tar (plain or compressed) from r into the stage:
// the raw bytes to blob, the unpacked tree to layer/diff. Nothing is
// visible in the store until commitLayer. parent is the chain ID of the
// layer below, or "".
func (s *Store) stageLayer(st *stage, r io.Reader, parent digest.Digest, parentDiffs []digest.Digest) (*stagedLayer, error) {
	blobPath := st.path("blob")
	bf, err := os.OpenFile(blobPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("stage blob: %w", err)
	}
	defer bf.Close()
	bw := bufio.NewWriterSize(bf, 1<<20)
	rawHash := &countingHash{Hash: sha256.New()}
	br := bufio.NewReaderSize(io.TeeReader(r, io.MultiWriter(rawHash, bw)), 1<<20)

	comp, err := DetectCompression(br)
	if err != nil {
		return nil, err
	}
	dec, closeDec, err := decompress(br, comp)
	if err != nil {
		return nil, err
	}
	defer closeDec()
	max := s.MaxLayerSize
	if max <= 0 {
		max = DefaultMaxLayerSize
	}
	diffHash := &countingHash{Hash: sha256.New()}
	var plain io.Reader = &boundedReader{r: dec, max: max}
	if comp != Uncompressed {
		plain = io.TeeReader(plain, diffHash)
	}
	tail := &tailReader{r: plain}

	home := st.path("layer")
	if err := os.MkdirAll(home+"/diff", 0o755); err != nil {
		return nil, fmt.Errorf("stage layer: %w", err)
	}
	u := newUnpacker(home+"/diff", max)
	if err := u.unpack(tar.NewReader(tail)); err != nil {
		return nil, err
	}
	if tail.n == 0 {
		return nil, fmt.Errorf("%w: empty input, not a tar archive", ErrInvalidArchive)
	}
	if !tail.endedCleanly() {
		return nil, fmt.Errorf("%w: truncated tar (no end-of-archive marker)", ErrInvalidArchive)
	}
	// Read the rest: zero padding, and for compressed streams the trailer
	// whose checksum proves the stream intact.
	if _, err := io.CopyBuffer(io.Discard, plain, u.buf); err != nil {
		return nil, fmt.Errorf("%w: %s stream: %v", ErrInvalidArchive, comp, err)
	}
	if _, err := io.CopyBuffer(io.Discard, br, u.buf); err != nil {
		return nil, fmt.Errorf("read layer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("stage blob: %w", err)
	}
	blob := digest.NewDigest(digest.SHA256, rawHash)
	diffID := blob
	if comp != Uncompressed {
		diffID = digest.NewDigest(digest.SHA256, diffHash)
	}
	chain := ChainID(append(append([]digest.Digest{}, parentDiffs...), diffID))
	l := Layer{
		ChainID:   chain,
		DiffID:    diffID,
		Parent:    parent,
		Size:      u.size,
		Blob:      blob,
		BlobSize:  rawHash.n,
		MediaType: comp.MediaType(),
		Created:   time.Now().UTC(),
	}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(home+"/layer.json", data, 0o600); err != nil {
		return nil, fmt.Errorf("stage layer: %w", err)
	}
	return &stagedLayer{layer: l, dir: home, blobTmp: blobPath}, nil
}
