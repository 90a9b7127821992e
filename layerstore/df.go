package layerstore

import (
	"encoding/json"
	"io/fs"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// ImageUsage is one image's share of the disk, as `system df -v` shows it.
type ImageUsage struct {
	Image      *Image
	SharedSize int64 // layers other images also use
	UniqueSize int64 // layers only this image uses
	Containers int
}

// ContainerUsage is a container's hold and the size of its read-write layer.
type ContainerUsage struct {
	ID    string
	Image digest.Digest
	Size  int64 // bytes in <root>/containers/<id>/upper (docker's SizeRw)
}

// DiskUsage is `system df`: shared layers are counted once.
type DiskUsage struct {
	Images     []ImageUsage
	Containers []ContainerUsage
	// LayersSize is the size of every layer in the store, each once.
	LayersSize int64
	// Reclaimable is what removing every image no container uses frees.
	Reclaimable int64
	Active      int // images some container uses
}

// DiskUsage measures the store.
func (s *Store) DiskUsage() (*DiskUsage, error) {
	imgs, err := s.Images()
	if err != nil {
		return nil, err
	}
	du := &DiskUsage{}
	var refs map[string]digest.Digest
	users := map[digest.Digest][]string{}
	inUse := map[digest.Digest]bool{} // layers a container holds
	err = s.view(func(tx *bolt.Tx) error {
		if users, err = s.containerUsers(tx); err != nil {
			return err
		}
		refs = map[string]digest.Digest{}
		tx.Bucket(bucketContainers).ForEach(func(k, v []byte) error {
			var ref containerRef
			if json.Unmarshal(v, &ref) == nil {
				refs[ref.ID] = ref.Image
				for _, l := range ref.Layers {
					inUse[l] = true
				}
			}
			return nil
		})
		return tx.Bucket(bucketLayers).ForEach(func(k, v []byte) error {
			var l Layer
			if json.Unmarshal(v, &l) == nil {
				du.LayersSize += l.Size
				if !inUse[l.ChainID] {
					du.Reclaimable += l.Size
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	count := map[digest.Digest]int{}
	for _, img := range imgs {
		for _, l := range img.Layers {
			count[l.ChainID]++
		}
	}
	for _, img := range imgs {
		u := ImageUsage{Image: img, Containers: len(users[img.ID])}
		for _, l := range img.Layers {
			if count[l.ChainID] > 1 {
				u.SharedSize += l.Size
			} else {
				u.UniqueSize += l.Size
			}
		}
		if u.Containers > 0 {
			du.Active++
		}
		du.Images = append(du.Images, u)
	}
	for id, img := range refs {
		du.Containers = append(du.Containers, ContainerUsage{ID: id, Image: img, Size: dirSize(filepath.Join(s.root, "containers", id, "upper"))})
	}
	return du, nil
}

// dirSize sums the sizes of regular files under dir (0 if it is missing).
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
