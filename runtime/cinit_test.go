package runtime

import (
	"encoding/binary"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
	"github.com/lamina-project/lamina/runtime/initproc"
)

// TestCInitRejectsBadBootstrap sends the C init bootstraps it must refuse
// before it touches anything: each is an error message to the monitor and
// exit 125, never a crash.
func TestCInitRejectsBadBootstrap(t *testing.T) {
	header := func(protocol uint32) []byte { return flatHeader("LMNI", protocol) }
	record := flatRecord
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"the Go init's", []byte(`{"type":"bootstrap","protocol":1}`), "Go init's bootstrap"},
		{"not a bootstrap", []byte("hello, world"), "expected bootstrap"},
		{"other protocol", header(99), "protocol 99"},
		{"truncated header", append(header(initproc.FlatProtocol), 1, 0, 0), "truncated record"},
		{"record overruns", record(header(initproc.FlatProtocol), 1, 100, "ab"), "truncated record"},
		{"unterminated string", record(header(initproc.FlatProtocol), 2, 3, "abc"), "unterminated string"},
		{"short flags", record(header(initproc.FlatProtocol), 1, 2, "ab"), "record 1 is short"},
		{"mount with too many propagations", record(header(initproc.FlatProtocol), 4, 16, "\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00"), "record 4 is short"},
		{"unknown record", record(header(initproc.FlatProtocol), 99, 0, ""), "unknown record 99"},
		{"no root filesystem", header(initproc.FlatProtocol), "no root filesystem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cinitFails(t, tt.want, tt.msg)
		})
	}
}

// flatHeader and flatRecord write the flat layout's parts by hand, to
// make packets initproc would not.
func flatHeader(magic string, protocol uint32) []byte {
	return binary.NativeEndian.AppendUint32([]byte(magic), protocol)
}

func flatRecord(b []byte, tag, n uint32, data string) []byte {
	b = binary.NativeEndian.AppendUint32(b, tag)
	b = binary.NativeEndian.AppendUint32(b, n)
	return append(b, data...)
}

// cinitFails sends the C init packets and checks that it answers with an
// error holding want and exits 125.
func cinitFails(t *testing.T, want string, packets ...[]byte) {
	t.Helper()
	cmd, parent := startCInit(t)
	for _, p := range packets {
		if err := initproc.SendFlat(parent, p); err != nil {
			t.Fatal(err)
		}
	}
	m, _, rerr := initproc.RecvSync(parent)
	werr := cmd.Wait()
	if rerr != nil || m.Type != "error" || m.Code != 125 || !strings.Contains(m.Error, want) {
		t.Fatalf("got %+v (%v), want an error with %q and code 125", m, rerr, want)
	}
	if cmd.ProcessState.ExitCode() != 125 {
		t.Fatalf("exit %v, want 125", werr)
	}
}

// startCInit starts lamina-init, outside any namespace, with the parent's
// end of its sync socket, which the test's end closes.
func startCInit(t *testing.T) (*exec.Cmd, *os.File) {
	t.Helper()
	parent, child, err := initproc.NewSyncPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { parent.Close() })
	cmd := exec.Command(testutil.Binary(t, "lamina-init"))
	cmd.ExtraFiles = []*os.File{child}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	return cmd, parent
}

// TestCInitSkipsLookAhead: a look-ahead (initproc.EncodeAhead) before the
// bootstrap, whatever it holds, leaves init waiting for the bootstrap,
// which it then reads as it would without one: a bad bootstrap still gets
// its own error and 125.
func TestCInitSkipsLookAhead(t *testing.T) {
	header := func(protocol uint32) []byte { return flatHeader("LMNA", protocol) }
	record := flatRecord
	good := initproc.EncodeAhead(t.TempDir(), []string{"/etc/passwd", "/bin/sh", "/proc"})
	for _, tt := range []struct {
		name  string
		ahead [][]byte
	}{
		{"good", [][]byte{good}},
		{"two", [][]byte{good, good}},
		{"no such root", [][]byte{initproc.EncodeAhead("/nonexistent/root", []string{"/bin/sh"})}},
		{"no paths", [][]byte{initproc.EncodeAhead(t.TempDir(), nil)}},
		{"other protocol", [][]byte{header(99)}},
		{"header only", [][]byte{[]byte("LMNA")}},
		{"record overruns", [][]byte{record(header(initproc.FlatProtocol), 2, 100, "/\x00")}},
		{"unterminated string", [][]byte{record(header(initproc.FlatProtocol), 2, 3, "abc")}},
		{"many paths", [][]byte{initproc.EncodeAhead(t.TempDir(), make([]string, 100))}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cinitFails(t, "no root filesystem", append(tt.ahead, flatHeader("LMNI", initproc.FlatProtocol))...)
		})
	}
}

// TestCInitEarlyPrivilegesFailure: with docker's default profile the C
// init's executor thread loads the filter while the main thread builds the
// root filesystem; a filter the kernel refuses fails the container with
// init's own message and 125, whether it comes before "ready" (bootstrap)
// or after (start).
func TestCInitEarlyPrivilegesFailure(t *testing.T) {
	testutil.RequirePrivileged(t)
	spec, err := NewSpec("0123456789abcdef", sharedRootfs(t), Options{Args: []string{"true"}, Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Annotations[initproc.SeccompDefaultAnnotation] != "true" {
		t.Fatal("NewSpec did not mark docker's default profile")
	}
	for i := 0; i < 5; i++ {
		p, err := spawnInitAhead(cInit(t).open)
		if err != nil {
			t.Fatal(err)
		}
		devnull, _ := os.Open(os.DevNull)
		if !p.adopt(spec, Stdio{Stdin: devnull, Stdout: devnull, Stderr: devnull}) {
			p.Kill()
			_, _ = p.Wait()
			t.Fatal("not adopted")
		}
		// One jump out of the program: a whole BPF instruction the kernel
		// refuses to load.
		bad := []byte{0x05, 0, 0, 0, 5, 0, 0, 0}
		err = p.bootstrap(spec, bad, nil, nil) // kills and reaps init on failure
		devnull.Close()
		code := 125
		if err == nil {
			err = p.Start()
			code, _ = p.Wait()
		}
		if err == nil || !strings.Contains(err.Error(), "seccomp: load filter") || code != 125 {
			t.Fatalf("run %d: %v, exit %d; want init's seccomp error and 125", i, err, code)
		}
	}
}
