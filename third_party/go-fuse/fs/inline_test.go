// Tests of MountOptions.InlineReader, lamina's addition to go-fuse: one
// goroutine reads and handles requests in turn, and a handler that is
// about to block hands reading on first.

package fs

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// blockRoot is a directory whose child "slow" blocks its lookup until
// release is closed, after calling srv.EnsureReader, and whose file
// "data" blocks its reads the same way.
type blockRoot struct {
	Inode
	entered chan struct{}
	release chan struct{}
	srv     *fuse.Server // set once mounted, before any blocking request
}

var _ = (NodeLookuper)((*blockRoot)(nil))

func (r *blockRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*Inode, syscall.Errno) {
	switch name {
	case "slow":
		r.srv.EnsureReader()
		close(r.entered)
		<-r.release
		return r.NewInode(ctx, &Inode{}, StableAttr{Mode: fuse.S_IFDIR}), 0
	case "stuck": // blocks without handing reading on
		close(r.entered)
		<-r.release
		return r.NewInode(ctx, &Inode{}, StableAttr{Mode: fuse.S_IFDIR}), 0
	case "fast":
		return r.NewInode(ctx, &Inode{}, StableAttr{Mode: fuse.S_IFDIR}), 0
	case "data":
		return r.NewInode(ctx, &blockFile{r: r}, StableAttr{Mode: fuse.S_IFREG}), 0
	}
	return nil, syscall.ENOENT
}

// blockFile's reads wait for release: READ is a request the server
// itself treats as one that may block.
type blockFile struct {
	Inode
	r *blockRoot
}

var (
	_ = (NodeOpener)((*blockFile)(nil))
	_ = (NodeReader)((*blockFile)(nil))
)

func (f *blockFile) Open(ctx context.Context, flags uint32) (FileHandle, uint32, syscall.Errno) {
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *blockFile) Read(ctx context.Context, fh FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	close(f.r.entered)
	<-f.r.release
	return fuse.ReadResultData(nil), 0
}

func mountBlockRoot(t *testing.T, r *blockRoot) string {
	t.Helper()
	return mountBlockRootBurst(t, r, 0)
}

// mountBlockRootBurst is mountBlockRoot with MountOptions.InlineBurst.
func mountBlockRootBurst(t *testing.T, r *blockRoot, burst int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("LAMINA_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("needs root (LAMINA_REQUIRE_PRIVILEGED is set)")
		}
		t.Skip("needs root")
	}
	dir := t.TempDir()
	zero := time.Duration(0)
	srv, err := Mount(dir, r, &Options{
		EntryTimeout: &zero,
		AttrTimeout:  &zero,
		// Without the poll hack (as laminafs mounts), whose POLL
		// starts a spare reader that can still be reading when a test
		// blocks a request: each test needs a single reader then.
		MountOptions: fuse.MountOptions{InlineReader: true, InlineBurst: burst, NoPollHack: true, DirectMount: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	t.Cleanup(func() {
		select {
		case <-r.release:
		default:
			close(r.release)
		}
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return dir
}

// statWhileBlocked starts the blocking operation op, waits until its
// handler is blocked, then checks that a lookup of "fast" still answers.
func statWhileBlocked(t *testing.T, r *blockRoot, dir string, op func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case <-r.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking handler was never entered")
	}
	fast := make(chan error, 1)
	go func() {
		_, err := os.Lstat(filepath.Join(dir, "fast"))
		fast <- err
	}()
	select {
	case err := <-fast:
		if err != nil {
			t.Fatalf("lookup while another request blocks: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lookup waited for the blocked request: nobody was reading")
	}
	close(r.release)
	if err := <-done; err != nil {
		t.Fatalf("blocking operation: %v", err)
	}
}

func TestInlineReaderEnsureReader(t *testing.T) {
	r := &blockRoot{entered: make(chan struct{}), release: make(chan struct{})}
	dir := mountBlockRoot(t, r)
	statWhileBlocked(t, r, dir, func() error {
		_, err := os.Lstat(filepath.Join(dir, "slow"))
		return err
	})
}

func TestInlineReaderReadSpawns(t *testing.T) {
	r := &blockRoot{entered: make(chan struct{}), release: make(chan struct{})}
	dir := mountBlockRoot(t, r)
	statWhileBlocked(t, r, dir, func() error {
		f, err := os.Open(filepath.Join(dir, "data"))
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Read(make([]byte, 10)); err != nil && err != io.EOF {
			return err
		}
		return nil
	})
}

// TestInlineBurst: within MountOptions.InlineBurst, a request that blocks
// without handing reading on (a plain lookup) does not hold up the next:
// a spare reader was started before it was handled.
func TestInlineBurst(t *testing.T) {
	r := &blockRoot{entered: make(chan struct{}), release: make(chan struct{})}
	dir := mountBlockRootBurst(t, r, 16)
	statWhileBlocked(t, r, dir, func() error {
		_, err := os.Lstat(filepath.Join(dir, "stuck"))
		return err
	})
}
