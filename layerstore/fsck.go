package layerstore

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// FsckReport is what Fsck found. A store is consistent when Problems is
// empty; orphans are garbage a crash may leave (never referenced data) and
// do not make it inconsistent.
type FsckReport struct {
	Images, Layers, Blobs, Containers int
	Problems                          []string
	Orphans                           []Orphan
	// Repaired lists what --repair removed (broken images, dangling tags,
	// orphans).
	Repaired []string
}

// Clean reports whether the store is consistent.
func (r *FsckReport) Clean() bool { return len(r.Problems) == 0 }

// fsckState collects problems and what repair would delete to fix them.
type fsckState struct {
	rep       *FsckReport
	badImages map[digest.Digest]bool
	badTags   []string
	badLayers map[digest.Digest]bool
	// verified holds layer blobs (blob digest + diff ID) that re-hashed
	// correctly in the unlocked pre-pass: content-addressed blobs cannot
	// change, so the locked pass only re-checks the ones that failed.
	verified map[[2]digest.Digest]bool
}

func (f *fsckState) problem(format string, a ...any) {
	f.rep.Problems = append(f.rep.Problems, fmt.Sprintf(format, a...))
}

// Fsck checks the store: every tag names an image, every image's config and
// manifest blobs re-hash to their digests and match its layers, every layer
// has its dir and a blob that re-hashes to its digest and decompresses to its
// diff ID, every container's layers exist. It also lists orphans. With
// repair it deletes broken images and dangling tags and removes orphans
// (data it cannot rebuild is not invented).
func (s *Store) Fsck(repair bool) (*FsckReport, error) {
	f := &fsckState{rep: &FsckReport{}, badImages: map[digest.Digest]bool{}, badLayers: map[digest.Digest]bool{}, verified: map[[2]digest.Digest]bool{}}
	// Re-hashing gigabytes takes minutes: do it without the lock, so
	// imports and container creation are not held up behind fsck.
	if err := s.prehash(f); err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	check := func(tx *bolt.Tx) error {
		f.rep.Problems, f.badTags = nil, nil
		f.rep.Images, f.rep.Layers, f.rep.Blobs, f.rep.Containers = 0, 0, 0, 0
		f.badImages, f.badLayers = map[digest.Digest]bool{}, map[digest.Digest]bool{}
		if err := s.fsckLayers(tx, f); err != nil {
			return err
		}
		if err := s.fsckImages(tx, f); err != nil {
			return err
		}
		err := tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			f.rep.Containers++
			var ref containerRef
			if err := json.Unmarshal(v, &ref); err != nil {
				f.problem("container %s: corrupt record: %v", k, err)
				return nil
			}
			for _, l := range ref.Layers {
				if tx.Bucket(bucketLayers).Get([]byte(l)) == nil || f.badLayers[l] {
					f.problem("container %s: layer %s is missing or broken", ShortContainerID(ref.ID), l)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		orph, err := s.orphans(tx)
		if err != nil {
			return err
		}
		f.rep.Orphans = orph
		return nil
	}
	if err := s.view(check); err != nil {
		return nil, fmt.Errorf("fsck: %w", err)
	}
	tmp, err := s.sweepTmp(true)
	if err != nil {
		return nil, err
	}
	for _, p := range tmp {
		f.rep.Orphans = append(f.rep.Orphans, Orphan{Path: p, Kind: "tmp"})
	}
	if !repair {
		return f.rep, nil
	}
	err = s.update(func(tx *bolt.Tx) error {
		// Check again under the write lock: the store may have changed
		// since the read pass, and only what is broken now is removed.
		if err := check(tx); err != nil {
			return err
		}
		for _, t := range f.badTags {
			tx.Bucket(bucketTags).Delete([]byte(t))
			f.rep.Repaired = append(f.rep.Repaired, "removed dangling tag "+t)
		}
		var ids []digest.Digest
		for id := range f.badImages {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			for _, t := range tagIndex(tx)[id] {
				tx.Bucket(bucketTags).Delete([]byte(t))
			}
			tx.Bucket(bucketImages).Delete([]byte(id))
			f.rep.Repaired = append(f.rep.Repaired, "removed broken image "+id.String())
		}
		for c := range f.badLayers {
			m, err := mark(tx)
			if err != nil {
				return err
			}
			if m.layers[c] {
				continue // a container still needs it: nothing safe to do
			}
			// Only the record goes here; its files become orphans, which
			// collectGarbage removes after this commits.
			if err := tx.Bucket(bucketLayers).Delete([]byte(c)); err != nil {
				return err
			}
			f.rep.Repaired = append(f.rep.Repaired, "removed broken layer "+c.String())
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fsck repair: %w", err)
	}
	removed, err := s.collectGarbage()
	if err != nil {
		return nil, err
	}
	for _, o := range removed {
		f.rep.Repaired = append(f.rep.Repaired, "removed orphan "+o.Path)
	}
	// Report the store as it is now.
	after, err := s.Fsck(false)
	if err != nil {
		return nil, err
	}
	after.Repaired = f.rep.Repaired
	return after, nil
}

func (s *Store) fsckLayers(tx *bolt.Tx, f *fsckState) error {
	lb := tx.Bucket(bucketLayers)
	return lb.ForEach(func(k, v []byte) error {
		f.rep.Layers++
		c := digest.Digest(k)
		var l Layer
		if err := json.Unmarshal(v, &l); err != nil {
			f.problem("layer %s: corrupt record: %v", c, err)
			f.badLayers[c] = true
			return nil
		}
		fail := func(format string, a ...any) {
			f.problem("layer %s: %s", c, fmt.Sprintf(format, a...))
			f.badLayers[c] = true
		}
		if l.ChainID != c {
			fail("record names chain %s", l.ChainID)
		}
		if st, err := os.Stat(s.LayerDir(c)); err != nil || !st.IsDir() {
			fail("diff dir missing")
		}
		var onDisk Layer
		if data, err := os.ReadFile(s.layerHome(c) + "/layer.json"); err != nil || json.Unmarshal(data, &onDisk) != nil || onDisk.DiffID != l.DiffID {
			fail("layer.json missing or does not match the record")
		}
		if l.Parent != "" {
			var p Layer
			if ok, _ := getJSON(lb, l.Parent.String(), &p); !ok {
				fail("parent layer %s missing", l.Parent)
			} else if ChainID([]digest.Digest{p.ChainID, l.DiffID}) != c {
				fail("chain ID does not follow from parent and diff ID")
			}
		} else if l.DiffID != c {
			fail("base layer's chain ID is not its diff ID")
		}
		if f.verified[[2]digest.Digest{l.Blob, l.DiffID}] {
			f.rep.Blobs++
		} else if err := s.verifyLayerBlob(&l); err != nil {
			fail("%v", err)
		} else {
			f.rep.Blobs++
		}
		return nil
	})
}

// prehash verifies every layer blob outside any lock, recording the good
// ones in f.verified.
func (s *Store) prehash(f *fsckState) error {
	var layers []Layer
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLayers).ForEach(func(k, v []byte) error {
			var l Layer
			if json.Unmarshal(v, &l) == nil {
				layers = append(layers, l)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for i := range layers {
		if s.verifyLayerBlob(&layers[i]) == nil {
			f.verified[[2]digest.Digest{layers[i].Blob, layers[i].DiffID}] = true
		}
	}
	return nil
}

// verifyLayerBlob re-hashes a layer's blob and, when compressed, its
// uncompressed content against the diff ID.
func (s *Store) verifyLayerBlob(l *Layer) error {
	rc, err := s.OpenBlob(l.Blob)
	if err != nil {
		return err
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	comp, err := DetectCompression(br)
	if err != nil {
		return err
	}
	if comp == Uncompressed {
		if _, err := io.Copy(io.Discard, br); err != nil {
			return err
		}
		if l.Blob != l.DiffID {
			return fmt.Errorf("uncompressed blob %s is not the diff ID", l.Blob)
		}
		return nil
	}
	dec, done, err := decompress(br, comp)
	if err != nil {
		return err
	}
	defer done()
	v := l.DiffID.Verifier()
	if _, err := io.Copy(v, dec); err != nil {
		return fmt.Errorf("blob %s: %w", l.Blob, err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return err
	}
	if !v.Verified() {
		return fmt.Errorf("blob %s does not decompress to diff ID %s", l.Blob, l.DiffID)
	}
	return nil
}

func (s *Store) fsckImages(tx *bolt.Tx, f *fsckState) error {
	ib := tx.Bucket(bucketImages)
	err := tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
		if ib.Get(v) == nil {
			f.problem("tag %s: image %s missing", k, ShortID(digest.Digest(v)))
			f.badTags = append(f.badTags, string(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ib.ForEach(func(k, v []byte) error {
		f.rep.Images++
		id := digest.Digest(k)
		fail := func(format string, a ...any) {
			f.problem("image %s: %s", ShortID(id), fmt.Sprintf(format, a...))
			f.badImages[id] = true
		}
		var rec imageRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			fail("corrupt record: %v", err)
			return nil
		}
		data, err := s.ReadBlob(id)
		if err != nil {
			fail("config: %v", err)
			return nil
		}
		f.rep.Blobs++
		var cfg ocispec.Image
		if err := json.Unmarshal(data, &cfg); err != nil {
			fail("config: %v", err)
			return nil
		}
		if len(cfg.RootFS.DiffIDs) != len(rec.Layers) {
			fail("config has %d layers, record %d", len(cfg.RootFS.DiffIDs), len(rec.Layers))
			return nil
		}
		for i, c := range rec.Layers {
			if ChainID(cfg.RootFS.DiffIDs[:i+1]) != c {
				fail("layer %d: chain ID %s does not match the config", i, c)
			}
			if tx.Bucket(bucketLayers).Get([]byte(c)) == nil {
				fail("layer %s missing", c)
			} else if f.badLayers[c] {
				fail("layer %s broken", c)
			}
		}
		if _, err := s.ReadBlob(rec.Manifest); err != nil {
			fail("manifest: %v", err)
		} else {
			f.rep.Blobs++
		}
		if rec.Parent != "" && ib.Get([]byte(rec.Parent)) == nil {
			fail("parent image %s missing", ShortID(rec.Parent))
		}
		return nil
	})
}
