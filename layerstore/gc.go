package layerstore

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// marks is what the metadata references: the roots are images and
// containers, the edges image → config, manifest, layers and layer → blob.
type marks struct {
	layers map[digest.Digest]bool
	blobs  map[digest.Digest]bool
}

// mark walks meta.db. Preconditions: in a txn.
func mark(tx *bolt.Tx) (*marks, error) {
	m := &marks{layers: map[digest.Digest]bool{}, blobs: map[digest.Digest]bool{}}
	err := tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
		var rec imageRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("image record %s: %w", k, err)
		}
		m.blobs[rec.ID] = true
		m.blobs[rec.Manifest] = true
		for _, l := range rec.Layers {
			m.layers[l] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
		var ref containerRef
		if err := json.Unmarshal(v, &ref); err != nil {
			return fmt.Errorf("container record %s: %w", k, err)
		}
		for _, l := range ref.Layers {
			m.layers[l] = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = tx.Bucket(bucketLayers).ForEach(func(k, v []byte) error {
		if !m.layers[digest.Digest(k)] {
			return nil
		}
		var l Layer
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("layer record %s: %w", k, err)
		}
		m.blobs[l.Blob] = true
		return nil
	})
	return m, err
}

// freed is what a metadata deletion released. Its files are removed in a
// second step (removeFreed), after the deletion has committed.
type freed struct {
	layers    []digest.Digest // layer records deleted; dirs still on disk
	blobs     []digest.Digest // blobs that may have lost their last reference
	reclaimed int64
}

func (f *freed) add(g *freed) {
	if g == nil {
		return
	}
	f.layers = append(f.layers, g.layers...)
	f.blobs = append(f.blobs, g.blobs...)
	f.reclaimed += g.reclaimed
}

// freeUnreferenced deletes the records of those candidate layers that
// nothing references any more, and names the blobs that may now be
// unreferenced. It touches no file: a crash before the transaction commits
// must leave every record with its files.
//
// Preconditions: in a write txn.
func (s *Store) freeUnreferenced(tx *bolt.Tx, layers, blobs []digest.Digest) (*freed, error) {
	m, err := mark(tx)
	if err != nil {
		return nil, err
	}
	f := &freed{}
	lb := tx.Bucket(bucketLayers)
	for _, c := range layers {
		if m.layers[c] {
			continue
		}
		var l Layer
		ok, err := getJSON(lb, c.String(), &l)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if err := lb.Delete([]byte(c)); err != nil {
			return nil, err
		}
		f.reclaimed += l.Size
		blobs = append(blobs, l.Blob)
		f.layers = append(f.layers, c)
	}
	f.blobs = blobs
	return f, nil
}

// removeFreed deletes the files of what a committed deletion freed, in a
// second transaction. Two steps because a crash must never leave a record
// whose files are gone: after the first commit, leftover files are only
// orphans. Doing it under the lock, and re-checking references, keeps a
// layer or blob that a concurrent import has stored again in between.
func (s *Store) removeFreed(f *freed) error {
	if f == nil || len(f.layers)+len(f.blobs) == 0 {
		return nil
	}
	var trash []string
	err := s.update(func(tx *bolt.Tx) error {
		trash = nil
		m, err := mark(tx)
		if err != nil {
			return err
		}
		lb := tx.Bucket(bucketLayers)
		for _, c := range f.layers {
			if lb.Get([]byte(c)) != nil {
				continue
			}
			t, err := s.trashLayer(c)
			if err != nil {
				return err
			}
			if t != "" {
				trash = append(trash, t)
			}
			crashPoint("rmi-trashed")
		}
		for _, b := range f.blobs {
			if m.blobs[b] {
				continue
			}
			if err := os.Remove(s.BlobPath(b)); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("remove blob %s: %w", b, err)
			}
		}
		return nil
	})
	crashPoint("rmi-files-removed")
	for _, t := range trash {
		os.RemoveAll(t)
	}
	if err != nil {
		return fmt.Errorf("remove freed files: %w", err)
	}
	return nil
}

// trashLayer moves a layer's home out of layers/ into tmp/.
func (s *Store) trashLayer(c digest.Digest) (string, error) {
	home := s.layerHome(c)
	if _, err := os.Lstat(home); err != nil {
		return "", nil
	}
	t, err := os.MkdirTemp(s.tmpDir(), "trash-")
	if err != nil {
		return "", fmt.Errorf("remove layer %s: %w", c, err)
	}
	if err := os.Rename(home, filepath.Join(t, "layer")); err != nil {
		return "", fmt.Errorf("remove layer %s: %w", c, err)
	}
	return t, nil
}

// Orphan is an object on disk that nothing in meta.db references: the
// leftover of a crash (or of a concurrent import still running, for tmp/).
type Orphan struct {
	Path string // relative to the store root
	Kind string // "blob", "layer", "tmp"
}

// orphans lists unreferenced blobs and layer dirs (staging dirs are
// sweepTmp's). Preconditions: in a txn (the write txn to remove them).
func (s *Store) orphans(tx *bolt.Tx) ([]Orphan, error) {
	m, err := mark(tx)
	if err != nil {
		return nil, err
	}
	var out []Orphan
	for _, id := range s.staleContainerRefs(tx) {
		out = append(out, Orphan{Path: "containers/" + id, Kind: "container-ref"})
	}
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !m.blobs[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] {
			out = append(out, Orphan{Path: "blobs/sha256/" + e.Name(), Kind: "blob"})
		}
	}
	ents, err = os.ReadDir(s.layersDir())
	if err != nil {
		return nil, err
	}
	lb := tx.Bucket(bucketLayers)
	for _, e := range ents {
		c := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if !m.layers[c] || lb.Get([]byte(c)) == nil {
			out = append(out, Orphan{Path: "layers/" + e.Name(), Kind: "layer"})
		}
	}
	return out, nil
}

// collectGarbage removes every orphan: stale container refs and layer
// records nothing references (first transaction), then unreferenced blobs
// and layer dirs (second, for the reason given at removeFreed), and dead
// staging dirs. It returns what it removed.
func (s *Store) collectGarbage() ([]Orphan, error) {
	var removed []Orphan
	err := s.update(func(tx *bolt.Tx) error {
		removed = nil
		for _, id := range s.staleContainerRefs(tx) {
			if err := tx.Bucket(bucketContainers).Delete([]byte(id)); err != nil {
				return err
			}
			removed = append(removed, Orphan{Path: "containers/" + id, Kind: "container-ref"})
		}
		m, err := mark(tx)
		if err != nil {
			return err
		}
		lb := tx.Bucket(bucketLayers)
		var dead []digest.Digest
		lb.ForEach(func(k, v []byte) error {
			if !m.layers[digest.Digest(k)] {
				dead = append(dead, digest.Digest(k))
			}
			return nil
		})
		for _, c := range dead {
			if err := lb.Delete([]byte(c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("collect garbage: %w", err)
	}
	crashPoint("gc-between")
	var trash []string
	err = s.update(func(tx *bolt.Tx) error {
		trash = nil
		orph, err := s.orphans(tx)
		if err != nil {
			return err
		}
		for _, o := range orph {
			switch o.Kind {
			case "blob":
				if err := os.Remove(filepath.Join(s.root, o.Path)); err != nil && !os.IsNotExist(err) {
					return err
				}
			case "layer":
				t, err := s.trashLayer(digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(o.Path)))
				if err != nil {
					return err
				}
				if t != "" {
					trash = append(trash, t)
				}
			default:
				continue // container refs: handled above
			}
			removed = append(removed, o)
		}
		return nil
	})
	for _, t := range trash {
		os.RemoveAll(t)
	}
	if err != nil {
		return nil, fmt.Errorf("collect garbage: %w", err)
	}
	tmp, err := s.sweepTmp(false)
	for _, p := range tmp {
		removed = append(removed, Orphan{Path: p, Kind: "tmp"})
	}
	return removed, err
}

// staleContainerRefs are container refs whose holder is gone (HolderGone):
// the container engine deletes the container's directory before dropping
// the ref, and a host mount's server can die, so a crash in between
// leaves a ref that would hold its layers forever.
// Preconditions: in a txn.
func (s *Store) staleContainerRefs(tx *bolt.Tx) []string {
	var ids []string
	tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
		if s.holderGone(string(k)) {
			ids = append(ids, string(k))
		}
		return nil
	})
	return ids
}

func (s *Store) holderGone(holder string) bool {
	if s.HolderGone != nil {
		return s.HolderGone(holder)
	}
	_, err := os.Lstat(filepath.Join(s.root, "containers", holder))
	return os.IsNotExist(err)
}
