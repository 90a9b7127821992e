// Package testutil holds what lamina's tests share: the privileged-test
// gate, the project's binaries built once per test process, and a busybox
// root filesystem made from Debian's busybox-static package.
package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// RequirePrivileged skips t unless the process is root and /dev/fuse
// exists. With LAMINA_REQUIRE_PRIVILEGED=1 (as CI sets it) the missing
// privilege fails the test instead: a skipped privileged test proves nothing.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	why := ""
	switch {
	case os.Geteuid() != 0:
		why = "needs root"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			why = "needs /dev/fuse"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("LAMINA_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("%s, and LAMINA_REQUIRE_PRIVILEGED=1", why)
	}
	t.Skip(why)
}

// RequireCommand skips t when a peer program is not installed, or fails it
// under LAMINA_REQUIRE_PRIVILEGED=1 when required is true.
func RequireCommand(t testing.TB, name string, required bool) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if required && os.Getenv("LAMINA_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("%s is not installed, and LAMINA_REQUIRE_PRIVILEGED=1 (run make deps)", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}

var (
	buildMu  sync.Mutex
	built    = map[string]string{}
	buildDir string
)

// Binary returns the path of one of the project's commands (laminafs,
// lamina, lamina-init). It uses $LAMINA_BIN_DIR when set (the Makefile builds there),
// else builds the command once per test process.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("LAMINA_BIN_DIR"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[name]; ok {
		return p
	}
	p := filepath.Join(binDir(t), name)
	cmd := exec.Command("go", "build", "-o", p, "./cmd/"+name)
	if name == "lamina-init" { // C, as the Makefile builds it
		cmd = exec.Command("sh", "scripts/build-init.sh", p)
	}
	cmd.Dir = ModuleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	built[name] = p
	return p
}

// StaticBinary builds src, a main package that uses only the standard
// library, as a static binary (CGO_ENABLED=0) and returns its path, once
// per test process for each name. Tests bind or copy it into a container
// for what busybox has no applet for (ptrace, say); the fixture is built
// from source, never checked in.
func StaticBinary(t testing.TB, name, src string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := "static:" + name
	if p, ok := built[key]; ok {
		return p
	}
	dir := filepath.Join(binDir(t), "src-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("static binary %s: %v", name, err)
	}
	files := map[string]string{"go.mod": "module " + name + "\n\ngo 1.22\n", "main.go": src}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatalf("static binary %s: %v", name, err)
		}
	}
	p := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", p, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build static %s: %v\n%s", name, err, out)
	}
	built[key] = p
	return p
}

// Main is a TestMain for packages with nothing else to do in theirs: it
// runs the tests, removes the binaries they built and exits.
func Main(m *testing.M) {
	code := m.Run()
	RemoveBinaries()
	RemoveCgroupParents()
	os.Exit(code)
}

// RemoveCgroupParents removes the "lamina" cgroups that containers are
// made in (under each hierarchy, at the depth of this process's own
// cgroup) when they are empty: lamina leaves them in place, as docker
// does its own, and a test run leaves nothing behind. A parent in use (a
// container of another run) is not empty and stays.
func RemoveCgroupParents() {
	for _, pattern := range []string{"/sys/fs/cgroup/lamina", "/sys/fs/cgroup/*/lamina", "/sys/fs/cgroup/*/*/lamina", "/sys/fs/cgroup/*/*/*/lamina", "/sys/fs/cgroup/*/*/*/*/lamina"} {
		dirs, _ := filepath.Glob(pattern)
		for _, d := range dirs {
			_ = syscall.Rmdir(d)
		}
	}
}

// RemoveBinaries removes what Binary and StaticBinary built in this test
// process, which would otherwise be left in the temporary directory by
// every run (tens of MB each). Call it from TestMain after m.Run.
func RemoveBinaries() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	buildDir, built = "", map[string]string{}
}

// binDir is the directory the binaries are built in, one per test process.
//
// Preconditions: buildMu is held.
func binDir(t testing.TB) string {
	t.Helper()
	if buildDir == "" {
		d, err := os.MkdirTemp("", "lamina-testbin-")
		if err != nil {
			t.Fatalf("temp dir for binaries: %v", err)
		}
		// Containers run the helpers as any user.
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatalf("temp dir for binaries: %v", err)
		}
		buildDir = d
	}
	return buildDir
}

// Lamina runs the lamina binary against the store at root with stdin and
// args, and returns its stdout, stderr and the error of its run (an
// *exec.ExitError for a non-zero exit).
func Lamina(t testing.TB, root string, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(Binary(t, "lamina"), append([]string{"--root", root}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// ModuleRoot is the directory holding go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot find module root")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BusyboxRootfs makes a minimal root filesystem in dir: /bin/busybox from
// Debian's busybox-static with its applets as symlinks, /etc/passwd and
// /etc/group, and the usual empty directories.
func BusyboxRootfs(t testing.TB, dir string) {
	t.Helper()
	if err := MakeBusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
}

// MakeBusyboxRootfs is BusyboxRootfs for non-test callers.
func MakeBusyboxRootfs(dir string) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
			if _, e := os.Stat(p); e == nil {
				bb = p
				err = nil
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("busybox rootfs: busybox-static is not installed (run make deps)")
	}
	for _, d := range []string{"bin", "etc", "dev", "proc", "sys", "tmp", "root", "home", "var", "usr/bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return fmt.Errorf("busybox rootfs: %w", err)
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, name := range strings.Fields(string(out)) {
		if name == "busybox" {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", name)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("busybox rootfs: %w", err)
		}
	}
	return nil
}
