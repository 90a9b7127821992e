package layerstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
)

// stageBlob writes data into the stage and returns its digest.
func stageBlob(st *stage, name string, data []byte) (string, digest.Digest, error) {
	p := st.path(name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return "", "", fmt.Errorf("stage blob: %w", err)
	}
	return p, digest.FromBytes(data), nil
}

// commitBlob moves a staged, synced file into blobs/ as d. A blob that is
// already there is identical by construction (same digest), so the staged
// copy is dropped: concurrent imports of one tar store it once.
//
// Preconditions: the metadata write lock is held (called inside update),
// and the staged file was synced.
func (s *Store) commitBlob(src string, d digest.Digest) error {
	dst := s.BlobPath(d)
	if _, err := os.Lstat(dst); err == nil {
		return os.Remove(src)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("commit blob %s: %w", d, err)
	}
	return nil
}

// ReadBlob returns the blob d after checking that its content still hashes
// to d: corruption on disk is never handed on.
func (s *Store) ReadBlob(d digest.Digest) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("read blob %q: %w", d, err)
	}
	data, err := os.ReadFile(s.BlobPath(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read blob %s: %w", d, ErrNotFound)
		}
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if got := digest.FromBytes(data); got != d {
		return nil, fmt.Errorf("read blob %s: content hashes to %s (corrupt)", d, got)
	}
	return data, nil
}

// OpenBlob opens the blob d for streaming; the returned reader fails at EOF
// if the content does not hash to d.
func (s *Store) OpenBlob(d digest.Digest) (io.ReadCloser, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("open blob %q: %w", d, err)
	}
	f, err := os.Open(s.BlobPath(d))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open blob %s: %w", d, ErrNotFound)
		}
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	return &verifyingReader{f: f, v: d.Verifier(), d: d}, nil
}

type verifyingReader struct {
	f *os.File
	v digest.Verifier
	d digest.Digest
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.v.Write(p[:n])
	if err == io.EOF && !r.v.Verified() {
		return n, fmt.Errorf("blob %s: content does not match its digest (corrupt)", r.d)
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.f.Close() }
