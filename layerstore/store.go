// Package layerstore keeps lamina's images: content-addressed blobs, layers
// unpacked once into kernel overlay format and shared by chain ID, image
// records and tags, and the references containers hold on them.
//
// Layout under the store root (see shared/DESIGN.md):
//
//	blobs/sha256/<hex>          immutable blobs: layer tars, configs, manifests
//	layers/<chainhex>/diff/     unpacked layer, kernel overlay format
//	layers/<chainhex>/layer.json
//	meta.db                     bbolt: images, tags, layers, container refs
//	tmp/                        staging; every object is built here and renamed
//
// Invariants, and where they are kept:
//
//   - meta.db is the single commit point. A blob or layer directory is
//     renamed into place only inside a bbolt write transaction that records
//     it, so another process never sees (or garbage-collects) a half-made
//     object: the bbolt file lock is the store's write lock.
//   - Everything in blobs/ and layers/ was fsynced in tmp/ before its rename.
//   - Deleting is the mirror image: one transaction deletes records, and
//     only after it commits does a second one (re-checking references)
//     remove the files. So a crash can leave only garbage, never a record
//     whose files are gone: staging dirs of dead processes, objects renamed
//     into place whose transaction never committed, files whose records
//     were deleted. Fsck reports those as orphans (not errors) and GC
//     removes them. crashpoint.go lets tests kill lamina at each step.
//   - A layer is deleted only when no image and no container references it.
//     Containers keep the chain IDs they were created from, so `rmi -f` of
//     the image they came from never pulls layers out from under them.
//
// Lock order: the bbolt file lock is taken by every metadata operation and
// held for one short transaction, under the root directory's flock
// (metaLock); a staging dir's own flock (see stage.go) is taken before
// both and held for the whole import.
package layerstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no image, layer or tag answers to the reference.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: an ID prefix matches more than one image.
	ErrAmbiguous = errors.New("ambiguous image ID prefix")
	// ErrConflict: rmi refused (image in use, has children, several tags).
	ErrConflict = errors.New("conflict")
	// ErrInvalidArchive: the tar stream is malformed or unsafe.
	ErrInvalidArchive = errors.New("invalid archive")
)

var errNoBuckets = errors.New("store metadata is not initialised")

// NotFoundError names what was looked for; it matches ErrNotFound.
type NotFoundError struct{ Ref string }

func (e *NotFoundError) Error() string { return "No such image: " + e.Ref }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// lockTimeout bounds the wait for the metadata lock. Transactions are short
// (no unpacking happens under the lock), so a long wait means a stuck process.
const lockTimeout = 2 * time.Minute

var (
	bucketImages     = []byte("images")
	bucketTags       = []byte("tags")
	bucketLayers     = []byte("layers")
	bucketContainers = []byte("containers")
	bucketMeta       = []byte("meta")
	allBuckets       = [][]byte{bucketImages, bucketTags, bucketLayers, bucketContainers, bucketMeta}
)

// Store is an open store. It holds no lock and no file open between calls:
// every call opens meta.db, runs one transaction and closes it, so many
// short lamina processes (and long-lived monitors) share the store.
type Store struct {
	root string
	// MaxLayerSize bounds the uncompressed size of one imported layer tar
	// (a decompression bomb is refused past it). Zero means DefaultMaxLayerSize.
	MaxLayerSize int64
	// IsRunning, when set, tells rmi that a container is running (a hard
	// conflict, as in docker) rather than stopped (a soft one, -f overrides).
	IsRunning func(containerID string) bool
	// HolderGone, when set, tells garbage collection that the holder of a
	// container ref (a container ID, or another name a caller holds an
	// image under, such as a host mount's) is gone for good, so its ref
	// is stale. Unset, a holder is gone when <root>/containers/<holder>
	// does not exist, which is only right for containers.
	HolderGone func(holder string) bool
}

// DefaultMaxLayerSize is the default bound on a layer's uncompressed size.
const DefaultMaxLayerSize int64 = 64 << 30

// Open opens the store at root, creating its layout if missing.
func Open(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("open store: empty root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	s := &Store{root: abs}
	for _, d := range []string{s.blobDir(), s.layersDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
	}
	// A crash during the very first Open can leave a meta.db without
	// buckets: view makes them when it finds none, so that an Open of a
	// store that has its meta.db (every command) costs no transaction.
	if _, err := os.Stat(s.dbPath()); err != nil {
		if err := s.update(func(tx *bolt.Tx) error { return nil }); err != nil {
			return nil, fmt.Errorf("open store %s: %w", abs, err)
		}
	}
	return s, nil
}

// Close releases the store. It holds nothing between calls, so this only
// exists to give callers a stable shape should that change.
func (s *Store) Close() error { return nil }

// Root is the store's root directory.
func (s *Store) Root() string { return s.root }

func (s *Store) blobDir() string   { return filepath.Join(s.root, "blobs", "sha256") }
func (s *Store) layersDir() string { return filepath.Join(s.root, "layers") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "tmp") }
func (s *Store) dbPath() string    { return filepath.Join(s.root, "meta.db") }

// BlobPath is where the blob with digest d lives.
func (s *Store) BlobPath(d digest.Digest) string { return filepath.Join(s.blobDir(), d.Encoded()) }

// LayerDir is the unpacked layer's directory in kernel overlay format:
// <root>/layers/<chainid-hex>/diff.
func (s *Store) LayerDir(chainID digest.Digest) string {
	return filepath.Join(s.layersDir(), chainID.Encoded(), "diff")
}

func (s *Store) layerHome(chainID digest.Digest) string {
	return filepath.Join(s.layersDir(), chainID.Encoded())
}

// update runs fn in a write transaction. Opening the database read-write
// takes bbolt's exclusive flock, which is the store's write lock.
func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	unlock, err := s.metaLock(true)
	if err != nil {
		return fmt.Errorf("lock store metadata: %w", err)
	}
	defer unlock()
	db, err := bolt.Open(s.dbPath(), 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		return fmt.Errorf("lock store metadata: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return fn(tx)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// view runs fn in a read transaction under a shared lock. A meta.db
// without its buckets (a crash during the store's very first Open) gets
// them first.
func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	err := s.viewOnce(fn)
	if errors.Is(err, errNoBuckets) {
		if err := s.update(func(*bolt.Tx) error { return nil }); err != nil {
			return err
		}
		err = s.viewOnce(fn)
	}
	return err
}

// viewOnce is view without the repair.
func (s *Store) viewOnce(fn func(tx *bolt.Tx) error) error {
	unlock, err := s.metaLock(false)
	if err != nil {
		return fmt.Errorf("read store metadata: %w", err)
	}
	defer unlock()
	db, err := bolt.Open(s.dbPath(), 0o600, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("read store metadata: %w", err)
	}
	err = db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return errNoBuckets
			}
		}
		return fn(tx)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}

// metaLock takes the flock of the store's root directory, exclusive for a
// write transaction, shared for a read: the order in which lamina
// processes open meta.db, whose own flock bbolt then takes at once.
//
// Why: bbolt takes its flock with LOCK_NB and, when it is held, sleeps
// 50 ms before it tries again. A lamina run --rm drops its container's
// hold on the image after its caller has gone on, so a run right after
// it found meta.db locked for the millisecond of that transaction, and
// waited 50: one run in ten of a loop of lamina run --rm took 60 ms
// instead of 20. A blocking flock is woken when the lock is let go.
// The wait is bounded by lockTimeout, as bbolt's was: the flock then goes
// on in the background, and the lock it may yet get is let go with the
// file.
func (s *Store) metaLock(exclusive bool) (unlock func(), err error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	f, err := os.Open(s.root)
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if unix.Flock(fd, how|unix.LOCK_NB) == nil {
		return func() { f.Close() }, nil
	}
	done := make(chan error, 1)
	go func() {
		done <- flockRetry(fd, how)
		runtime.KeepAlive(f)
	}()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, err
		}
		return func() { f.Close() }, nil
	case <-time.After(lockTimeout):
		// Closing f while the flock waits would not end the wait: once
		// it has, the file (and the lock, if it came) is let go.
		go func() {
			<-done
			f.Close()
		}()
		return nil, fmt.Errorf("%s: lock held for over %v", s.root, lockTimeout)
	}
}

// flockRetry is a blocking flock(2) that a signal does not end.
func flockRetry(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}

func getJSON(b *bolt.Bucket, key string, v any) (bool, error) {
	data := b.Get([]byte(key))
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode record %s: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

// syncDir makes a rename or unlink in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
