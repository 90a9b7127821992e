package layerstore

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestOpenRepairsMetadataWithoutBuckets: a crash during a store's very
// first Open can leave a meta.db without its buckets; the store must work
// on it, as on a fresh one.
func TestOpenRepairsMetadataWithoutBuckets(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	users, err := s.ImagesUsedByContainers()
	if err != nil || len(users) != 0 {
		t.Fatalf("on a meta.db without buckets: %v, %v", users, err)
	}
	refs, err := s.ContainerRefs()
	if err != nil || len(refs) != 0 {
		t.Fatalf("after the repair: %v, %v", refs, err)
	}
}
