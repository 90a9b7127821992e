package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// fusectlDir is where the fusectl file system shows one directory per live
// FUSE connection.
const fusectlDir = "/sys/fs/fuse/connections"

// fusectlMagic is the fusectl file system's statfs type.
const fusectlMagic = 0x65735543

// FUSEConnection is the number of the FUSE connection mounted at target
// (its directory's name under /sys/fs/fuse/connections), 0 if unknown. It
// reads the mount table, not the mount, which a wedged server would never
// answer.
func FUSEConnection(target string) uint64 {
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(target))
	if err != nil || len(ms) == 0 {
		return 0
	}
	// The kernel names a connection by its superblock's dev_t.
	m := ms[len(ms)-1]
	return uint64(m.Major)<<20 | uint64(m.Minor)
}

// connectionDir is connection conn's fusectl directory.
func connectionDir(conn uint64) string {
	return filepath.Join(fusectlDir, strconv.FormatUint(conn, 10))
}

// AbortFUSE ends FUSE connection conn through the fusectl file system,
// which it mounts where it belongs when nobody has. A connection that has
// ended meanwhile is no error.
func AbortFUSE(conn uint64) error {
	if conn == 0 {
		return errors.New("abort FUSE connection: its number is unknown")
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(fusectlDir, &sfs); err != nil || sfs.Type != fusectlMagic {
		if err := unix.Mount("fusectl", fusectlDir, "fusectl", 0, ""); err != nil {
			return fmt.Errorf("abort FUSE connection %d: mount fusectl: %w", conn, err)
		}
	}
	err := os.WriteFile(filepath.Join(connectionDir(conn), "abort"), []byte("1"), 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	return nil
}
