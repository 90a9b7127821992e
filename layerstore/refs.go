package layerstore

import (
	"encoding/json"
	"fmt"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// containerRef records that a container was made from an image. It keeps
// the image's chain IDs, not only its ID, so the layers outlive an image
// removed with `rmi -f` while the container still mounts them.
type containerRef struct {
	ID     string          `json:"id"`
	Image  digest.Digest   `json:"image"`
	Layers []digest.Digest `json:"layers"`
}

// AddContainerRef records that container containerID holds image imageID
// (and its layers). Adding the same pair twice is harmless.
func (s *Store) AddContainerRef(imageID digest.Digest, containerID string) error {
	if containerID == "" {
		return fmt.Errorf("add container ref: empty container ID")
	}
	return s.update(func(tx *bolt.Tx) error {
		var rec imageRecord
		ok, err := getJSON(tx.Bucket(bucketImages), imageID.String(), &rec)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("add container ref %s: %w", containerID, &NotFoundError{Ref: imageID.String()})
		}
		return putJSON(tx.Bucket(bucketContainers), containerID, &containerRef{ID: containerID, Image: imageID, Layers: rec.Layers})
	})
}

// RemoveContainerRef drops a container's hold. Its layers are freed by the
// next rmi or prune if nothing else holds them. Removing a ref that does not
// exist is not an error (container removal must be idempotent).
func (s *Store) RemoveContainerRef(imageID digest.Digest, containerID string) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketContainers)
		var ref containerRef
		ok, err := getJSON(b, containerID, &ref)
		if err != nil || !ok {
			return err
		}
		if imageID != "" && ref.Image != imageID {
			return fmt.Errorf("remove container ref %s: held image is %s, not %s", containerID, ShortID(ref.Image), ShortID(imageID))
		}
		return b.Delete([]byte(containerID))
	})
}

// ImagesUsedByContainers maps each image ID to the containers (and other
// holders) holding it.
func (s *Store) ImagesUsedByContainers() (map[digest.Digest][]string, error) {
	m := map[digest.Digest][]string{}
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		m, err = s.containerUsers(tx)
		return err
	})
	return m, err
}

// containerUsers maps each image ID to the holders of its container refs,
// but for the holders that are gone (HolderGone): a container removed
// with --rm is gone for every command before its ref is dropped.
func (s *Store) containerUsers(tx *bolt.Tx) (map[digest.Digest][]string, error) {
	m := map[digest.Digest][]string{}
	err := tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
		if s.holderGone(string(k)) {
			return nil
		}
		var ref containerRef
		if err := json.Unmarshal(v, &ref); err != nil {
			return fmt.Errorf("container record %s: %w", k, err)
		}
		m[ref.Image] = append(m[ref.Image], ref.ID)
		return nil
	})
	return m, err
}

// ContainerRefs lists every container's hold: container ID → image ID.
func (s *Store) ContainerRefs() (map[string]digest.Digest, error) {
	m := map[string]digest.Digest{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var ref containerRef
			if err := json.Unmarshal(v, &ref); err != nil {
				return fmt.Errorf("container record %s: %w", k, err)
			}
			m[ref.ID] = ref.Image
			return nil
		})
	})
	return m, err
}
