// Package hostmount mounts an image's (or one layer's, or a container's)
// union view on the host for inspection, as `podman mount` does, and
// keeps a record of each mount under <root>/mounts so that later commands
// can list, reuse and unmount it. There is no daemon: every mount is
// served by a detached laminafs process and outlives the command that
// made it.
//
// While an image is mounted it holds a reference on its layers in the
// layer store (as a container would), so `rmi` refuses it and no layer
// under a live mount is ever deleted.
package hostmount

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/driver"
)

// Record is one host mount.
type Record struct {
	Key     string    `json:"key"`     // unique name of the mount: image or container ID, with ":layerN"
	Kind    string    `json:"kind"`    // "image", "layer" or "container"
	Ref     string    `json:"ref"`     // image ID (images, layers) or container ID
	Name    string    `json:"name"`    // what the user named (tag, name or ID)
	Layer   int       `json:"layer"`   // 1-based layer number for Kind "layer"
	Target  string    `json:"target"`  // mount point
	Owned   bool      `json:"owned"`   // Target was created by us and is removed on unmount
	Created time.Time `json:"created"` // when it was mounted
}

// Manager keeps the mount records of one store.
type Manager struct {
	dir    string // <root>/mounts
	driver driver.Driver
}

// ErrNotMounted is returned when unmounting something that is not mounted.
var ErrNotMounted = errors.New("not mounted")

// New returns the manager for the store at root, mounting with d.
func New(root string, d driver.Driver) (*Manager, error) {
	dir := filepath.Join(root, "mounts")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mounts dir: %w", err)
	}
	return &Manager{dir: dir, driver: d}, nil
}

// lock takes the manager's cross-process lock; call the result to unlock.
func (m *Manager) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(m.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock mounts: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock mounts: %w", err)
	}
	return func() { f.Close() }, nil
}

func (m *Manager) recordPath(key string) string {
	return filepath.Join(m.dir, strings.ReplaceAll(key, ":", "_")+".json")
}

// DefaultTarget is where a mount goes when the user names no directory.
func (m *Manager) DefaultTarget(key string) string {
	return filepath.Join(m.dir, strings.ReplaceAll(key, ":", "_"), "merged")
}

// Get returns the live record for key, or nil. A record whose mount has
// gone (unmounted by hand, or the server was killed) is cleaned up.
func (m *Manager) Get(key string) (*Record, error) {
	b, err := os.ReadFile(m.recordPath(key))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mount record %s: %w", key, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("mount record %s: %w", key, err)
	}
	if !live(r.Target) {
		m.forget(&r)
		return nil, nil
	}
	return &r, nil
}

// live reports whether target is still a mount point with a server.
func live(target string) bool {
	ok, err := mountinfo.Mounted(target)
	if err != nil || !ok {
		// A dead FUSE server leaves a mount that stat cannot reach.
		var st unix.Stat_t
		if unix.Stat(target, &st) == unix.ENOTCONN {
			_ = unix.Unmount(target, unix.MNT_DETACH)
		}
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err == unix.ENOTCONN {
		_ = unix.Unmount(target, unix.MNT_DETACH)
		return false
	}
	return true
}

// forget removes a record and the directory it made.
func (m *Manager) forget(r *Record) {
	_ = os.Remove(m.recordPath(r.Key))
	if r.Owned {
		_ = os.Remove(r.Target)
		_ = os.Remove(filepath.Dir(r.Target))
	}
}

// Mount mounts layers at target (DefaultTarget(r.Key) when empty) for
// record r, unless r.Key is mounted already, in which case the existing
// record is returned. hold is called (under the lock) before mounting to
// take references; release undoes it if mounting fails.
func (m *Manager) Mount(r Record, layers driver.Layers, hold, release func() error) (*Record, error) {
	unlock, err := m.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if old, err := m.Get(r.Key); err != nil || old != nil {
		return old, err
	}
	if r.Target == "" {
		r.Target = m.DefaultTarget(r.Key)
		r.Owned = true
	}
	abs, err := filepath.Abs(r.Target)
	if err != nil {
		return nil, err
	}
	r.Target = abs
	if r.Owned {
		if err := os.MkdirAll(r.Target, 0o755); err != nil {
			return nil, fmt.Errorf("mount point: %w", err)
		}
	} else if st, err := os.Stat(r.Target); err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s: not a directory", r.Target)
	}
	if ok, _ := mountinfo.Mounted(r.Target); ok {
		return nil, fmt.Errorf("mount point %s: already a mount point", r.Target)
	}
	if hold != nil {
		if err := hold(); err != nil {
			return nil, err
		}
	}
	mnt, err := m.driver.Mount(layers, r.Target)
	if err != nil {
		if release != nil {
			_ = release()
		}
		m.forget(&r)
		return nil, err
	}
	r.Created = time.Now().UTC()
	b, _ := json.MarshalIndent(&r, "", "  ")
	tmp := m.recordPath(r.Key) + ".tmp"
	err = os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, m.recordPath(r.Key))
	}
	if err != nil {
		_ = mnt.Unmount()
		if release != nil {
			_ = release()
		}
		return nil, fmt.Errorf("record mount: %w", err)
	}
	return &r, nil
}

// Unmount unmounts the mount with the given key or target path and calls
// release (to drop the references Mount's hold took) once it is gone.
func (m *Manager) Unmount(keyOrTarget string, release func(*Record) error) (*Record, error) {
	unlock, err := m.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	r, err := m.find(keyOrTarget)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, ErrNotMounted
	}
	if err := unix.Unmount(r.Target, 0); err != nil && err != unix.EINVAL {
		return nil, fmt.Errorf("unmount %s: %w", r.Target, err)
	}
	if release != nil {
		if err := release(r); err != nil {
			return r, err
		}
	}
	m.forget(r)
	return r, nil
}

// find returns the live record whose key, target or (as a last resort)
// name is s.
func (m *Manager) find(s string) (*Record, error) {
	if r, err := m.Get(s); err != nil || r != nil {
		return r, err
	}
	abs, _ := filepath.Abs(s)
	all, err := m.List()
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].Target == abs {
			return &all[i], nil
		}
	}
	for i := range all {
		if all[i].Name == s {
			return &all[i], nil
		}
	}
	return nil, nil
}

// List returns the live mounts, oldest first.
func (m *Manager) List() ([]Record, error) {
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		key := strings.Replace(strings.TrimSuffix(name, ".json"), "_", ":", 1)
		r, err := m.Get(key)
		if err != nil {
			return nil, err
		}
		if r != nil {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}
