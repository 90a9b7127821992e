package detach

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary links the constructor too: run as `detach.test run
// MODE` its process splits in two, and the detached half (TestMain) does
// what MODE says to its stub.
func TestMain(m *testing.M) {
	if s, ok := Take(); ok {
		os.Exit(detached(s, os.Args[len(os.Args)-1]))
	}
	if len(os.Args) > 1 && os.Args[1] != "run" && !strings.HasPrefix(os.Args[1], "-test.") {
		// A command that is not a run: say whether it was split.
		fmt.Print("whole")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// report is what the detached half saw of itself.
type report struct {
	SessionLeader bool
	StubIsParent  bool
	TakenTwice    bool
	StrayCloexec  bool // the fd 7 its caller left open is close-on-exec
	Stdin         string
}

func detached(s *Stub, mode string) int {
	switch mode {
	case "report":
		var r report
		sid, _ := unix.Getsid(0)
		r.SessionLeader = sid == os.Getpid()
		r.StubIsParent = s.Pid == os.Getppid()
		_, r.TakenTwice = Take()
		flags, err := unix.FcntlInt(7, unix.F_GETFD, 0)
		r.StrayCloexec = err == nil && flags&unix.FD_CLOEXEC != 0
		r.Stdin, _ = os.Readlink("/proc/self/fd/0")
		b, _ := json.Marshal(r)
		os.Stdout.Write(b)
		s.Exit(0)
	case "exit":
		s.Exit(7)
		s.Exit(8) // only the first word counts
		// Outliving the stub, as a monitor does.
		time.Sleep(300 * time.Millisecond)
	case "die":
		s.Die(syscall.SIGTERM)
	case "vanish":
		return 3 // no word: the stub ends as this process does
	case "crash":
		_ = unix.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Second)
	case "forward":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGWINCH)
		fmt.Println("ready")
		for sig := range sigs {
			if sig == syscall.SIGUSR1 {
				s.Exit(42)
				return 0
			}
		}
	}
	return 0
}

// split runs the test binary as `detach.test ARGS...` with a file left
// open as fd 7 (not close-on-exec), and stdin closed if closeStdin.
func split(t *testing.T, closeStdin bool, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	stray, err := os.Create(filepath.Join(t.TempDir(), "stray"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stray.Close() })
	sh := `exec 7<&3 3<&-; exec "$0" "$@"`
	if closeStdin {
		sh = `exec 7<&3 3<&- <&-; exec "$0" "$@"`
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", sh, exe}, args...)...)
	cmd.ExtraFiles = []*os.File{stray}
	return cmd
}

func TestDetachedHalf(t *testing.T) {
	for _, closed := range []bool{false, true} {
		t.Run(fmt.Sprintf("stdin-closed=%v", closed), func(t *testing.T) {
			out, err := split(t, closed, "run", "report").Output()
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			var r report
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			want := report{SessionLeader: true, StubIsParent: true, StrayCloexec: true, Stdin: r.Stdin}
			if r != want {
				t.Errorf("detached half saw %+v, want %+v", r, want)
			}
			if r.Stdin == "" || strings.HasPrefix(r.Stdin, "pipe:") {
				t.Errorf("fd 0 is %q; want the caller's stdin or /dev/null, never the status pipe", r.Stdin)
			}
		})
	}
}

// TestWhatSplits: only a run is split, with or without --root and the
// container group before it.
func TestWhatSplits(t *testing.T) {
	for _, args := range [][]string{
		{"run", "report"}, {"--root", "/x", "run", "report"}, {"--root=/x", "run", "report"},
		{"container", "run", "report"}, {"--root", "/x", "container", "run", "report"},
		{"ps", "report"}, {"--root", "/x", "ps", "report"}, {"container", "ps", "report"},
		{"--root", "run", "report"}, // the store is named run: the command is "report"
	} {
		out, err := split(t, false, args...).Output()
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		wantSplit := args[len(args)-2] == "run" && (len(args) < 3 || args[len(args)-3] != "--root")
		if gotSplit := string(out) != "whole"; gotSplit != wantSplit {
			t.Errorf("%q: split %v, want %v (output %q)", args, gotSplit, wantSplit, out)
		}
	}
}

// TestStubEnds: the stub ends as the detached half says, or as it ended.
func TestStubEnds(t *testing.T) {
	for _, tc := range []struct {
		mode string
		code int            // exit code, when sig is 0
		sig  syscall.Signal // the signal the stub dies of
	}{
		{"exit", 7, 0},
		{"die", 0, syscall.SIGTERM},
		{"vanish", 3, 0},
		{"crash", 0, syscall.SIGKILL},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			cmd := split(t, false, "run", tc.mode)
			err := cmd.Run()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			switch {
			case tc.sig != 0 && (!ws.Signaled() || ws.Signal() != tc.sig):
				t.Errorf("stub ended %v, want killed by %v", ws, tc.sig)
			case tc.sig == 0 && (!ws.Exited() || ws.ExitStatus() != tc.code):
				t.Errorf("stub ended %v, want exit %d", ws, tc.code)
			}
		})
	}
}

// TestStubForwardsSignals: a signal to the stub reaches the detached half.
func TestStubForwardsSignals(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "run", "forward")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("detached half said %q, %v", line, err)
	}
	// SIGWINCH first: forwarded too, and it must not end anything.
	for _, sig := range []syscall.Signal{syscall.SIGWINCH, syscall.SIGUSR1} {
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 42 {
			t.Errorf("stub ended with %v, want exit 42 (SIGUSR1 forwarded)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stub did not end: SIGUSR1 was not forwarded")
	}
}

// TestForwardedIsTheStubs: the detached process handles exactly what the
// stub forwards.
func TestForwardedIsTheStubs(t *testing.T) {
	if got, want := stubForwards(), Forwarded(); !slices.Equal(got, want) {
		t.Fatalf("the stub forwards %v, Forwarded says %v", got, want)
	}
}
