package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
	"golang.org/x/sys/unix"
)

// ptracerSrc is a helper for inside a container, where busybox has no
// ptrace tool: `ptracer MODE [PID]` tries ptrace and prints MODE and the
// outcome, "ok" or the errno's name. Modes: attach and seize PID; seize
// PID after dropping CAP_CHOWN from its own sets (dropcap-seize); seize a
// child it starts (seize-child).
const ptracerSrc = `package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

const ptraceSeize = 0x4206

func main() {
	// ptrace and capabilities are per thread: one thread does it all.
	runtime.LockOSThread()
	mode := os.Args[1]
	pid := 0
	if len(os.Args) > 2 {
		pid, _ = strconv.Atoi(os.Args[2])
	}
	switch mode {
	case "attach":
		report(mode, syscall.PtraceAttach(pid))
	case "seize":
		report(mode, seize(pid))
	case "dropcap-seize":
		if err := dropChown(); err != nil {
			fmt.Println("capset:", err)
			os.Exit(2)
		}
		report(mode, seize(pid))
	case "seize-child":
		c := exec.Command("/bin/sleep", "10")
		if err := c.Start(); err != nil {
			fmt.Println("start child:", err)
			os.Exit(2)
		}
		report(mode, seize(c.Process.Pid))
		_ = c.Process.Kill()
		_ = c.Wait()
	default:
		fmt.Println("unknown mode", mode)
		os.Exit(2)
	}
}

// seize attaches without stopping the tracee, so that a success leaves
// nothing stopped behind when this process exits (and detaches).
func seize(pid int) error {
	if _, _, e := syscall.Syscall6(syscall.SYS_PTRACE, ptraceSeize, uintptr(pid), 0, 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

func report(mode string, err error) {
	switch err {
	case nil:
		fmt.Println(mode, "ok")
	case syscall.ESRCH:
		fmt.Println(mode, "ESRCH")
	case syscall.EPERM:
		fmt.Println(mode, "EPERM")
	default:
		fmt.Println(mode, err)
	}
}

// dropChown removes CAP_CHOWN from this thread's effective and permitted
// sets: its caps are then no superset of a container process's.
func dropChown() error {
	hdr := struct {
		version uint32
		pid     int32
	}{0x20080522, 0}
	var data [2]struct{ eff, perm, inh uint32 }
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPGET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return e
	}
	data[0].eff &^= 1
	data[0].perm &^= 1
	if _, _, e := syscall.RawSyscall(syscall.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return e
	}
	return nil
}
`

// ptracer builds the ptrace helper and returns the directory holding it,
// to bind into a container at /h.
func ptracer(t *testing.T) string {
	t.Helper()
	return filepath.Dir(testutil.StaticBinary(t, "ptracer", ptracerSrc))
}

// TestPtraceMonitor tries, from inside a container, to reach the monitor
// that runs it (the test binary re-executed as `__monitor`, as lamina is)
// with ptrace. The PID namespace hides it: its host pid names nothing in
// the container's /proc, no process there is a monitor, init's parent
// shows as 0, and PTRACE_ATTACH or PTRACE_SEIZE on the monitor's host pid
// number finds no such process.
func TestPtraceMonitor(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	helper := ptracer(t)
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id := NewID()
	// The monitor's pid is known only once the container runs: the
	// container waits for the test to write it into /shared/pid.
	script := `while [ ! -s /shared/pid ]; do usleep 10000; done; mon=$(cat /shared/pid)
{
	test -e /proc/$mon && echo "visible $mon" || echo hidden
	grep -l '__monito[r]' /proc/[0-9]*/cmdline 2>/dev/null || echo "no monitor"
	grep PPid: /proc/1/status
	/h/ptracer attach $mon
	/h/ptracer seize $mon
} >/shared/out 2>&1`
	dir := filepath.Join(s.dir, id)
	c := &Container{ID: id, Name: "ptrace-monitor", Driver: DriverOverlay,
		Run: Options{
			Args: []string{"/bin/sh", "-c", script}, Network: "none",
			Binds: []string{helper + ":/h:ro", shared + ":/shared"},
		},
		Layers: driver.Layers{Lower: []string{rootfs}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(c, unix.SIGKILL, 10*time.Second); err != nil {
			t.Error(err)
		}
		if err := s.Delete(c); err != nil {
			t.Error(err)
		}
	})
	for _, d := range []string{"upper", "work", "merged"} {
		if err := os.Mkdir(c.File(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start(c); err != nil {
		b, _ := os.ReadFile(c.File("monitor.log"))
		t.Fatalf("start: %v\n%s", err, b)
	}
	st, err := s.State(c)
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the pid under attack is the monitor's.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.MonitorPid))
	if err != nil || !strings.Contains(string(cmdline), MonitorCommand) {
		t.Fatalf("state's MonitorPid %d is not the monitor (cmdline %q, %v)", st.MonitorPid, cmdline, err)
	}
	if err := os.WriteFile(filepath.Join(shared, "pid"), []byte(strconv.Itoa(st.MonitorPid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if !s.WaitStopped(c, 30*time.Second) {
		t.Fatal("the container did not finish")
	}
	if st, err := s.State(c); err != nil || st.ExitCode != 0 {
		t.Fatalf("container state %+v, %v", st, err)
	}
	out, err := os.ReadFile(filepath.Join(shared, "out"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"hidden", "no monitor", "PPid:\t0", "attach ESRCH", "seize ESRCH"}
	if len(lines) != len(want) {
		t.Fatalf("container printed %q, want %q", out, want)
	}
	for i, l := range lines {
		// EPERM would also keep the monitor safe; ESRCH is what a PID
		// namespace gives.
		if l != want[i] && !(i >= 3 && strings.HasSuffix(l, " EPERM")) {
			t.Errorf("line %d: %q, want %q", i+1, l, want[i])
		}
	}
}

// TestPtraceInContainer checks ptrace between a container's own processes
// against docker's rules. Docker's default seccomp profile allows ptrace
// from kernel 4.8 on (its rule has minKernel 4.8, and moby/profiles drops
// it on older kernels, where ptrace could bypass seccomp), and adds it with
// CAP_SYS_PTRACE; what stops a process then is the kernel's own check:
// without CAP_SYS_PTRACE, which docker drops, a tracer needs the
// tracee's uid and a superset of its permitted capabilities (and Yama's
// scope, when the host has Yama).
func TestPtraceInContainer(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	bind := []string{ptracer(t) + ":/h:ro"}
	newKernel := kernelAtLeast(t, 4, 8)
	yama := 0
	if b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope"); err == nil {
		yama, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	// Seccomp's verdict on ptrace with the default profile.
	seccompOK := "ok"
	if !newKernel {
		seccompOK = "EPERM"
	}
	// A root sibling with the same capabilities as pid 1, which is its
	// parent: Yama (scope 1 and up) refuses attaching an ancestor.
	sibling := seccompOK
	if yama >= 1 {
		sibling = "EPERM"
	}
	blockPtrace := `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ERRNO"}]}`
	tests := []struct {
		name string
		opts Options
		args []string
		want string
	}{
		{name: "own child", args: []string{"seize-child"}, want: seccompOK},
		{name: "pid 1 from fewer capabilities", args: []string{"dropcap-seize", "1"}, want: "EPERM"},
		{name: "pid 1 from a root sibling", args: []string{"seize", "1"}, want: sibling},
		{name: "profile without ptrace", opts: Options{Seccomp: blockPtrace}, args: []string{"seize-child"}, want: "EPERM"},
	}
	if yama < 3 {
		// With CAP_SYS_PTRACE the capability check passes: it was the
		// one refusing above.
		tests = append(tests, struct {
			name string
			opts Options
			args []string
			want string
		}{name: "pid 1 with CAP_SYS_PTRACE", opts: Options{CapAdd: []string{"SYS_PTRACE"}}, args: []string{"dropcap-seize", "1"}, want: "ok"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Binds = bind
			// pid 1 is a shell that waits for the helper, so that the
			// helper is its child and pid 1 stays a shell.
			o.Args = []string{"/bin/sh", "-c", "/h/ptracer " + strings.Join(tc.args, " ") + "; exit $?"}
			r := runSpec(t, rootfs, o)
			want := tc.args[0] + " " + tc.want + "\n"
			if r.code != 0 || r.stdout != want {
				t.Fatalf("got code %d stdout %q stderr %q, want %q", r.code, r.stdout, r.stderr, want)
			}
		})
	}
}

// kernelAtLeast reports whether the running kernel is major.minor or newer.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release, err)
	}
	return ma > major || (ma == major && mi >= minor)
}
