package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/lamina-project/lamina/runtime/initproc"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestMain lets the test binary serve as the container init and monitor,
// as the lamina binary does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitCommand {
		if err := initproc.Init(); err != nil {
			os.Stderr.WriteString("init: " + err.Error() + "\n")
		}
		os.Exit(125)
	}
	if len(os.Args) > 1 && os.Args[1] == MonitorCommand {
		if err := RunMonitor(os.Args[2:], nil); err != nil {
			os.Stderr.WriteString("monitor: " + err.Error() + "\n")
			os.Exit(125)
		}
		os.Exit(0)
	}
	code := m.Run()
	if rootfsDir != "" {
		os.RemoveAll(rootfsDir)
	}
	testutil.RemoveBinaries()
	os.Exit(code)
}

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

// sharedRootfs is one busybox rootfs for the tests that do not write to it.
func sharedRootfs(t *testing.T) string {
	t.Helper()
	rootfsOnce.Do(func() {
		rootfsDir, rootfsErr = os.MkdirTemp("", "lamina-rt-rootfs-")
		if rootfsErr == nil {
			_ = os.Chmod(rootfsDir, 0o755)
			rootfsErr = testutil.MakeBusyboxRootfs(rootfsDir)
		}
	})
	if rootfsErr != nil {
		t.Fatal(rootfsErr)
	}
	return rootfsDir
}

var cgSeq int

type result struct {
	code           int
	stdout, stderr string
	oom            bool
}

// runSpec runs a container from o over rootfs and returns what it printed.
func runSpec(t *testing.T, rootfs string, o Options, tweak ...func(*specs.Spec)) result {
	t.Helper()
	if o.Network == "" {
		o.Network = "none"
	}
	spec, err := NewSpec("0123456789abcdef", rootfs, o)
	if err != nil {
		t.Fatalf("spec: %v", err)
	}
	for _, f := range tweak {
		f(spec)
	}
	cgSeq++
	cg, err := NewCgroup(fmt.Sprintf("rt-test-%d-%d", os.Getpid(), cgSeq), spec.Linux.Resources)
	if err != nil {
		t.Fatalf("cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.Destroy(); err != nil {
			t.Errorf("cgroup cleanup: %v", err)
		}
	})
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	p, err := StartInit(spec, Stdio{Stdin: devnull, Stdout: outW, Stderr: errW}, cg)
	outW.Close()
	errW.Close()
	var ee *ExecError
	if errors.As(err, &ee) {
		return result{code: ee.Code, stderr: ee.Msg}
	}
	if err != nil {
		t.Fatalf("start init: %v", err)
	}
	var wg sync.WaitGroup
	var so, se bytes.Buffer
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = so.ReadFrom(outR) }()
	go func() { defer wg.Done(); _, _ = se.ReadFrom(errR) }()
	if err := p.Start(); err != nil {
		if errors.As(err, &ee) {
			_, _ = p.Wait()
			wg.Wait()
			return result{code: ee.Code, stderr: ee.Msg}
		}
		t.Fatalf("start: %v", err)
	}
	code, err := p.Wait()
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	wg.Wait()
	return result{code: code, stdout: so.String(), stderr: se.String(), oom: cg.OOMKilled()}
}

func sh(script string) Options { return Options{Args: []string{"/bin/sh", "-c", script}} }

func TestRunTrue(t *testing.T) {
	testutil.RequirePrivileged(t)
	r := runSpec(t, sharedRootfs(t), sh("echo hello; echo oops >&2; exit 3"))
	if r.code != 3 || r.stdout != "hello\n" || r.stderr != "oops\n" {
		t.Fatalf("got %+v", r)
	}
}

// An init spawned ahead of its container is taken only for a spec in its
// namespaces, and then runs the command with the stdio bootstrap hands it.
func TestInitSpawnedAhead(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	o := sh("echo out; echo err >&2; hostname; exit 5")
	o.Network, o.Hostname = "none", "ahead"
	spec, err := NewSpec("0123456789abcdef", rootfs, o)
	if err != nil {
		t.Fatal(err)
	}
	hostSpec, err := NewSpec("0123456789abcdef", rootfs, Options{Args: o.Args, Network: "host"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := spawnInitAhead()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	devnull, _ := os.Open(os.DevNull)
	stdio := Stdio{Stdin: devnull, Stdout: outW, Stderr: errW}
	if p.adopt(hostSpec, stdio) {
		p.Kill()
		_, _ = p.Wait()
		t.Fatal("an init in new network namespace was taken for --network host")
	}
	if !p.adopt(spec, stdio) {
		p.Kill()
		_, _ = p.Wait()
		t.Fatal("the init spawned ahead was not taken for docker's default namespaces")
	}
	if err := p.bootstrap(spec, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	var so, se bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = so.ReadFrom(outR) }()
	go func() { defer wg.Done(); _, _ = se.ReadFrom(errR) }()
	if err := p.Start(); err != nil {
		_, _ = p.Wait()
		t.Fatal(err)
	}
	code, err := p.Wait()
	wg.Wait()
	if err != nil || code != 5 || so.String() != "out\nahead\n" || se.String() != "err\n" {
		t.Fatalf("exit %d (%v), stdout %q, stderr %q; want 5, \"out\\nahead\\n\", \"err\\n\"", code, err, so.String(), se.String())
	}
}

// A signal ignored where lamina runs is not ignored by the container's
// command (docker resets them): lamina stop with STOPSIGNAL SIGINT must
// work from a script's background job.
func TestIgnoredSignalsReset(t *testing.T) {
	testutil.RequirePrivileged(t)
	signal.Ignore(syscall.SIGINT, syscall.SIGHUP)
	defer signal.Reset(syscall.SIGINT, syscall.SIGHUP)
	r := runSpec(t, sharedRootfs(t), sh("grep SigIgn /proc/self/status"))
	var mask uint64
	if _, err := fmt.Sscanf(strings.TrimSpace(r.stdout), "SigIgn:\t%x", &mask); err != nil || r.code != 0 {
		t.Fatalf("got %+v (%v)", r, err)
	}
	if ign := mask & (1<<(syscall.SIGINT-1) | 1<<(syscall.SIGHUP-1)); ign != 0 {
		t.Fatalf("the command ignores signals %#x (SigIgn %#x); want SIGINT and SIGHUP at their defaults", ign, mask)
	}
}
