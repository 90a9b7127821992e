package initproc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestPrepareMountpoints checks the mount points the monitor makes ahead
// of init: missing ones are made (a file for a file bind), nested ones and
// those of kernel filesystems are left to init, and a symlink in the image
// cannot point the creation outside the root.
func TestPrepareMountpoints(t *testing.T) {
	rootfs, host, src := t.TempDir(), t.TempDir(), t.TempDir()
	srcFile := filepath.Join(src, "f")
	if err := os.WriteFile(srcFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"etc", "dev"} {
		if err := os.Mkdir(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// /escape -> the host directory, as an absolute symlink.
	if err := os.Symlink(host, filepath.Join(rootfs, "escape")); err != nil {
		t.Fatal(err)
	}
	spec := &specs.Spec{Root: &specs.Root{Path: rootfs}, Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts"},
		{Destination: "/etc/hosts", Type: "bind", Source: srcFile, Options: []string{"rbind"}},
		{Destination: "/data/sub", Type: "bind", Source: src, Options: []string{"rbind"}},
		{Destination: "/escape/x", Type: "bind", Source: srcFile, Options: []string{"rbind"}},
		{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs"},
	}}
	PrepareMountpoints(spec)
	for path, want := range map[string]string{
		"etc/hosts": "file", "data/sub": "dir", "scratch": "dir", "escape/x": "none",
		"proc": "none", "dev/pts": "none",
	} {
		got := "none"
		if fi, err := os.Lstat(filepath.Join(rootfs, path)); err == nil {
			got = "file"
			if fi.IsDir() {
				got = "dir"
			}
		}
		if got != want {
			t.Errorf("/%s: %s, want %s", path, got, want)
		}
	}
	if entries, _ := os.ReadDir(host); len(entries) != 0 {
		t.Errorf("a mount point was made on the host, in %s", host)
	}
}
