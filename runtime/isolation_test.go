package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// nonzero as a wanted exit code accepts any failure.
const nonzero = -1

// forkTen starts ten background processes.
const forkTen = "i=0; while [ $i -lt 10 ]; do sleep 1 & i=$((i+1)); done; echo started"

// TestIsolation runs, from inside a container with docker's defaults, what
// must work and what must fail.
func TestIsolation(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "f"), []byte("host-data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		opts   Options
		script string
		code   int
		out    string // exact stdout, when set
		has    string // substring of stdout, when set
		errHas string // substring of stderr, when set
	}{
		{name: "pid1", script: "cat /proc/1/cmdline | tr '\\0' ' '", out: "/bin/sh -c cat /proc/1/cmdline | tr '\\0' ' ' "},
		// The shell counts with a glob, so no other process of ours can
		// race the count: only the container's init (the shell) is there.
		{name: "no host processes", script: "set -- /proc/[0-9]*; echo $#", out: "1\n"},
		{name: "no host processes by pid", script: "test -e /proc/$PPID_HOST/status || echo hidden", out: "hidden\n", opts: Options{Env: []string{"PPID_HOST=" + strconv.Itoa(os.Getpid())}}},
		{name: "hostname", opts: Options{Hostname: "box"}, script: "hostname", out: "box\n"},
		{name: "default hostname is short id", script: "hostname", out: "0123456789ab\n"},
		{name: "mount fails", script: "mkdir -p /tmp/m; mount -t tmpfs t /tmp/m 2>/dev/null", code: nonzero},
		{name: "unshare fails", script: "unshare -m true 2>/dev/null", code: nonzero},
		{name: "nsenter host fails", script: "nsenter -t 1 -m true 2>/dev/null", code: nonzero},
		{name: "load module fails", script: "insmod /etc/passwd 2>/dev/null", code: nonzero},
		{name: "proc sys read-only", script: "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null", code: nonzero},
		{name: "timer_list masked", script: "wc -c < /proc/timer_list", out: "0\n"},
		{name: "keys masked", script: "wc -c < /proc/keys", out: "0\n"},
		{name: "sys read-only", script: "touch /sys/x 2>/dev/null", code: nonzero},
		{name: "default caps", script: "grep CapEff /proc/self/status", out: "CapEff:\t00000000a80425fb\n"},
		{name: "cap drop all", opts: Options{CapDrop: []string{"ALL"}}, script: "grep CapEff /proc/self/status", out: "CapEff:\t0000000000000000\n"},
		{name: "cap add", opts: Options{CapAdd: []string{"NET_ADMIN"}}, script: "grep CapEff /proc/self/status", out: "CapEff:\t00000000a80435fb\n"},
		{name: "privileged can mount", opts: Options{Privileged: true}, script: "mkdir -p /tmp/m; mount -t tmpfs t /tmp/m && echo ok", out: "ok\n"},
		{name: "seccomp on", script: "grep Seccomp: /proc/self/status", out: "Seccomp:\t2\n"},
		{name: "seccomp unconfined", opts: Options{Seccomp: "unconfined"}, script: "grep Seccomp: /proc/self/status", out: "Seccomp:\t0\n"},
		{name: "no new privs", opts: Options{NoNewPrivileges: true}, script: "grep NoNewPrivs /proc/self/status", out: "NoNewPrivs:\t1\n"},
		{name: "new privs by default", script: "grep NoNewPrivs /proc/self/status", out: "NoNewPrivs:\t0\n"},
		{name: "user by name", opts: Options{User: "nobody"}, script: "id -u; id -g; echo $HOME", out: "65534\n65534\n/home\n"},
		{name: "user numeric", opts: Options{User: "1000:1001"}, script: "id -u; id -g", out: "1000\n1001\n"},
		{name: "user has no caps", opts: Options{User: "nobody"}, script: "grep CapEff /proc/self/status", out: "CapEff:\t0000000000000000\n"},
		{name: "workdir created", opts: Options{Cwd: "/work/dir"}, script: "pwd", out: "/work/dir\n"},
		{name: "env", opts: Options{Env: []string{"FOO=bar"}}, script: "echo $FOO $PATH", out: "bar " + DefaultPath + "\n"},
		{name: "network none has only lo, up", script: "ls /sys/class/net; cat /sys/class/net/lo/operstate", out: "lo\nunknown\n"},
		{name: "read-only root", opts: Options{ReadOnly: true}, script: "touch /x 2>/dev/null || echo ro; touch /dev/shm/y && echo shm", out: "ro\nshm\n"},
		{name: "tmpfs", opts: Options{Tmpfs: []string{"/scratch"}}, script: "grep ' /scratch ' /proc/mounts | cut -d' ' -f3", out: "tmpfs\n"},
		{name: "bind ro", opts: Options{Binds: []string{hostDir + ":/data:ro"}}, script: "cat /data/f; touch /data/g 2>/dev/null || echo ro", out: "host-data\nro\n"},
		{name: "dev nodes", script: "ls /dev | tr '\\n' ' '", has: "null"},
		{name: "devpts and mqueue and shm", script: "grep -c -E ' /dev/(pts|mqueue|shm) ' /proc/mounts", out: "3\n"},
		{name: "no leaked fds", script: "ls /proc/self/fd | tr '\\n' ' '", out: "0 1 2 3 "},
		{name: "rlimit", opts: Options{Ulimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 200}}}, script: "ulimit -n; ulimit -Hn", out: "100\n200\n"},
		{name: "not found", opts: Options{Args: []string{"nosuch"}}, code: 127},
		{name: "absolute not found", opts: Options{Args: []string{"/no/such"}}, code: 127},
		{name: "not executable", opts: Options{Args: []string{"/etc/passwd"}}, code: 126},
		{name: "pids limit", opts: Options{PidsLimit: 5}, script: forkTen, code: nonzero, errHas: "fork"},
		{name: "no pids limit", script: forkTen, out: "started\n"},
		{name: "exit code", script: "exit 42", code: 42},
		{name: "killed by signal", script: "sh -c 'kill -9 $$'; exit $?", code: 137},
	}
	for _, in := range bothInits(t) {
		for _, tc := range tests {
			t.Run(in.name+"/"+tc.name, func(t *testing.T) {
				o := tc.opts
				if o.Args == nil {
					o.Args = []string{"/bin/sh", "-c", tc.script}
				}
				r := runSpecWith(t, in, rootfs, o)
				if r.code != tc.code && (tc.code != nonzero || r.code == 0) {
					t.Fatalf("exit code %d, want %d (stdout %q, stderr %q)", r.code, tc.code, r.stdout, r.stderr)
				}
				if tc.out != "" && r.stdout != tc.out {
					t.Fatalf("stdout %q, want %q (stderr %q)", r.stdout, tc.out, r.stderr)
				}
				if tc.errHas != "" && !strings.Contains(r.stderr, tc.errHas) {
					t.Fatalf("stderr %q does not contain %q", r.stderr, tc.errHas)
				}
				if tc.has != "" && !strings.Contains(r.stdout, tc.has) {
					t.Fatalf("stdout %q does not contain %q (stderr %q)", r.stdout, tc.has, r.stderr)
				}
			})
		}
	}
}

// TestMemoryLimitOOM checks that exceeding -m is an OOM kill, reported as
// docker does (exit 137, OOMKilled).
func TestMemoryLimitOOM(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, in := range bothInits(t) {
		t.Run(in.name, func(t *testing.T) {
			o := Options{Args: []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"}}
			o.Memory = 32 << 20
			r := runSpecWith(t, in, sharedRootfs(t), o)
			if r.code != 137 || !r.oom {
				t.Fatalf("got code %d oom %v stdout %q stderr %q, want 137 and OOM", r.code, r.oom, r.stdout, r.stderr)
			}
			// The same with room to spare runs to the end.
			o.Memory = 256 << 20
			if r := runSpecWith(t, in, sharedRootfs(t), o); r.code != 0 || r.oom {
				t.Fatalf("without pressure: %+v", r)
			}
		})
	}
}

// TestInitRunsFromSealedExe checks CVE-2019-5736's defence: the init's
// executable is not the binary on the host but the same file through a
// private read-only overlay (or, without one, a sealed memfd copy), and it
// cannot be written.
func TestInitRunsFromSealedExe(t *testing.T) {
	testutil.RequirePrivileged(t)
	spec, err := NewSpec("sealed", sharedRootfs(t), sh("true"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := startQuiet(t, spec, goInit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); _, _ = p.Wait() })
	exe := filepath.Join("/proc", strconv.Itoa(p.Pid()), "exe")
	var st unix.Statfs_t
	if err := unix.Statfs(exe, &st); err != nil {
		t.Fatal(err)
	}
	// Root with overlayfs gets the overlay, not the copy.
	if (driver.Overlay{}).Available() == nil {
		self, _ := os.Readlink("/proc/self/exe")
		f, err := overlayOpen(self, true)
		if err != nil {
			t.Fatalf("no overlay-sealed binary on a host with overlayfs: %v", err)
		}
		f.Close()
		if st.Type != unix.OVERLAYFS_SUPER_MAGIC {
			target, _ := os.Readlink(exe)
			t.Fatalf("init runs from %q (filesystem %#x), want the binary through an overlay", target, st.Type)
		}
	}
	checkUnwritable(t, exe)
}

// TestSealedExeFallback checks the memfd copy, used where no overlay can
// be mounted.
func TestSealedExeFallback(t *testing.T) {
	f, err := memfdCopy("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	if target, _ := os.Readlink(path); !strings.HasPrefix(target, "/memfd:lamina") {
		t.Fatalf("copy is %q, want a memfd", target)
	}
	checkUnwritable(t, path)
}

// TestSealedInitBinary checks that init runs from lamina-init when it is
// next to the running binary, sealed like the binary itself, and from the
// running binary otherwise.
func TestSealedInitBinary(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := t.TempDir()
	self, _ := os.Readlink("/proc/self/exe")
	f, flat, err := sealedInitIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	if flat {
		t.Fatal("without lamina-init, init is said to take the flat bootstrap")
	}
	target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	f.Close()
	if filepath.Base(target) != filepath.Base(self) {
		t.Fatalf("without lamina-init, init runs from %q; want the running binary %q", target, self)
	}
	init := filepath.Join(dir, initBinary)
	if err := os.WriteFile(init, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, flat, err = sealedInitIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !flat {
		t.Fatal("lamina-init is not said to take the flat bootstrap")
	}
	path := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	target, _ = os.Readlink(path)
	if filepath.Base(target) != initBinary {
		t.Fatalf("with lamina-init installed, init runs from %q", target)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	if (driver.Overlay{}).Available() == nil && st.Type != unix.OVERLAYFS_SUPER_MAGIC {
		t.Fatalf("lamina-init is opened on filesystem %#x, want it through an overlay", st.Type)
	}
	checkUnwritable(t, path)

	// A lamina-init bind-mounted over the file in the directory (as with
	// docker -v): the overlay would show the file under the mount, so the
	// bind-mounted binary must be what is sealed.
	real := filepath.Join(t.TempDir(), "real-init")
	if err := os.WriteFile(real, []byte("#!/bin/sh\n# the real one\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(real, init, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(init, unix.MNT_DETACH)
	g, _, err := sealedInitIn(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var fi unix.Stat_t
	if err := unix.Fstat(int(g.Fd()), &fi); err != nil {
		t.Fatal(err)
	}
	if fi.Size != int64(len("#!/bin/sh\n# the real one\n")) {
		t.Fatalf("with lamina-init bind-mounted, the sealed file has %d bytes, not the mounted binary's", fi.Size)
	}
	checkUnwritable(t, fmt.Sprintf("/proc/self/fd/%d", g.Fd()))
}

// checkUnwritable fails t if the executable at path can be written.
func checkUnwritable(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write([]byte("x"))
		f.Close()
	}
	if err == nil {
		t.Fatalf("the executable %s is writable", path)
	}
}

// TestCgroupLimits checks that --cpus and --pids-limit reach the cgroup
// files the kernel enforces.
func TestCgroupLimits(t *testing.T) {
	testutil.RequirePrivileged(t)
	spec, err := NewSpec("x", "/", Options{Args: []string{"true"}, CPUs: 0.5, PidsLimit: 42, Memory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	cg, err := NewCgroup(fmt.Sprintf("rt-limits-%d", os.Getpid()), spec.Linux.Resources)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Destroy(); err != nil {
			t.Error(err)
		}
	})
	if err := cg.SetPidsLimit(spec.Linux.Resources); err != nil {
		t.Fatal(err)
	}
	want := map[[2]string]string{
		{"cpu", "cpu.cfs_quota_us"}: "50000", {"cpu", "cpu.cfs_period_us"}: "100000",
		{"pids", "pids.max"}: "42", {"memory", "memory.limit_in_bytes"}: "67108864",
	}
	if cg.V2 {
		want = map[[2]string]string{{"cpu", "cpu.max"}: "50000 100000", {"pids", "pids.max"}: "42", {"memory", "memory.max"}: "67108864"}
	}
	for k, v := range want {
		if got, err := cg.read(k[0], k[1]); err != nil || got != v {
			t.Errorf("%s = %q (%v), want %q", k[1], got, err, v)
		}
	}
}

// TestRootfsEscapes builds a hostile image: /proc a symlink, and a bind
// mount target that is a symlink pointing out of the rootfs. Neither may
// reach the host.
func TestRootfsEscapes(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, in := range bothInits(t) {
		t.Run(in.name, func(t *testing.T) { rootfsEscapes(t, in) })
	}
}

func rootfsEscapes(t *testing.T, in testInit) {
	rootfs := t.TempDir()
	os.Chmod(rootfs, 0o755)
	testutil.BusyboxRootfs(t, rootfs)
	hostDir := t.TempDir()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("bound\n"), 0o644)
	// /data -> <hostDir> (absolute, outside the rootfs)
	if err := os.Symlink(hostDir, filepath.Join(rootfs, "data")); err != nil {
		t.Fatal(err)
	}
	r := runSpecWith(t, in, rootfs, Options{Args: []string{"cat", hostDir + "/f"}, Binds: []string{src + ":/data"}})
	if r.code != 0 || r.stdout != "bound\n" {
		t.Fatalf("bind through a symlink: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(hostDir, "f")); err == nil {
		t.Fatal("the bind mount landed on the host directory the symlink named")
	}
	os.RemoveAll(filepath.Join(rootfs, "proc"))
	os.Symlink("/tmp", filepath.Join(rootfs, "proc"))
	spec, err := NewSpec("x", rootfs, sh("true"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := startQuiet(t, spec, in); err == nil {
		p.Kill()
		p.Wait()
		t.Fatal("a container started with /proc a symlink")
	} else if !strings.Contains(err.Error(), "not a directory in the image") {
		t.Fatalf("a container with /proc a symlink failed with %q, not for the symlink", err)
	}
}

// TestCgroupView checks the container sees its own cgroup, with its
// limit, read-only, at /sys/fs/cgroup.
func TestCgroupView(t *testing.T) {
	testutil.RequirePrivileged(t)
	o := sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; cat /proc/self/cgroup | grep -c ':/$'; mkdir /sys/fs/cgroup/memory/x 2>/dev/null || echo ro")
	o.Memory = 64 << 20
	o.PidsLimit = 50
	if useV2() {
		t.Skip("v1 layout checked only on v1 hosts")
	}
	for _, in := range bothInits(t) {
		r := runSpecWith(t, in, sharedRootfs(t), o)
		lines := strings.Split(r.stdout, "\n")
		if r.code != 0 || len(lines) < 4 || lines[0] != "67108864" || lines[1] != "50" || lines[3] != "ro" {
			t.Fatalf("%s init: got %+v", in.name, r)
		}
	}
}
