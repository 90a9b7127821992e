package cli_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/lamina-project/lamina/runtime/detach"
	"github.com/moby/sys/mountinfo"
)

// ctrStore makes a store with a busybox image and registers a cleanup
// that removes every container and then checks nothing is left mounted.
func ctrStore(t *testing.T) string {
	t.Helper()
	testutil.RequirePrivileged(t)
	root := t.TempDir()
	dir := t.TempDir()
	testutil.BusyboxRootfs(t, dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "busybox.tar")
	if out, err := exec.Command("tar", "-C", dir, "-cf", tarPath, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	ok(t, root, "import", tarPath, "busybox:latest")
	t.Cleanup(func() {
		ids := strings.Fields(ok(t, root, "ps", "-aq", "--no-trunc"))
		if len(ids) > 0 {
			run(t, root, nil, append([]string{"rm", "-f"}, ids...)...)
		}
		// A run --rm returns once its container is gone from the store;
		// its monitor unmounts the union and removes the files after.
		eventually(t, "the removed containers' monitors to finish", func() bool {
			left, _ := filepath.Glob(filepath.Join(root, "containers", ".removing-*"))
			return len(left) == 0
		})
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(root))
		if err != nil {
			t.Error(err)
		}
		for _, m := range mounts {
			t.Errorf("left mounted: %s", m.Mountpoint)
			_ = syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH)
		}
	})
	return root
}

// eventually polls f until it holds, failing after a generous deadline:
// for conditions that take a while on a loaded machine, not for timing.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var id64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestRunForeground(t *testing.T) {
	root := ctrStore(t)
	drv := "--storage-driver=overlay"
	profile := filepath.Join(t.TempDir(), "seccomp.json")
	if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	hostname, _ := os.Hostname()
	tests := []struct {
		name      string
		args      []string
		stdin     string
		code      int
		out, errs string
	}{
		{"echo", []string{"run", "--rm", drv, "busybox", "echo", "hello"}, "", 0, "hello\n", ""},
		{"exit code and streams", []string{"run", "--rm", drv, "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"}, "", 3, "out\n", "err\n"},
		{"stdin", []string{"run", "--rm", "-i", drv, "busybox", "cat"}, "piped\n", 0, "piped\n", ""},
		{"no stdin without -i", []string{"run", "--rm", drv, "busybox", "cat"}, "piped\n", 0, "", ""},
		{"env and workdir", []string{"run", "--rm", drv, "-e", "A=1", "-w", "/tmp", "busybox", "sh", "-c", "echo $A $(pwd)"}, "", 0, "1 /tmp\n", ""},
		{"user", []string{"run", "--rm", drv, "-u", "nobody", "busybox", "id", "-u"}, "", 0, "65534\n", ""},
		{"entrypoint", []string{"run", "--rm", drv, "--entrypoint", "echo", "busybox", "a", "b"}, "", 0, "a b\n", ""},
		{"hostname", []string{"run", "--rm", drv, "-h", "box", "busybox", "hostname"}, "", 0, "box\n", ""},
		{"etc files", []string{"run", "--rm", drv, "-h", "box", "busybox", "sh", "-c", "cat /etc/hostname; grep -c localhost /etc/hosts"}, "", 0, "box\n2\n", ""},
		{"not found", []string{"run", "--rm", drv, "busybox", "nosuch"}, "", 127, "", "executable file not found"},
		{"not executable", []string{"run", "--rm", drv, "busybox", "/etc/passwd"}, "", 126, "", "permission denied"},
		{"unknown image", []string{"run", "--rm", drv, "nosuchimage", "true"}, "", 125, "", "nosuchimage"},
		{"bad flag", []string{"run", "--bogus", "busybox", "true"}, "", 125, "", "unknown flag"},
		{"-it without a terminal", []string{"run", "-it", "busybox", "true"}, "", 1, "", "not a TTY"},
		{"bad memory", []string{"run", "-m", "lots", "busybox", "true"}, "", 125, "", "memory"},
		{"read-only", []string{"run", "--rm", drv, "--read-only", "busybox", "touch", "/x"}, "", 1, "", "Read-only file system"},
		{"cap drop", []string{"run", "--rm", drv, "--cap-drop", "ALL", "busybox", "grep", "CapEff", "/proc/self/status"}, "", 0, "CapEff:\t0000000000000000\n", ""},
		{"no-new-privileges", []string{"run", "--rm", drv, "--security-opt", "no-new-privileges", "busybox", "grep", "NoNewPrivs", "/proc/self/status"}, "", 0, "NoNewPrivs:\t1\n", ""},
		{"seccomp unconfined", []string{"run", "--rm", drv, "--security-opt", "seccomp=unconfined", "busybox", "grep", "Seccomp:", "/proc/self/status"}, "", 0, "Seccomp:\t0\n", ""},
		{"seccomp profile file", []string{"run", "--rm", drv, "--security-opt", "seccomp=" + profile, "busybox", "mkdir", "/newdir"}, "", 1, "", "Operation not permitted"},
		{"network host", []string{"run", "--rm", drv, "--network", "host", "busybox", "hostname"}, "", 0, hostname + "\n", ""},
		{"network none", []string{"run", "--rm", drv, "busybox", "ls", "/sys/class/net"}, "", 0, "lo\n", ""},
		{"bad network", []string{"run", "--rm", drv, "--network", "bridge", "busybox", "true"}, "", 125, "", "not supported"},
		{"ulimit", []string{"run", "--rm", drv, "--ulimit", "nofile=100:200", "busybox", "sh", "-c", "ulimit -n; ulimit -Hn"}, "", 0, "100\n200\n", ""},
		{"tmpfs and bind", []string{"run", "--rm", drv, "--tmpfs", "/scratch", "-v", profile + ":/p.json:ro", "busybox", "sh", "-c", "grep -c ' /scratch tmpfs' /proc/mounts; head -c 17 /p.json; echo; echo x > /p.json"}, "", 1, "1\n{\"defaultAction\":\n", "Read-only"},
		{"pids limit", []string{"run", "--rm", drv, "--pids-limit", "5", "busybox", "sh", "-c", "i=0; while [ $i -lt 10 ]; do sleep 1 & i=$((i+1)); done"}, "", 2, "", "fork"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errs, code := run(t, root, []byte(tc.stdin), tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout %q\nstderr %q", code, tc.code, out, errs)
			}
			if out != tc.out {
				t.Fatalf("stdout %q, want %q (stderr %q)", out, tc.out, errs)
			}
			if tc.errs != "" && !strings.Contains(errs, tc.errs) {
				t.Fatalf("stderr %q does not contain %q", errs, tc.errs)
			}
		})
	}
	if left := ok(t, root, "ps", "-a", "--filter", "status=exited", "-q"); left != "" {
		t.Fatalf("--rm left containers: %q", left)
	}
}

// TestContainerLifecycle drives one detached container through every
// command.
func TestContainerLifecycle(t *testing.T) {
	root := ctrStore(t)
	id := strings.TrimSpace(ok(t, root, "run", "-d", "--storage-driver", "overlay", "--name", "web", "busybox",
		"sh", "-c", "trap 'exit 0' USR1; i=0; while true; do echo tick $i; echo x >> /tmp/count; i=$((i+1)); sleep 0.1; done"))
	if !id64.MatchString(id) {
		t.Fatalf("run -d printed %q, want a 64-hex ID", id)
	}
	if _, errs, code := run(t, root, nil, "run", "-d", "--storage-driver", "overlay", "--name", "web", "busybox", "true"); code != 125 || !strings.Contains(errs, "already in use") {
		t.Fatalf("duplicate name: exit %d, %q", code, errs)
	}

	// ps: docker's columns, -q, --format, --filter, -s, --no-trunc.
	ps := ok(t, root, "ps")
	if !strings.HasPrefix(ps, "CONTAINER ID   IMAGE     COMMAND") || !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "Up ") || !strings.Contains(ps, " web\n") {
		t.Fatalf("ps:\n%s", ps)
	}
	if got := ok(t, root, "ps", "-q"); got != id[:12]+"\n" {
		t.Fatalf("ps -q = %q", got)
	}
	if got := ok(t, root, "ps", "--no-trunc", "-q"); got != id+"\n" {
		t.Fatalf("ps --no-trunc -q = %q", got)
	}
	if got := ok(t, root, "ps", "--format", "{{.Names}} {{.State}}"); got != "web running\n" {
		t.Fatalf("ps --format = %q", got)
	}
	if got := ok(t, root, "ps", "-a", "--filter", "status=exited", "-q"); got != "" {
		t.Fatalf("ps --filter status=exited = %q", got)
	}
	if got := ok(t, root, "ps", "-s", "--format", "{{.Size}}"); !regexp.MustCompile(`^\S+B \(virtual \S+MB\)\n$`).MatchString(got) {
		t.Fatalf("ps -s size = %q", got)
	}

	// logs, from the json-file on disk.
	eventually(t, "three log lines", func() bool {
		return strings.Count(ok(t, root, "logs", "web"), "tick") >= 3
	})
	if got := ok(t, root, "logs", "--tail", "1", "web"); strings.Count(got, "\n") != 1 || !strings.HasPrefix(got, "tick ") {
		t.Fatalf("logs --tail 1 = %q", got)
	}
	if got := ok(t, root, "logs", "-t", "--tail", "1", id[:6]); !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\S+Z tick \d+\n$`).MatchString(got) {
		t.Fatalf("logs -t = %q", got)
	}
	raw, err := os.ReadFile(filepath.Join(root, "containers", id, "ctr.log"))
	if err != nil {
		t.Fatal(err)
	}
	var entry struct{ Log, Stream, Time string }
	if err := json.Unmarshal([]byte(strings.SplitN(string(raw), "\n", 2)[0]), &entry); err != nil || entry.Stream != "stdout" || entry.Log != "tick 0\n" {
		t.Fatalf("json-file entry %+v (%v)", entry, err)
	}

	// exec joins the container: its PID namespace, user, env, exit codes,
	// its seccomp filter, capabilities and cgroup.
	if got := ok(t, root, "exec", "web", "cat", "/proc/1/cmdline"); !strings.HasPrefix(got, "sh\x00-c") {
		t.Fatalf("exec sees pid 1 = %q", got)
	}
	if got := ok(t, root, "exec", "-u", "nobody", "-e", "FOO=bar", "-w", "/tmp", "web", "sh", "-c", "echo $(id -u) $FOO $(pwd)"); got != "65534 bar /tmp\n" {
		t.Fatalf("exec -u -e -w = %q", got)
	}
	if got := ok(t, root, "exec", "web", "sh", "-c", "grep -E '^(Seccomp|CapEff):' /proc/self/status"); got != "CapEff:\t00000000a80425fb\nSeccomp:\t2\n" {
		t.Fatalf("exec confinement = %q", got)
	}
	initCg := ok(t, root, "exec", "web", "cat", "/proc/1/cgroup")
	if got := ok(t, root, "exec", "web", "cat", "/proc/self/cgroup"); got != initCg {
		t.Fatalf("exec cgroup %q, init's %q", got, initCg)
	}
	if got := ok(t, root, "exec", "-i", "web", "cat"); got != "" {
		t.Fatalf("exec -i with empty stdin = %q", got)
	}
	if out, _, code := run(t, root, []byte("in\n"), "exec", "-i", "web", "cat"); code != 0 || out != "in\n" {
		t.Fatalf("exec -i: %d %q", code, out)
	}
	if _, _, code := run(t, root, nil, "exec", "web", "sh", "-c", "exit 5"); code != 5 {
		t.Fatalf("exec exit code %d, want 5", code)
	}
	if _, errs, code := run(t, root, nil, "exec", "-w", "/nonexistent", "web", "true"); code != 126 || !strings.Contains(errs, "no such file") {
		t.Fatalf("exec -w missing dir: %d %q", code, errs)
	}
	if _, errs, code := run(t, root, nil, "exec", "web", "nosuch"); code != 127 || !strings.Contains(errs, "not found") {
		t.Fatalf("exec nosuch: %d %q", code, errs)
	}
	// Isolation from an exec'd process, too.
	for _, script := range []string{"mkdir -p /tmp/m; mount -t tmpfs t /tmp/m", "unshare -m true", "echo 1 > /proc/sys/kernel/ns_last_pid", "nsenter -t 1 -m true"} {
		if _, _, code := run(t, root, nil, "exec", "web", "sh", "-c", script+" 2>/dev/null"); code == 0 {
			t.Errorf("exec %q succeeded inside the container", script)
		}
	}

	// attach streams what the container prints from now on.
	att := exec.Command(testutil.Binary(t, "lamina"), "--root", root, "attach", "web")
	attOut, err := att.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := att.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(attOut).ReadString('\n')
	_ = att.Process.Kill()
	_ = att.Wait()
	if err != nil || !strings.HasPrefix(line, "tick ") {
		t.Fatalf("attach read %q, %v", line, err)
	}

	// top lists the container's processes only.
	top := ok(t, root, "top", "web")
	if !strings.Contains(top, "PID") || !strings.Contains(top, "tick") || strings.Contains(top, "lamina") {
		t.Fatalf("top:\n%s", top)
	}

	// pause stops progress; unpause resumes it.
	upper := strings.TrimSpace(ok(t, root, "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "web"))
	count := func() int64 {
		fi, err := os.Stat(filepath.Join(upper, "tmp", "count"))
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	ok(t, root, "pause", "web")
	if got := ok(t, root, "ps", "--format", "{{.Status}}"); !strings.HasSuffix(got, "(Paused)\n") {
		t.Fatalf("paused status %q", got)
	}
	if _, _, code := run(t, root, nil, "pause", "web"); code != 1 {
		t.Fatalf("pausing twice: exit %d", code)
	}
	before := count()
	time.Sleep(500 * time.Millisecond)
	if after := count(); after != before {
		t.Fatalf("a paused container made progress: %d -> %d bytes", before, after)
	}
	ok(t, root, "unpause", "web")
	eventually(t, "progress after unpause", func() bool { return count() > before })

	// inspect: docker's document.
	var docs []map[string]any
	if err := json.Unmarshal([]byte(ok(t, root, "inspect", "web")), &docs); err != nil || len(docs) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	d := docs[0]
	state := d["State"].(map[string]any)
	if d["Id"] != id || d["Name"] != "/web" || state["Status"] != "running" || state["Running"] != true ||
		d["GraphDriver"].(map[string]any)["Name"] != "overlay" || d["SizeRw"] == nil {
		t.Fatalf("inspect: %v", d)
	}

	// rename; rm refuses a running container; stop escalates to SIGKILL.
	ok(t, root, "rename", "web", "web2")
	if _, errs, code := run(t, root, nil, "rm", "web2"); code != 1 || !strings.Contains(errs, "stop the container before removing") {
		t.Fatalf("rm running: %d %q", code, errs)
	}
	if got := ok(t, root, "kill", "-s", "USR1", "web2"); got != "web2\n" {
		t.Fatalf("kill printed %q", got)
	}
	if got := ok(t, root, "wait", "web2"); got != "0\n" {
		t.Fatalf("wait after USR1 = %q", got)
	}
	if got := ok(t, root, "ps", "-a", "--format", "{{.Status}}"); !strings.HasPrefix(got, "Exited (0)") {
		t.Fatalf("status after exit %q", got)
	}
	ok(t, root, "start", "web2")
	eventually(t, "restart running", func() bool { return ok(t, root, "ps", "-q") == id[:12]+"\n" })
	ok(t, root, "restart", "-t", "1", "web2")
	if got := ok(t, root, "ps", "--format", "{{.State}}"); got != "running\n" {
		t.Fatalf("after restart: %q", got)
	}
	if got := ok(t, root, "stop", "-t", "0", "web2"); got != "web2\n" {
		t.Fatalf("stop printed %q", got)
	}
	if got := ok(t, root, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "web2"); got != "exited 137\n" {
		t.Fatalf("after stop: %q", got)
	}
	if _, _, code := run(t, root, nil, "exec", "web2", "true"); code != 1 {
		t.Fatalf("exec in a stopped container: exit %d", code)
	}
	out := ok(t, root, "container", "prune", "-f")
	if !strings.Contains(out, id) || !strings.Contains(out, "Total reclaimed space:") {
		t.Fatalf("prune: %q", out)
	}
	if _, errs, code := run(t, root, nil, "rm", "web2"); code != 1 || !strings.Contains(errs, "No such container") {
		t.Fatalf("rm after prune: %d %q", code, errs)
	}
}

// TestOOMKilled checks docker's report of an out-of-memory kill.
func TestOOMKilled(t *testing.T) {
	root := ctrStore(t)
	_, _, code := run(t, root, nil, "run", "--name", "hog", "--storage-driver", "overlay", "-m", "32m", "busybox",
		"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
	if code != 137 {
		t.Fatalf("exit %d, want 137", code)
	}
	if got := ok(t, root, "inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "hog"); got != "true 137\n" {
		t.Fatalf("inspect: %q", got)
	}
}

// TestMonitorDies checks that ps tells the truth and rm cleans up when a
// container's monitor is killed, with a kernel mount and with the FUSE
// mount the monitor served itself.
func TestMonitorDies(t *testing.T) {
	root := ctrStore(t)
	for _, drv := range []string{"overlay", "laminafs"} {
		t.Run(drv, func(t *testing.T) {
			id := strings.TrimSpace(ok(t, root, "run", "-d", "--storage-driver", drv, "busybox", "sleep", "1000"))
			var st struct{ MonitorPid, Pid int }
			b, err := os.ReadFile(filepath.Join(root, "containers", id, "state.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &st); err != nil || st.MonitorPid == 0 {
				t.Fatalf("state.json: %v %s", err, b)
			}
			start := procStart(st.Pid)
			if err := syscall.Kill(st.MonitorPid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			eventually(t, "ps to show the container exited", func() bool {
				return strings.HasPrefix(ok(t, root, "ps", "-a", "--filter", "id="+id, "--format", "{{.Status}}"), "Exited (255)")
			})
			// The container's processes went with their monitor.
			eventually(t, "init to die", func() bool { return gone(st.Pid, start) })
			ok(t, root, "rm", id[:12])
			if mounts, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(root)); len(mounts) != 0 {
				t.Fatalf("rm left %d mounts", len(mounts))
			}
		})
	}
}

// procStat returns the fields of /proc/pid/stat after the command name.
func procStat(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// procStart is pid's start time, to tell it from a later process that
// reuses the number.
func procStart(pid int) string {
	if f := procStat(pid); len(f) > 19 {
		return f[19]
	}
	return ""
}

// gone reports whether the process pid that started at start has exited
// (a zombie waiting for a reaper that is not ours counts as gone).
func gone(pid int, start string) bool {
	f := procStat(pid)
	return len(f) < 20 || f[0] == "Z" || f[19] != start
}

// TestStorageDrivers runs containers on each storage driver: the union is
// the root, writes land in the container's layer and survive a restart.
func TestStorageDrivers(t *testing.T) {
	root := ctrStore(t)
	for _, drv := range []string{"laminafs", "overlay", "vfs"} {
		t.Run(drv, func(t *testing.T) {
			fsType := map[string]string{"laminafs": "fuse.laminafs", "overlay": "overlay", "vfs": "[a-z0-9]*"}[drv]
			out, errs, code := run(t, root, nil, "run", "--rm", "--storage-driver", drv, "busybox", "sh", "-c",
				"echo hi > /f; cat /f; grep -c '^[^ ]* / "+fsType+" ' /proc/mounts")
			if code != 0 || out != "hi\n1\n" {
				t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
			}
			id := strings.TrimSpace(ok(t, root, "create", "--storage-driver", drv, "busybox", "sh", "-c", "echo persisted >> /data; cat /data"))
			ok(t, root, "start", "-a", id)
			if got := ok(t, root, "start", "-a", id); got != "persisted\npersisted\n" {
				t.Fatalf("second start = %q, want the first start's write kept", got)
			}
			if got := ok(t, root, "inspect", "-f", "{{.Driver}} {{.GraphDriver.Name}}", id); got != drv+" "+drv+"\n" {
				t.Fatalf("driver %q", got)
			}
			ok(t, root, "rm", id)
		})
	}
}

// TestInitLayer: the mount points a start binds over (/etc/hosts,
// /etc/hostname, /etc/resolv.conf, which the test image lacks) come from
// the image's init layer, on every storage driver, so that a container's
// own layer stays empty; a container whose init layer went missing gets
// it back at its start.
func TestInitLayer(t *testing.T) {
	root := ctrStore(t)
	for _, drv := range []string{"laminafs", "overlay", "vfs"} {
		t.Run(drv, func(t *testing.T) {
			id := strings.TrimSpace(ok(t, root, "create", "--storage-driver", drv, "busybox", "sh", "-c",
				"grep -c localhost /etc/hosts; cat /etc/hostname; ls /etc"))
			defer ok(t, root, "rm", id)
			check := func(what string) {
				t.Helper()
				want := "2\n" + id[:12] + "\ngroup\nhostname\nhosts\npasswd\nresolv.conf\n"
				if got := ok(t, root, "start", "-a", id); got != want {
					t.Fatalf("%s: %q, want %q", what, got, want)
				}
				if drv != "vfs" { // vfs's layer is the whole root
					upper := strings.TrimSpace(ok(t, root, "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", id))
					if ents, err := os.ReadDir(upper); err != nil || len(ents) != 0 {
						t.Fatalf("%s: the container's layer holds %v (%v), want nothing", what, ents, err)
					}
				}
			}
			check("first start")
			lower := strings.TrimSpace(ok(t, root, "inspect", "-f", "{{.GraphDriver.Data.LowerDir}}", id))
			init, _, _ := strings.Cut(lower, ":")
			if filepath.Dir(init) != filepath.Join(root, "containers", ".init") {
				t.Fatalf("top lower layer %s, want the init layer", init)
			}
			if err := os.RemoveAll(init); err != nil {
				t.Fatal(err)
			}
			check("start with the init layer gone")
		})
	}
}

// TestUserDatabase: -u resolves against the user database the container
// sees: the image's, its own layer's changes, or a file bound over it.
func TestUserDatabase(t *testing.T) {
	root := ctrStore(t)
	for _, drv := range []string{"laminafs", "overlay", "vfs"} {
		t.Run(drv, func(t *testing.T) {
			// A user only the container's own layer knows.
			id := strings.TrimSpace(ok(t, root, "create", "--storage-driver", drv, "-u", "tester", "busybox", "id"))
			defer ok(t, root, "rm", id)
			upper := strings.TrimSpace(ok(t, root, "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", id))
			if drv == "vfs" {
				// vfs copies the image into its layer at the first start.
				if _, errs, code := run(t, root, nil, "start", "-a", id); code == 0 || !strings.Contains(errs, "unable to find user tester") {
					t.Fatalf("start before the user exists: exit %d, %q", code, errs)
				}
			}
			etc := filepath.Join(upper, "etc")
			if err := os.MkdirAll(etc, 0o755); err != nil {
				t.Fatal(err)
			}
			passwd := "root:x:0:0:root:/root:/bin/sh\ntester:x:4242:4343::/home/tester:/bin/sh\n"
			group := "root:x:0:\ntesters:x:4343:\nextra:x:4444:tester\n"
			for name, content := range map[string]string{"passwd": passwd, "group": group} {
				if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := ok(t, root, "start", "-a", id); got != "uid=4242(tester) gid=4343(testers) groups=4444(extra)\n" {
				t.Fatalf("id = %q", got)
			}
			// A passwd bound over the image's.
			host := filepath.Join(t.TempDir(), "passwd")
			if err := os.WriteFile(host, []byte("root:x:0:0:root:/root:/bin/sh\nbound:x:777:0::/:/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := ok(t, root, "run", "--rm", "--storage-driver", drv, "-v", host+":/etc/passwd:ro", "-u", "bound", "busybox", "id", "-u"); got != "777\n" {
				t.Fatalf("id -u with a bound passwd = %q", got)
			}
		})
	}
}

// TestTTY checks -it: a real pty in the container, with the CLI's window
// size, and the exit code through it; exec -it too.
func TestTTY(t *testing.T) {
	root := ctrStore(t)
	bin := testutil.Binary(t, "lamina")
	runPty := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--root", root}, args...)...)
		ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 30, Cols: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer ptmx.Close()
		var out bytes.Buffer
		done := make(chan struct{})
		go func() { defer close(done); _, _ = io.Copy(&out, ptmx) }()
		err = cmd.Wait()
		<-done
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return strings.ReplaceAll(out.String(), "\r", ""), code
	}
	out, code := runPty("run", "--rm", "-it", "--storage-driver", "overlay", "busybox", "sh", "-c", "tty; stty size; echo $TERM; exit 3")
	if code != 3 || out != "/dev/pts/0\n30 100\nxterm\n" {
		t.Fatalf("run -it: exit %d, output %q", code, out)
	}
	ok(t, root, "run", "-d", "--name", "tt", "--storage-driver", "overlay", "busybox", "sleep", "1000")
	out, code = runPty("exec", "-it", "tt", "sh", "-c", "tty; stty size; exit 4")
	if code != 4 || !regexp.MustCompile(`^/dev/pts/\d+\n30 100\n$`).MatchString(out) {
		t.Fatalf("exec -it: exit %d, output %q", code, out)
	}
}

// TestSignalProxy checks that a foreground run forwards signals to the
// container, as docker's --sig-proxy does.
func TestSignalProxy(t *testing.T) {
	root := ctrStore(t)
	cmd := exec.Command(testutil.Binary(t, "lamina"), "--root", root, "run", "--rm", "--storage-driver", "overlay", "busybox",
		"sh", "-c", "trap 'echo got; exit 9' TERM; echo ready; while true; do sleep 0.1; done")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 9 || string(rest) != "got\n" {
		t.Fatalf("after SIGTERM: %v, output %q", err, rest)
	}
}

// TestLogsFollowAndNoFdLeak checks logs -f to the end of a container, and
// that an exec'd process holds no fd of lamina's (CVE-2024-21626).
func TestLogsFollowAndNoFdLeak(t *testing.T) {
	root := ctrStore(t)
	ok(t, root, "run", "-d", "--name", "ff", "--storage-driver", "overlay", "busybox", "sh", "-c",
		"for i in 1 2 3; do echo line $i; sleep 0.2; done; read x < /dev/null; sleep 1000")
	if got := ok(t, root, "exec", "ff", "ls", "/proc/self/fd"); got != "0\n1\n2\n3\n" {
		t.Fatalf("exec'd process fds: %q", got)
	}
	if got := ok(t, root, "exec", "ff", "sh", "-c", "ls /proc/1/fd | tr '\\n' ' '"); got != "0 1 2 " && got != "0 1 2 10 " {
		t.Fatalf("init's fds: %q", got)
	}
	go func() {
		eventually(t, "three lines", func() bool { return strings.Count(ok(t, root, "logs", "ff"), "line") == 3 })
		run(t, root, nil, "kill", "ff")
	}()
	if got := ok(t, root, "logs", "-f", "ff"); got != "line 1\nline 2\nline 3\n" {
		t.Fatalf("logs -f = %q", got)
	}
}

// TestConcurrentCreate checks that names stay unique when several CLIs
// create at once: the store-wide lock makes exactly one win.
func TestConcurrentCreate(t *testing.T) {
	root := ctrStore(t)
	const n = 4
	bin := testutil.Binary(t, "lamina")
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			cmd := exec.Command(bin, "--root", root, "create", "--name", "same", "--storage-driver", "overlay", "busybox", "true")
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			codes <- code
		}()
	}
	wins := 0
	for i := 0; i < n; i++ {
		if <-codes == 0 {
			wins++
		}
	}
	if wins != 1 {
		t.Fatalf("%d creates of the same name succeeded, want 1", wins)
	}
	if got := ok(t, root, "ps", "-a", "--format", "{{.Names}}"); got != "same\n" {
		t.Fatalf("ps -a = %q", got)
	}
}

// TestRunOutlivesItsCaller: `lamina run` is a stub its caller waits for
// and a detached process that is the CLI and the container's monitor
// (package detach). The container survives the stub; a signal the CLI
// does not handle ends the stub as it would have ended the CLI, and not
// the monitor; a detached run lets go of its caller's stdout.
func TestRunOutlivesItsCaller(t *testing.T) {
	root := ctrStore(t)
	bin := testutil.Binary(t, "lamina")
	status := func(name string) string {
		return ok(t, root, "ps", "-a", "--filter", "name="+name, "--format", "{{.Status}}")
	}
	for _, tc := range []struct {
		name string
		args []string // before the image
		sig  syscall.Signal
	}{
		// No sig-proxy with a terminal: SIGTERM is the CLI's death.
		{"tty-sigterm", []string{"-t"}, syscall.SIGTERM},
		{"sigkill", nil, syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"--root", root, "run", "--name", tc.name}, tc.args...),
				"busybox", "sh", "-c", "echo ready; sleep 1000")
			cmd := exec.Command(bin, args...)
			r := startReady(t, cmd)
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != tc.sig {
				t.Fatalf("lamina run ended %v (%v), want killed by %v", ws, err, tc.sig)
			}
			// The detached process lets go of the stdout it shared
			// with the stub, even when the stub was killed: the reader
			// gets EOF while the container runs on.
			done := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, r); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the monitor kept the caller's stdout")
			}
			// The container printed "ready" as it started: its monitor
			// records it running beside it, so the state may lag.
			eventually(t, "the container to be Up after its caller died", func() bool {
				st := status(tc.name)
				if strings.HasPrefix(st, "Exited") {
					t.Fatalf("container %s after its caller died, want Up", st)
				}
				return strings.HasPrefix(st, "Up")
			})
			ok(t, root, "rm", "-f", tc.name)
		})
	}
	t.Run("tty-ignored-sigint", func(t *testing.T) {
		// Started with SIGINT ignored (a background job's lot), the CLI
		// goes on ignoring it, and so does the stub.
		cmd := exec.Command("/bin/sh", "-c", `trap '' INT; exec "$0" "$@"`, bin, "--root", root, "run", "--rm", "-t",
			"busybox", "sh", "-c", "echo ready; sleep 1; echo done")
		r := startReady(t, cmd)
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		rest, _ := io.ReadAll(r)
		if err := cmd.Wait(); err != nil || strings.TrimSpace(string(rest)) != "done" {
			t.Fatalf("after an ignored SIGINT: %v, output %q", err, rest)
		}
	})
	t.Run("detached", func(t *testing.T) {
		// Output waits for EOF on stdout: the monitor must not keep it.
		out, err := exec.Command(bin, "--root", root, "run", "-d", "--name", "bg", "busybox", "sleep", "1000").Output()
		if err != nil || !id64.MatchString(strings.TrimSpace(string(out))) {
			t.Fatalf("run -d: %q, %v", out, err)
		}
		if st := status("bg"); !strings.HasPrefix(st, "Up") {
			t.Fatalf("container %s, want Up", st)
		}
	})
}

// startReady starts cmd with its stdout on a pipe of the test's own (Wait
// closes a StdoutPipe, which would hide who else holds it), and returns
// the pipe once cmd has printed "ready".
func startReady(t *testing.T, cmd *exec.Cmd) *bufio.Reader {
	t.Helper()
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdout.Close() })
	cmd.Stdout = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	r := bufio.NewReader(stdout)
	if line, err := r.ReadString('\n'); err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("first line %q, %v", line, err)
	}
	return r
}

// TestRunInterruptedBeforeStart: a run ended by a signal while it still
// creates its container (here it waits for the store's lock) leaves no
// process and no cgroup behind, though its monitor has spawned the
// container's init ahead and put it into the container's cgroups.
func TestRunInterruptedBeforeStart(t *testing.T) {
	root := ctrStore(t)
	db, err := os.OpenFile(filepath.Join(root, "meta.db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := syscall.Flock(int(db.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.Binary(t, "lamina"), "--root", root, "run", "--rm", "busybox", "true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The stub's child is the CLI and monitor; its child, the init.
	var initPid int
	var cgroups []string
	eventually(t, "the init spawned ahead in the container's cgroups", func() bool {
		for _, cli := range childPids(cmd.Process.Pid) {
			for _, p := range childPids(cli) {
				if dirs := laminaCgroups(p); len(dirs) > 0 {
					initPid, cgroups = p, dirs
					return true
				}
			}
		}
		return false
	})
	start := procStart(initPid)
	for _, d := range cgroups {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("init's cgroup: %v", err)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("lamina run ended %v (%v), want killed by SIGTERM", ws, err)
	}
	eventually(t, "init to die", func() bool { return gone(initPid, start) })
	for _, d := range cgroups {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cgroup %s left behind (%v)", d, err)
		}
	}
}

// childPids lists pid's children (of all its threads).
func childPids(pid int) []int {
	files, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	var out []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// laminaCgroups lists the directories of pid's cgroups that are a
// container's (…/lamina/ID).
func laminaCgroups(pid int) []string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "/lamina/") {
			continue
		}
		if parts[0] == "0" {
			out = append(out, filepath.Join("/sys/fs/cgroup", parts[2]))
		} else {
			out = append(out, filepath.Join("/sys/fs/cgroup", strings.SplitN(parts[1], ",", 2)[0], parts[2]))
		}
	}
	return out
}

// TestRunRmThenRmi: once `run --rm` returns, its container is gone for
// every command: its name is free and its image can be removed at once,
// though its files and its hold on the image are let go of after the
// caller hears the exit status. Nothing is left behind.
func TestRunRmThenRmi(t *testing.T) {
	root := ctrStore(t)
	for i := 0; i < 2; i++ {
		if out := ok(t, root, "run", "--rm", "--name", "once", "busybox", "echo", "hi"); out != "hi\n" {
			t.Fatalf("run %d: %q", i, out)
		}
		if left := ok(t, root, "ps", "-a", "-q"); left != "" {
			t.Fatalf("ps -a after run --rm: %q", left)
		}
	}
	ok(t, root, "rmi", "busybox")
	eventually(t, "the removed containers' files and refs to go", func() bool {
		ents, _ := os.ReadDir(filepath.Join(root, "containers"))
		for _, e := range ents {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".seccomp") && e.Name() != ".init" {
				return false
			}
		}
		// The image's init layer went with it.
		if layers, _ := os.ReadDir(filepath.Join(root, "containers", ".init")); len(layers) != 0 {
			return false
		}
		// No orphan either: the refs were dropped, not left to prune.
		return strings.HasSuffix(ok(t, root, "system", "fsck"), ": clean\n")
	})
}

// TestStopWithFileHeldOutside: a process outside the container that holds
// one of its files open (a debugger, lsof, perf reading a binary through
// /proc/PID/root) keeps the kernel's FUSE connection alive after the
// monitor unmounts the union; the monitor ends it rather than wait for
// ever, and the container is recorded as exited.
func TestStopWithFileHeldOutside(t *testing.T) {
	root := ctrStore(t)
	id := strings.TrimSpace(ok(t, root, "run", "-d", "--storage-driver", "laminafs", "busybox", "sleep", "1000"))
	pid, err := strconv.Atoi(strings.TrimSpace(ok(t, root, "inspect", "-f", "{{.State.Pid}}", id)))
	if err != nil {
		t.Fatal(err)
	}
	held, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "root", "bin", "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	ok(t, root, "kill", id)
	done := make(chan string, 1)
	go func() {
		out, _, _ := run(t, root, nil, "wait", id)
		done <- out
	}()
	select {
	case out := <-done:
		if out != "137\n" {
			t.Errorf("wait: %q, want 137", out)
		}
	case <-time.After(30 * time.Second):
		held.Close()
		t.Fatal("the container's monitor did not end while a file of its union was held open")
	}
	if st := ok(t, root, "ps", "-a", "--filter", "id="+id, "--format", "{{.Status}}"); !strings.HasPrefix(st, "Exited (137)") {
		t.Errorf("status %q, want Exited (137)", st)
	}
}

// TestHostFiles: a run's container sees the host files its CLI wrote
// beside its record (runtime.WriteHostFiles); a container started again,
// by a monitor that did not make it, gets them written again, even when
// they are gone from its directory.
func TestHostFiles(t *testing.T) {
	root := ctrStore(t)
	const show = "cat /etc/hostname; grep -c localhost /etc/hosts; test -f /etc/resolv.conf && echo resolv"
	out := ok(t, root, "run", "--name", "hf", "--hostname", "first", "busybox", "sh", "-c", show)
	if out != "first\n2\nresolv\n" {
		t.Fatalf("run: %q", out)
	}
	id := strings.TrimSpace(ok(t, root, "inspect", "-f", "{{.Id}}", "hf"))
	for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
		if err := os.Remove(filepath.Join(root, "containers", id, f)); err != nil {
			t.Fatal(err)
		}
	}
	if out := ok(t, root, "start", "-a", "hf"); out != "first\n2\nresolv\n" {
		t.Fatalf("start after the host files were removed: %q", out)
	}
}

// A run's detached process raises its timer slack (detach.RunTimerSlack);
// the container's command gets its caller's back, and a caller's slack
// above the raise is left as it is.
func TestTimerSlack(t *testing.T) {
	root := ctrStore(t)
	bin := testutil.Binary(t, "lamina")
	const show = "cat /proc/self/timerslack_ns"
	// sh sets the slack lamina starts with, then becomes lamina.
	withSlack := func(ns int64, args ...string) string {
		t.Helper()
		script := fmt.Sprintf(`echo %d > /proc/self/timerslack_ns && exec "$@"`, ns)
		out, err := exec.Command("sh", append([]string{"-c", script, "sh", bin, "--root", root}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("lamina %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	raised := int64(detach.RunTimerSlack)
	for _, caller := range []int64{123456, raised + 1000} {
		if got := withSlack(caller, "run", "--rm", "busybox", "sh", "-c", show); got != strconv.FormatInt(caller, 10) {
			t.Errorf("caller's slack %d: the command's is %s", caller, got)
		}
		id := withSlack(caller, "run", "-d", "busybox", "sleep", "30")
		b, err := os.ReadFile(filepath.Join(root, "containers", id, "state.json"))
		if err != nil {
			t.Fatal(err)
		}
		var st struct{ MonitorPid int }
		if err := json.Unmarshal(b, &st); err != nil || st.MonitorPid == 0 {
			t.Fatalf("state.json: %s, %v", b, err)
		}
		mon, err := os.ReadFile(fmt.Sprintf("/proc/%d/timerslack_ns", st.MonitorPid))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.TrimSpace(string(mon)), strconv.FormatInt(max(caller, raised), 10); got != want {
			t.Errorf("caller's slack %d: the monitor's is %s, want %s", caller, got, want)
		}
		if got := strings.TrimSpace(ok(t, root, "exec", id, "sh", "-c", show)); got == strconv.FormatInt(raised, 10) && caller < raised {
			t.Errorf("caller's slack %d: an exec'd process has the monitor's raised slack", caller)
		}
		ok(t, root, "rm", "-f", id)
	}
}
