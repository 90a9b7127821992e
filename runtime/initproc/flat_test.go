package initproc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// flatRecord is one record of a flat bootstrap, read back.
type flatRecord struct {
	tag  uint32
	data []byte
}

// readFlat splits b into its records, as init.c's parse does.
func readFlat(t *testing.T, b []byte) []flatRecord {
	t.Helper()
	if len(b) < 8 || string(b[:4]) != flatMagic || binary.NativeEndian.Uint32(b[4:]) != FlatProtocol {
		t.Fatalf("bad header % x", b[:min(len(b), 8)])
	}
	var out []flatRecord
	for p := b[8:]; len(p) > 0; {
		if len(p) < 8 {
			t.Fatalf("truncated record header")
		}
		tag, n := binary.NativeEndian.Uint32(p), binary.NativeEndian.Uint32(p[4:])
		if int(n) > len(p)-8 {
			t.Fatalf("record %d of %d bytes overruns", tag, n)
		}
		out = append(out, flatRecord{tag, p[8 : 8+n]})
		p = p[8+n:]
	}
	return out
}

// cstrs splits NUL-terminated strings.
func cstrs(b []byte) []string {
	s := strings.Split(string(b), "\x00")
	return s[:len(s)-1]
}

func TestEncodeFlat(t *testing.T) {
	spec := &specs.Spec{
		Root:     &specs.Root{Path: "/r", Readonly: true},
		Hostname: "box",
		Process: &specs.Process{
			Terminal: true, NoNewPrivileges: true,
			Args: []string{"sh", "-c", "x"}, Env: []string{"A=1"}, Cwd: "/w",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: []string{"CAP_CHOWN", "CAP_KILL"}, Effective: []string{"CAP_KILL"},
				Ambient: []string{"CAP_NET_RAW"},
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 100, Hard: 200}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec"}},
			{Destination: "/data", Type: "bind", Source: "/host", Options: []string{"rbind", "ro", "rprivate"}},
			{Destination: "/t", Type: "tmpfs", Source: "tmpfs", Options: []string{"nodev", "size=64k", "mode=755"}},
		},
		Annotations: map[string]string{UserAnnotation: "nobody:users"},
		Linux: &specs.Linux{
			Namespaces:    []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.UTSNamespace, Path: "/proc/1/ns/uts"}},
			MaskedPaths:   []string{"/proc/kcore"},
			ReadonlyPaths: []string{"/proc/sys"},
		},
	}
	db := &UserDB{Passwd: []byte("root:x:0:0::/root:/bin/sh\n")}
	b, err := EncodeFlat(spec, make([]byte, 16), db)
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32][][]byte{}
	for _, r := range readFlat(t, b) {
		got[r.tag] = append(got[r.tag], r.data)
	}
	one := func(tag uint32) []byte {
		t.Helper()
		if len(got[tag]) != 1 {
			t.Fatalf("%d records of tag %d, want 1", len(got[tag]), tag)
		}
		return got[tag][0]
	}
	// A namespace joined by path is not a new one.
	wantFlags := uint32(flagNewNS | flagNetNS | flagTerminal | flagRootRO | flagNoNewPrivs | flagUserDB)
	if f := binary.NativeEndian.Uint32(one(tagFlags)); f != wantFlags {
		t.Errorf("flags %#x, want %#x", f, wantFlags)
	}
	for tag, want := range map[uint32]string{tagRootfs: "/r", tagHostname: "box", tagCwd: "/w", tagUser: "nobody:users"} {
		if s := cstrs(one(tag)); len(s) != 1 || s[0] != want {
			t.Errorf("tag %d: %q, want %q", tag, s, want)
		}
	}
	var args, env []string
	for _, a := range got[tagArg] {
		args = append(args, cstrs(a)...)
	}
	for _, e := range got[tagEnv] {
		env = append(env, cstrs(e)...)
	}
	if !reflect.DeepEqual(args, spec.Process.Args) || !reflect.DeepEqual(env, spec.Process.Env) {
		t.Errorf("args %q env %q", args, env)
	}
	type mount struct {
		kind  uint32
		flags uint64
		props []uint64
		strs  []string
	}
	wantMounts := []mount{
		{mountFS, unix.MS_NOSUID | unix.MS_NOEXEC, nil, []string{"/proc", "proc", "proc", ""}},
		{mountBind, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, []uint64{unix.MS_PRIVATE | unix.MS_REC}, []string{"/data", "/host", "bind", ""}},
		{mountFS, unix.MS_NODEV, nil, []string{"/t", "tmpfs", "tmpfs", "size=64k,mode=755"}},
	}
	if len(got[tagMount]) != len(wantMounts) {
		t.Fatalf("%d mounts, want %d", len(got[tagMount]), len(wantMounts))
	}
	for i, r := range got[tagMount] {
		m := mount{kind: binary.NativeEndian.Uint32(r), flags: binary.NativeEndian.Uint64(r[8:])}
		n := int(binary.NativeEndian.Uint32(r[4:]))
		for j := 0; j < n; j++ {
			m.props = append(m.props, binary.NativeEndian.Uint64(r[16+8*j:]))
		}
		m.strs = cstrs(r[16+8*n:])
		if !reflect.DeepEqual(m, wantMounts[i]) {
			t.Errorf("mount %d: %+v, want %+v", i, m, wantMounts[i])
		}
	}
	if rl := one(tagRlimit); binary.NativeEndian.Uint32(rl) != unix.RLIMIT_NOFILE ||
		binary.NativeEndian.Uint64(rl[8:]) != 100 || binary.NativeEndian.Uint64(rl[16:]) != 200 {
		t.Errorf("rlimit % x", rl)
	}
	caps := one(tagCaps)
	wantCaps := []uint64{1<<unix.CAP_CHOWN | 1<<unix.CAP_KILL, 1 << unix.CAP_KILL, 0, 0, 1 << unix.CAP_NET_RAW}
	for i, w := range wantCaps {
		if c := binary.NativeEndian.Uint64(caps[8*i:]); c != w {
			t.Errorf("capability set %d: %#x, want %#x", i, c, w)
		}
	}
	if !bytes.Equal(one(tagPasswd), db.Passwd) || len(got[tagGroup]) != 0 {
		t.Errorf("user database: passwd %q, %d group records (a missing file has none)", one(tagPasswd), len(got[tagGroup]))
	}
	if len(one(tagFilter)) != 16 {
		t.Errorf("filter of %d bytes", len(one(tagFilter)))
	}
	if s := cstrs(one(tagMasked)); s[0] != "/proc/kcore" {
		t.Errorf("masked %q", s)
	}
	if s := cstrs(one(tagReadonly)); s[0] != "/proc/sys" {
		t.Errorf("read-only %q", s)
	}
}

func TestEncodeFlatRejects(t *testing.T) {
	base := func() *specs.Spec {
		return &specs.Spec{Root: &specs.Root{Path: "/r"}, Process: &specs.Process{Args: []string{"true"}}}
	}
	tests := []struct {
		name   string
		tweak  func(*specs.Spec)
		filter []byte
		want   string
	}{
		{"no process", func(s *specs.Spec) { s.Process = nil }, nil, "without process"},
		{"unknown rlimit", func(s *specs.Spec) { s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}} }, nil, "unknown rlimit"},
		{"unknown capability", func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_BOGUS"}}
		}, nil, "unknown capability"},
		{"filter not BPF", nil, []byte{1, 2, 3}, "no BPF program"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			if tt.tweak != nil {
				tt.tweak(s)
			}
			if _, err := EncodeFlat(s, tt.filter, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one with %q", err, tt.want)
			}
		})
	}
}

// EncodeAhead: the look-ahead's header, its root and a record per path,
// at most MaxAheadPaths of them.
func TestEncodeAhead(t *testing.T) {
	paths := make([]string, MaxAheadPaths+5)
	for i := range paths {
		paths[i] = fmt.Sprintf("/p%d", i)
	}
	b := EncodeAhead("/root", paths)
	if string(b[:4]) != "LMNA" || binary.NativeEndian.Uint32(b[4:8]) != FlatProtocol {
		t.Fatalf("header %q", b[:8])
	}
	var got []string
	for p := b[8:]; len(p) > 0; {
		tag, n := binary.NativeEndian.Uint32(p), binary.NativeEndian.Uint32(p[4:])
		s := string(p[8 : 8+n-1]) // without the NUL
		if p[8+n-1] != 0 {
			t.Fatalf("record %d: %q is not NUL-terminated", tag, p[8:8+n])
		}
		switch {
		case tag == tagRootfs && len(got) == 0 && s == "/root":
			got = append(got, s)
		case tag == tagAheadPath && len(got) > 0:
			got = append(got, s)
		default:
			t.Fatalf("unexpected record %d %q after %q", tag, s, got)
		}
		p = p[8+n:]
	}
	if want := append([]string{"/root"}, paths[:MaxAheadPaths]...); !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}
