package layerstore

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
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

// TestMetaLock: metadata transactions exclude each other as bbolt's own
// lock made them (a write excludes everything, reads share), and one that
// waits does so in flock(2), woken when the lock is let go, not in bbolt's
// sleep of 50 ms between tries (metaLock).
func TestMetaLock(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var events []string
	note := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	// A write holds the lock while a read and a write wait for it.
	inWrite, release := make(chan struct{}), make(chan struct{})
	writeDone := make(chan error, 1)
	go func() {
		writeDone <- s.update(func(*bolt.Tx) error {
			note("write")
			close(inWrite)
			<-release
			note("write ends")
			return nil
		})
	}()
	<-inWrite
	waiters := make(chan error, 2)
	go func() { waiters <- s.view(func(*bolt.Tx) error { note("read"); return nil }) }()
	go func() { waiters <- s.update(func(*bolt.Tx) error { note("second write"); return nil }) }()
	if n := threadsInFlock(t, 2); n < 2 {
		close(release)
		t.Fatalf("%d threads wait in flock(2) for the lock, want 2", n)
	}
	close(release)
	if err := <-writeDone; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-waiters; err != nil {
			t.Fatal(err)
		}
	}
	if len(events) != 4 || events[0] != "write" || events[1] != "write ends" {
		t.Fatalf("events %q: the waiting transactions ran inside the write", events)
	}
	// Reads share the lock: one runs while another holds it.
	inRead, release := make(chan struct{}), make(chan struct{})
	readDone := make(chan error, 1)
	go func() {
		readDone <- s.view(func(*bolt.Tx) error { close(inRead); <-release; return nil })
	}()
	<-inRead
	if err := s.view(func(*bolt.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
}

// threadsInFlock returns how many of this process's threads are in
// flock(2), waiting up to a few seconds for want of them to get there.
func threadsInFlock(t *testing.T, want int) int {
	t.Helper()
	n := 0
	for try := 0; try < 500; try++ {
		n = 0
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			b, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "syscall"))
			if err == nil && strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_FLOCK)+" ") {
				n++
			}
		}
		if n >= want {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
	return n
}
