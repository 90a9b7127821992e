package layerstore

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// ImportOptions shape the image `lamina import` makes from a rootfs tar.
type ImportOptions struct {
	// Tags to give the image ("repo[:tag]"); may be empty (a dangling image).
	Tags []string
	// Changes are Dockerfile instructions applied to the config, as
	// `docker import --change` (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE,
	// LABEL, VOLUME, STOPSIGNAL).
	Changes []string
	// Message is the history comment (-m); default "Imported from <Source>".
	Message string
	// Source names the input in the default comment ("-" for stdin).
	Source string
	// Digest, when set, is the digest the input must have (as a manifest
	// names a layer blob); anything else is refused before it is stored.
	Digest digest.Digest
}

// ImportTar makes a one-layer image from a rootfs tar (plain, gzip, zstd
// or bzip2). Malformed or unsafe input is refused before anything becomes
// visible in the store; the image appears atomically with its tags.
func (s *Store) ImportTar(r io.Reader, opts ImportOptions) (*Image, error) {
	var refs []Reference
	for _, t := range opts.Tags {
		ref, err := ParseReference(t)
		if err != nil {
			return nil, err
		}
		refs = append(refs, ref)
	}
	now := time.Now().UTC()
	cfg := ocispec.Image{
		Created:  &now,
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
	}
	if err := ApplyChanges(&cfg.Config, opts.Changes); err != nil {
		return nil, err
	}

	// Crashed imports leave staging dirs; clearing them here keeps tmp/
	// from growing without waiting for a prune or fsck --repair.
	s.sweepTmp(false)
	st, err := s.newStage()
	if err != nil {
		return nil, err
	}
	defer st.release()
	sl, err := s.stageLayer(st, r, "", nil)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if opts.Digest != "" && opts.Digest != sl.layer.Blob {
		return nil, fmt.Errorf("import: %w: content has digest %s, expected %s", ErrInvalidArchive, sl.layer.Blob, opts.Digest)
	}

	comment := opts.Message
	if comment == "" {
		src := opts.Source
		if src == "" {
			src = "-"
		}
		comment = "Imported from " + src
	}
	cfg.RootFS = ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{sl.layer.DiffID}}
	cfg.History = []ocispec.History{{Created: &now, Comment: comment}}
	return s.commitImage(st, []*stagedLayer{sl}, nil, &cfg, "", refs)
}

// commitImage stores the config and manifest of an image whose layers are
// existing (have) or staged, and records it with its tags, all in one
// transaction. Staged files are synced first, with one syncfs rather than a
// fsync per file: a 10k-file layer would otherwise spend most of its import
// time in fsync.
func (s *Store) commitImage(st *stage, staged []*stagedLayer, have []Layer, cfg *ocispec.Image, parent digest.Digest, refs []Reference) (*Image, error) {
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath, id, err := stageBlob(st, "config", cfgJSON)
	if err != nil {
		return nil, err
	}
	if err := syncfs(st.dir); err != nil {
		return nil, fmt.Errorf("sync staged image: %w", err)
	}
	crashPoint("import-staged")

	var trash []string
	rec := imageRecord{ID: id, Parent: parent, Created: cfg.Created.UTC()}
	if len(refs) > 0 {
		rec.LastTagTime = time.Now().UTC()
	}
	err = s.update(func(tx *bolt.Tx) error {
		trash, rec.Layers = nil, nil
		all := append([]Layer{}, have...)
		if parent != "" && tx.Bucket(bucketImages).Get([]byte(parent)) == nil {
			return fmt.Errorf("parent image %s: %w", ShortID(parent), ErrNotFound)
		}
		for _, l := range have {
			if tx.Bucket(bucketLayers).Get([]byte(l.ChainID)) == nil {
				return fmt.Errorf("layer %s: %w", l.ChainID, ErrNotFound)
			}
		}
		for _, sl := range staged {
			l, t, err := s.commitLayer(tx, st, sl)
			trash = append(trash, t...)
			if err != nil {
				return err
			}
			all = append(all, l)
		}
		// The manifest is made here, from the layers as stored: a layer
		// another import stored first keeps its blob (maybe compressed
		// differently from ours), and the manifest must name that one.
		man := ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: id, Size: int64(len(cfgJSON))},
		}
		for _, l := range all {
			rec.Layers = append(rec.Layers, l.ChainID)
			man.Layers = append(man.Layers, ocispec.Descriptor{MediaType: l.MediaType, Digest: l.Blob, Size: l.BlobSize})
		}
		manJSON, err := json.Marshal(man)
		if err != nil {
			return err
		}
		manPath, manDigest, err := stageBlob(st, "manifest", manJSON)
		if err != nil {
			return err
		}
		if err := syncFile(manPath); err != nil {
			return err
		}
		rec.Manifest = manDigest
		if err := s.commitBlob(cfgPath, id); err != nil {
			return err
		}
		if err := s.commitBlob(manPath, manDigest); err != nil {
			return err
		}
		if err := syncDir(s.blobDir()); err != nil {
			return err
		}
		if err := syncDir(s.layersDir()); err != nil {
			return err
		}
		crashPoint("import-in-txn") // files renamed into place, records not committed
		if err := putJSON(tx.Bucket(bucketImages), id.String(), &rec); err != nil {
			return err
		}
		for _, r := range refs {
			if err := tx.Bucket(bucketTags).Put([]byte(r.String()), []byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, t := range trash {
		os.RemoveAll(t)
	}
	if err != nil {
		return nil, fmt.Errorf("commit image: %w", err)
	}
	crashPoint("import-committed")
	return s.ResolveImage(id.String())
}

// commitLayer moves a staged layer into layers/ and records it, unless the
// same chain ID is already there (another import got there first: the
// layer is stored once, and the stored one is returned). It returns paths
// of garbage to remove after the transaction.
//
// Preconditions: inside a write transaction (the store's write lock).
func (s *Store) commitLayer(tx *bolt.Tx, st *stage, sl *stagedLayer) (Layer, []string, error) {
	b := tx.Bucket(bucketLayers)
	key := sl.layer.ChainID.String()
	home := s.layerHome(sl.layer.ChainID)
	_, statErr := os.Lstat(home)
	var trash []string
	var have Layer
	if ok, err := getJSON(b, key, &have); err != nil {
		return have, nil, err
	} else if ok && statErr == nil {
		if have.Blob == sl.layer.Blob {
			// Ours is the same blob: put it back should it have gone missing.
			return have, nil, s.commitBlob(sl.blobTmp, sl.layer.Blob)
		}
		return have, nil, nil
	}
	if statErr == nil {
		// A dir with no record: an import that crashed after its rename.
		// Under the lock it is garbage; ours replaces it.
		t := st.path("old-layer")
		if err := os.Rename(home, t); err != nil {
			return have, nil, fmt.Errorf("replace orphan layer %s: %w", key, err)
		}
		trash = append(trash, t)
	}
	if err := os.Rename(sl.dir, home); err != nil {
		return have, trash, fmt.Errorf("commit layer %s: %w", key, err)
	}
	if err := s.commitBlob(sl.blobTmp, sl.layer.Blob); err != nil {
		return have, trash, err
	}
	return sl.layer, trash, putJSON(b, key, &sl.layer)
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncfs flushes the filesystem holding dir: every staged file at once.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
