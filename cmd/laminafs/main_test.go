package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/lamina-project/lamina/internal/testutil"
)

// fixture makes lower, upper, work and mountpoint dirs under one temp dir.
func fixture(t *testing.T) (base string) {
	t.Helper()
	base = t.TempDir()
	for _, d := range []string{"l1", "l2", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(base, "l2", "f"), []byte("lower"), 0o644)
	return base
}

func unmountAtCleanup(t *testing.T, mnt string) {
	t.Cleanup(func() {
		if ok, _ := mountinfo.Mounted(mnt); ok {
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
}

func TestBadInput(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin := testutil.Binary(t, "laminafs")
	base := fixture(t)
	p := func(s string) string { return filepath.Join(base, s) }
	// upper inside a lower, and a busy mountpoint
	os.Mkdir(p("l1/up"), 0o755)
	busy := p("busy")
	os.Mkdir(busy, 0o755)
	if err := unix.Mount("tmpfs", busy, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(busy, unix.MNT_DETACH) })
	other := p("otherfs")
	os.Mkdir(other, 0o755)
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(other, unix.MNT_DETACH) })
	os.Mkdir(filepath.Join(other, "w"), 0o755)
	os.WriteFile(p("file"), nil, 0o644)

	tests := []struct {
		name, opts, mnt, want string
	}{
		{"missing lowerdir", "lowerdir=" + p("nope"), p("m"), "no such file"},
		{"lowerdir is a file", "lowerdir=" + p("file"), p("m"), "not a directory"},
		{"missing upperdir", "lowerdir=" + p("l1") + ",upperdir=" + p("nope") + ",workdir=" + p("w"), p("m"), "no such file"},
		{"upper and work on different filesystems", "lowerdir=" + p("l1") + ",upperdir=" + p("u") + ",workdir=" + filepath.Join(other, "w"), p("m"), "same filesystem"},
		{"upper inside a lower", "lowerdir=" + p("l1") + ",upperdir=" + p("l1/up") + ",workdir=" + p("w"), p("m"), "overlap"},
		{"missing mountpoint", "lowerdir=" + p("l1"), p("nope"), "no such file"},
		{"busy mountpoint", "lowerdir=" + p("l1"), busy, "already in use"},
		{"upper without work", "lowerdir=" + p("l1") + ",upperdir=" + p("u"), p("m"), "needs workdir"},
		{"empty option value", "lowerdir=", p("m"), "empty value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			unmountAtCleanup(t, tc.mnt)
			out, err := exec.Command(bin, "-o", tc.opts, tc.mnt).CombinedOutput()
			if err == nil {
				t.Fatalf("succeeded, want an error; output %q", out)
			}
			msg := strings.TrimSpace(string(out))
			if strings.Count(msg, "\n") != 0 || !strings.HasPrefix(msg, "laminafs: ") || !strings.Contains(strings.ToLower(msg), tc.want) {
				t.Errorf("error %q, want one line 'laminafs: ...%s...'", msg, tc.want)
			}
			if tc.mnt != busy {
				if ok, _ := mountinfo.Mounted(tc.mnt); ok {
					t.Errorf("%s mounted after a failure", tc.mnt)
				}
			}
		})
	}
	// Nothing was written to the layers by the failed attempts.
	for _, d := range []string{"u", "w"} {
		if ents, _ := os.ReadDir(p(d)); len(ents) != 0 {
			t.Errorf("%s changed by failed mounts: %v", d, ents)
		}
	}
}

func TestDaemonizeAndSIGTERM(t *testing.T) {
	testutil.RequirePrivileged(t)
	bin := testutil.Binary(t, "laminafs")
	base := fixture(t)
	mnt := filepath.Join(base, "m")
	unmountAtCleanup(t, mnt)
	opts := "lowerdir=" + filepath.Join(base, "l1") + ":" + filepath.Join(base, "l2") +
		",upperdir=" + filepath.Join(base, "u") + ",workdir=" + filepath.Join(base, "w") + ",frobnicate=1"
	out, err := exec.Command(bin, "-o", opts, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "unknown argument ignored: frobnicate=1") {
		t.Errorf("no warning for an unknown option: %q", out)
	}
	// The command returned, and the mount is there and serving.
	b, err := os.ReadFile(filepath.Join(mnt, "f"))
	if err != nil || string(b) != "lower" {
		t.Fatalf("read through mount: %q %v", b, err)
	}
	// Find the server by the mount's device and its /dev/fuse fd: it is
	// our child's child, so look for laminafs processes in /proc.
	pid := serverPID(t, bin, base)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, _ := mountinfo.Mounted(mnt)
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still mounted 10s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Error("server still running after SIGTERM")
}

// serverPID finds the background laminafs serving a mount: the process
// running bin whose command line names the fixture dir base.
func serverPID(t *testing.T, bin, base string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || exe != bin {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), base) {
			return pid
		}
	}
	t.Fatal("laminafs server process not found")
	return 0
}
