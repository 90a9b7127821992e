package layerstore

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

// Image is an image: an OCI config over a stack of layers.
type Image struct {
	ID       digest.Digest // digest of the config blob
	Config   ocispec.Image
	RepoTags []string // "repo:tag", sorted
	Layers   []*Layer // bottom first
	// Parent is the image this one was built on (build/commit); empty for
	// imported images. history uses it to name rows, rmi to refuse deleting
	// a parent.
	Parent      digest.Digest
	Created     time.Time
	Manifest    digest.Digest // digest of the OCI manifest blob
	Size        int64         // sum of layer sizes, as docker images shows
	LastTagTime time.Time
}

// ShortID is the 12-hex form docker shows.
func ShortID(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

// ChainIDs are the image's layer chain IDs, bottom first.
func (img *Image) ChainIDs() []digest.Digest {
	ids := make([]digest.Digest, len(img.Layers))
	for i, l := range img.Layers {
		ids[i] = l.ChainID
	}
	return ids
}

// LowerDirs are the image's layer dirs top first, the order of overlay's
// lowerdir option.
func (img *Image) LowerDirs(s *Store) []string {
	dirs := make([]string, 0, len(img.Layers))
	for i := len(img.Layers) - 1; i >= 0; i-- {
		dirs = append(dirs, s.LayerDir(img.Layers[i].ChainID))
	}
	return dirs
}

// imageRecord is an image as meta.db keeps it; the config itself is the
// blob named by ID.
type imageRecord struct {
	ID          digest.Digest   `json:"id"`
	Manifest    digest.Digest   `json:"manifest"`
	Parent      digest.Digest   `json:"parent,omitempty"`
	Created     time.Time       `json:"created"`
	Layers      []digest.Digest `json:"layers"` // chain IDs, bottom first
	LastTagTime time.Time       `json:"lastTagTime,omitzero"`
}

// loadImage builds an Image from its record. Preconditions: in a txn.
func (s *Store) loadImage(tx *bolt.Tx, rec *imageRecord, tags map[digest.Digest][]string) (*Image, error) {
	img := &Image{
		ID:          rec.ID,
		RepoTags:    tags[rec.ID],
		Parent:      rec.Parent,
		Created:     rec.Created,
		Manifest:    rec.Manifest,
		LastTagTime: rec.LastTagTime,
	}
	if img.RepoTags == nil {
		img.RepoTags = []string{}
	}
	lb := tx.Bucket(bucketLayers)
	for _, c := range rec.Layers {
		var l Layer
		ok, err := getJSON(lb, c.String(), &l)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("image %s: layer %s missing from the store (run lamina system fsck)", ShortID(rec.ID), c)
		}
		img.Layers = append(img.Layers, &l)
		img.Size += l.Size
	}
	data, err := s.ReadBlob(rec.ID)
	if err != nil {
		return nil, fmt.Errorf("image %s config: %w", ShortID(rec.ID), err)
	}
	if err := json.Unmarshal(data, &img.Config); err != nil {
		return nil, fmt.Errorf("image %s config: %w", ShortID(rec.ID), err)
	}
	return img, nil
}

// tagIndex maps image IDs to their sorted tags. Preconditions: in a txn.
func tagIndex(tx *bolt.Tx) map[digest.Digest][]string {
	m := map[digest.Digest][]string{}
	tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
		id := digest.Digest(v)
		m[id] = append(m[id], string(k))
		return nil
	})
	for _, v := range m {
		sort.Strings(v)
	}
	return m
}

// Layer returns the layer record for chainID.
func (s *Store) Layer(chainID digest.Digest) (*Layer, error) {
	var l Layer
	err := s.view(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bucketLayers), chainID.String(), &l)
		if err == nil && !ok {
			err = fmt.Errorf("layer %s: %w", chainID, ErrNotFound)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// Images lists every image, newest first.
func (s *Store) Images() ([]*Image, error) {
	var out []*Image
	err := s.view(func(tx *bolt.Tx) error {
		tags := tagIndex(tx)
		return tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
			var rec imageRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("image record %s: %w", k, err)
			}
			img, err := s.loadImage(tx, &rec, tags)
			if err != nil {
				return err
			}
			out = append(out, img)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// ResolveImage finds an image by "name[:tag]", full ID ("sha256:<hex>" or
// "<hex>") or unique ID prefix, in docker's order: a tag first, then an ID.
// Errors match ErrNotFound (message "No such image: <ref>") or ErrAmbiguous.
func (s *Store) ResolveImage(ref string) (*Image, error) {
	var img *Image
	err := s.view(func(tx *bolt.Tx) error {
		id, err := resolveID(tx, ref)
		if err != nil {
			return err
		}
		var rec imageRecord
		if _, err := getJSON(tx.Bucket(bucketImages), id.String(), &rec); err != nil {
			return err
		}
		img, err = s.loadImage(tx, &rec, tagIndex(tx))
		return err
	})
	return img, err
}

// resolveID maps a reference to an image ID. Preconditions: in a txn.
func resolveID(tx *bolt.Tx, ref string) (digest.Digest, error) {
	images := tx.Bucket(bucketImages)
	if d, err := digest.Parse(ref); err == nil {
		if images.Get([]byte(d.String())) != nil {
			return d, nil
		}
		return "", &NotFoundError{Ref: ref}
	}
	if r, err := ParseReference(ref); err == nil {
		if v := tx.Bucket(bucketTags).Get([]byte(r.String())); v != nil {
			return digest.Digest(v), nil
		}
	}
	prefix := strings.TrimPrefix(ref, "sha256:")
	if prefix != "" && isHex(prefix) && len(prefix) <= 64 {
		var found []digest.Digest
		c := images.Cursor()
		p := []byte("sha256:" + prefix)
		for k, _ := c.Seek(p); k != nil && strings.HasPrefix(string(k), string(p)); k, _ = c.Next() {
			found = append(found, digest.Digest(k))
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			return "", fmt.Errorf("%w: %s", ErrAmbiguous, ref)
		}
	}
	if r, err := ParseReference(ref); err == nil {
		return "", &NotFoundError{Ref: r.String()}
	}
	return "", &NotFoundError{Ref: ref}
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Tag points target ("repo[:tag]") at the image source resolves to, moving
// the tag if another image had it.
func (s *Store) Tag(source, target string) error {
	r, err := ParseReference(target)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		id, err := resolveID(tx, source)
		if err != nil {
			return err
		}
		return setTag(tx, r, id)
	})
}

// setTag records tag r on image id. Preconditions: in a write txn.
func setTag(tx *bolt.Tx, r Reference, id digest.Digest) error {
	if err := tx.Bucket(bucketTags).Put([]byte(r.String()), []byte(id)); err != nil {
		return err
	}
	b := tx.Bucket(bucketImages)
	var rec imageRecord
	ok, err := getJSON(b, id.String(), &rec)
	if err != nil || !ok {
		return err
	}
	rec.LastTagTime = time.Now().UTC()
	return putJSON(b, id.String(), &rec)
}

// Untag removes tag ref ("repo[:tag]"). It returns ErrNotFound if no image
// has it.
func (s *Store) Untag(ref string) error {
	r, err := ParseReference(ref)
	if err != nil {
		return err
	}
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTags)
		if b.Get([]byte(r.String())) == nil {
			return &NotFoundError{Ref: r.String()}
		}
		return b.Delete([]byte(r.String()))
	})
}

// Children are the images whose Parent is id.
func (s *Store) Children(id digest.Digest) ([]digest.Digest, error) {
	var out []digest.Digest
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		out, err = children(tx, id)
		return err
	})
	return out, err
}

func children(tx *bolt.Tx, id digest.Digest) ([]digest.Digest, error) {
	var out []digest.Digest
	err := tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
		var rec imageRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		if rec.Parent == id {
			out = append(out, rec.ID)
		}
		return nil
	})
	return out, err
}
