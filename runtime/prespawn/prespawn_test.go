package prespawn

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary links the constructor too, so it plays both parts: run
// as `prespawn.test run` it is a CLI whose constructor started a monitor,
// and that monitor is the test binary again, as `__monitor`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "__monitor":
			os.Exit(fakeMonitor())
		case "run", "ps":
			os.Exit(fakeCLI())
		}
	}
	os.Exit(m.Run())
}

// fakeMonitor checks what a monitor relies on: its orders on fd 4, its
// report pipe on fd 3, the attach socket on fd 5, a session of its own,
// and stdio that is not the CLI's.
func fakeMonitor() int {
	orders, err := io.ReadAll(os.NewFile(4, "orders"))
	if err != nil {
		return 3
	}
	sid, _ := unix.Getsid(0)
	stdout, _ := os.Readlink("/proc/self/fd/1")
	cwd, _ := os.Getwd()
	// The CLI had a file named prespawn-stray open, without
	// close-on-exec (runSelf).
	stray := false
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		if target, _ := os.Readlink("/proc/self/fd/" + fd.Name()); strings.HasSuffix(target, "prespawn-stray") {
			stray = true
		}
	}
	fmt.Fprintf(os.NewFile(3, "report"), "orders=%s session-leader=%v stdout=%s cwd=%s stray-fd=%v",
		orders, sid == os.Getpid(), stdout, cwd, stray)
	if _, err := os.NewFile(5, "attach").WriteString("hello"); err != nil {
		return 4
	}
	return 0
}

type cliResult struct {
	Taken, TakenTwice bool
	Report, Attach    string
	Cmdline           string
	Exit              int
	Stdin             string // what fd 0 is
}

// fakeCLI takes the prespawned monitor, if any, as Store.Prepare does,
// gives it its orders and prints what it saw as JSON.
func fakeCLI() int {
	var r cliResult
	r.Stdin, _ = os.Readlink("/proc/self/fd/0")
	m, ok := Take()
	_, r.TakenTwice = Take()
	r.Taken = ok
	if ok {
		// vfork returns once the child has left the CLI's memory, a
		// moment before the kernel has set up its new command line.
		for i := 0; i < 100 && r.Cmdline == ""; i++ {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.Pid))
			r.Cmdline = strings.ReplaceAll(string(cmdline), "\x00", " ")
			if r.Cmdline == "" {
				time.Sleep(time.Millisecond)
			}
		}
		_, _ = m.ID.WriteString("go")
		m.ID.Close()
		rep, _ := io.ReadAll(m.Report)
		r.Report = string(rep)
		att, _ := io.ReadAll(m.Attach)
		r.Attach = string(att)
		p, err := os.FindProcess(m.Pid)
		if err == nil {
			st, err := p.Wait()
			if err == nil {
				r.Exit = st.ExitCode()
			}
		}
	}
	b, _ := json.Marshal(r)
	os.Stdout.Write(b)
	return 0
}

// runSelf runs the test binary as `lamina ARG busybox`, with a file named
// prespawn-stray open as fd 7 (not close-on-exec) and, if closeStdin, fd 0
// closed.
func runSelf(t *testing.T, arg string, closeStdin bool) cliResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	stray, err := os.Create(filepath.Join(t.TempDir(), "prespawn-stray"))
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	sh := `exec 7<&3 3<&-; exec "$0" "$@"`
	if closeStdin {
		sh = `exec 7<&3 3<&- <&-; exec "$0" "$@"`
	}
	cmd := exec.Command("/bin/sh", "-c", sh, exe, arg, "busybox")
	cmd.ExtraFiles = []*os.File{stray}
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v; stderr %q", arg, err, errb.String())
	}
	var r cliResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("%s: output %q: %v", arg, out.String(), err)
	}
	return r
}

func TestRunPrespawnsMonitor(t *testing.T) {
	for _, closed := range []bool{false, true} {
		t.Run(fmt.Sprintf("stdin-closed=%v", closed), func(t *testing.T) { checkPrespawn(t, closed) })
	}
}

func checkPrespawn(t *testing.T, closeStdin bool) {
	r := runSelf(t, "run", closeStdin)
	if !r.Taken {
		t.Fatal("no monitor was prespawned for run")
	}
	if r.TakenTwice {
		t.Error("Take handed out the monitor twice")
	}
	if !strings.HasSuffix(strings.TrimSpace(r.Cmdline), " __monitor") {
		t.Errorf("monitor command line %q, want ... __monitor", r.Cmdline)
	}
	if r.Stdin == "" || strings.HasPrefix(r.Stdin, "pipe:") {
		t.Errorf("the CLI's fd 0 is %q; want its stdin or /dev/null, never the monitor's pipe", r.Stdin)
	}
	want := "orders=go session-leader=true stdout=/dev/null cwd=/ stray-fd=false"
	if r.Report != want {
		t.Errorf("monitor reported %q, want %q", r.Report, want)
	}
	if r.Attach != "hello" {
		t.Errorf("attach socket carried %q, want hello", r.Attach)
	}
	if r.Exit != 0 {
		t.Errorf("monitor exited %d", r.Exit)
	}
}

func TestOtherCommandsPrespawnNothing(t *testing.T) {
	if r := runSelf(t, "ps", false); r.Taken {
		t.Fatal("a monitor was prespawned for ps")
	}
}
