package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
	testutil.RemoveCgroupParents()
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

// testInit is one of the two inits a container can run: lamina's Go init
// (from the running binary, which TestMain makes serve as init) or the C
// lamina-init, which is what an installed lamina runs.
type testInit struct {
	name string
	open initOpener
}

var goInit = testInit{"go", func() (*os.File, bool, error) {
	f, err := sealedExe()
	return f, false, err
}}

// cInit is the C init, built once per test process unless
// $LAMINA_BIN_DIR has it.
func cInit(t *testing.T) testInit {
	dir := filepath.Dir(testutil.Binary(t, "lamina-init"))
	return testInit{"c", func() (*os.File, bool, error) {
		f, flat, err := sealedInitIn(dir)
		if err == nil && !flat {
			f.Close()
			err = fmt.Errorf("no lamina-init in %s", dir)
		}
		return f, flat, err
	}}
}

// bothInits is the Go init and the C init, for tests that must hold for
// each.
func bothInits(t *testing.T) []testInit { return []testInit{goInit, cInit(t)} }

// runSpec runs a container from o over rootfs with the Go init and returns
// what it printed.
func runSpec(t *testing.T, rootfs string, o Options, tweak ...func(*specs.Spec)) result {
	t.Helper()
	return runSpecWith(t, goInit, rootfs, o, tweak...)
}

// runSpecWith is runSpec with the init in.
func runSpecWith(t *testing.T, in testInit, rootfs string, o Options, tweak ...func(*specs.Spec)) result {
	t.Helper()
	r, err := tryRunSpec(t, in, rootfs, o, tweak...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// tryRunSpec is runSpecWith that returns a failure to start (other than
// the command's 126 and 127) instead of failing t.
func tryRunSpec(t *testing.T, in testInit, rootfs string, o Options, tweak ...func(*specs.Spec)) (result, error) {
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
	p, err := startInit(spec, Stdio{Stdin: devnull, Stdout: outW, Stderr: errW}, cg, in.open)
	outW.Close()
	errW.Close()
	var ee *ExecError
	if errors.As(err, &ee) {
		return result{code: ee.Code, stderr: ee.Msg}, nil
	}
	if err != nil {
		return result{}, fmt.Errorf("start init: %w", err)
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
			return result{code: ee.Code, stderr: ee.Msg}, nil
		}
		_, _ = p.Wait()
		wg.Wait()
		return result{}, fmt.Errorf("start: %w", err)
	}
	code, err := p.Wait()
	if err != nil {
		return result{}, fmt.Errorf("wait: %w", err)
	}
	wg.Wait()
	return result{code: code, stdout: so.String(), stderr: se.String(), oom: cg.OOMKilled()}, nil
}

// startQuiet starts an init for spec, from in, with /dev/null as its
// stdio and no cgroups.
func startQuiet(t *testing.T, spec *specs.Spec, in testInit) (*InitProcess, error) {
	t.Helper()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	return startInit(spec, Stdio{Stdin: devnull, Stdout: devnull, Stderr: devnull}, nil, in.open)
}

func sh(script string) Options { return Options{Args: []string{"/bin/sh", "-c", script}} }

func TestRunTrue(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, in := range bothInits(t) {
		r := runSpecWith(t, in, sharedRootfs(t), sh("echo hello; echo oops >&2; exit 3"))
		if r.code != 3 || r.stdout != "hello\n" || r.stderr != "oops\n" {
			t.Fatalf("%s init: got %+v", in.name, r)
		}
	}
}

// An init spawned ahead of its container is taken only for a spec in its
// namespaces, and then runs the command with the stdio bootstrap hands it.
func TestInitSpawnedAhead(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, in := range bothInits(t) {
		t.Run(in.name, func(t *testing.T) { initSpawnedAhead(t, in) })
	}
}

func initSpawnedAhead(t *testing.T, in testInit) {
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
	p, err := spawnInitAhead(in.open)
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
	for _, in := range bothInits(t) {
		r := runSpecWith(t, in, sharedRootfs(t), sh("grep SigIgn /proc/self/status"))
		var mask uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(r.stdout), "SigIgn:\t%x", &mask); err != nil || r.code != 0 {
			t.Fatalf("%s init: got %+v (%v)", in.name, r, err)
		}
		if ign := mask & (1<<(syscall.SIGINT-1) | 1<<(syscall.SIGHUP-1)); ign != 0 {
			t.Fatalf("%s init: the command ignores signals %#x (SigIgn %#x); want SIGINT and SIGHUP at their defaults", in.name, ign, mask)
		}
	}
}

// TestInitsAgree is the differential test of the two inits: the same
// containers, run by the Go init and by the C lamina-init, must look the
// same from inside (credentials, capabilities, signals, mounts, /dev,
// environment, limits) and fail with the same codes and messages.
func TestInitsAgree(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "f"), []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Mount IDs, device numbers and propagation peer groups differ from
	// one container to the next; the rest of mountinfo is compared.
	const look = `id; grep -E '^(Cap|NoNewPrivs|Seccomp|SigIgn|SigBlk)' /proc/self/status
awk '{ s = ""; for (i = 7; $i != "-"; i++) ; print $4, $5, $6, $(i+1), $(i+2), $(i+3) }' /proc/self/mountinfo
ls -ln /dev | awk '{ print $1, $3, $4, $5, $6, $NF }'
echo "home=$HOME pwd=$(pwd) umask=$(umask)"; ulimit -a; env | sort; hostname; ls /proc/self/fd; cat /data/f 2>&1; true`
	tests := []struct {
		name string
		o    Options
	}{
		{"default", Options{}},
		{"user and workdir", Options{User: "nobody", Cwd: "/made/here"}},
		{"user and group", Options{User: "1000:nogroup"}},
		{"caps and no new privs", Options{CapDrop: []string{"ALL"}, CapAdd: []string{"NET_ADMIN", "CHOWN"}, NoNewPrivileges: true}},
		{"read-only, tmpfs, binds", Options{ReadOnly: true, Tmpfs: []string{"/scratch"}, Binds: []string{hostDir + ":/data:ro", hostDir + "/f:/etc/extra"}}},
		{"limits, hostname, env", Options{Hostname: "box", Env: []string{"PATH=/bin:/usr/bin", "HOME=/tmp"}, Ulimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 200}}}},
		{"privileged", Options{Privileged: true}},
		{"network host", Options{Network: "host"}},
		{"unconfined", Options{Seccomp: "unconfined", CapAdd: []string{"ALL"}}},
		{"not found", Options{Args: []string{"nosuch"}}},
		{"not found, quoted", Options{Args: []string{"no\"such\\\x01\t"}}},
		{"absolute not found", Options{Args: []string{"/no/such"}}},
		{"not executable", Options{Args: []string{"/etc/passwd"}}},
		{"a directory", Options{Args: []string{"/etc"}}},
		{"unknown user", Options{User: "nouser"}},
		{"unknown group", Options{User: "nobody:nogroupatall"}},
		{"workdir is a file", Options{Cwd: "/etc/passwd"}},
		{"workdir under a file", Options{Cwd: "/etc/passwd/x"}},
	}
	inits := bothInits(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got [2]result
			var errs [2]string
			for i, in := range inits {
				o := tc.o
				if o.Args == nil {
					o.Args = []string{"/bin/sh", "-c", look}
				}
				r, err := tryRunSpec(t, in, rootfs, o)
				if err != nil {
					errs[i] = err.Error()
				}
				got[i] = r
			}
			if got[0] != got[1] || errs[0] != errs[1] {
				t.Fatalf("the inits disagree:\ngo: exit %d, error %q\n%s\nstderr %q\nc:  exit %d, error %q\n%s\nstderr %q",
					got[0].code, errs[0], got[0].stdout, got[0].stderr, got[1].code, errs[1], got[1].stdout, got[1].stderr)
			}
			if fails := tc.o.Args != nil || strings.HasPrefix(tc.name, "unknown") || strings.HasPrefix(tc.name, "workdir"); fails {
				if got[0].code == 0 && errs[0] == "" {
					t.Fatalf("the container ran: %+v", got[0])
				}
			} else if errs[0] != "" || got[0].code != 0 || !strings.Contains(got[0].stdout, "CapEff") {
				t.Fatalf("the look inside failed: exit %d, error %q\n%s\nstderr %q", got[0].code, errs[0], got[0].stdout, got[0].stderr)
			}
		})
	}
}
