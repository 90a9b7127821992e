package initproc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The flat bootstrap is what the monitor sends the C init, cmd/lamina-init
// (the Go init here gets the JSON SyncMsg). It carries what Init takes
// from a spec, already digested where Go does it better than C: mount
// options as flags, capability and rlimit names as numbers, the cgroup
// hierarchies to mount. Layout: "LMNI", a u32 FlatProtocol, then records
// of a u32 tag, a u32 length and that many bytes; numbers are native
// endian, strings end in a NUL. init.c parses it; keep the two in step.
const (
	flatMagic = "LMNI"
	// FlatProtocol numbers this layout; a change to it must change it.
	FlatProtocol = 3
)

// Record tags (init.c's T_*).
const (
	tagFlags = iota + 1
	tagRootfs
	tagHostname
	tagMount
	tagCgroup1
	tagMasked
	tagReadonly
	tagRlimit
	tagArg
	tagEnv
	tagCwd
	tagUser
	tagPasswd
	tagGroup
	tagCaps
	tagFilter
	tagAheadPath // the look-ahead's (EncodeAhead)
)

// Bits of the flags record (init.c's F_*).
const (
	flagNewNS = 1 << iota
	flagNewCgroup
	flagNetNS
	flagUTSNS
	flagTerminal
	flagRootRO
	flagNoNewPrivs
	flagCgroup2
	flagUserDB
	flagEarlyPrivileges
)

// Mount kinds (init.c's M_*).
const (
	mountFS = iota
	mountBind
	mountCgroup
)

type flatWriter struct{ b []byte }

func (w *flatWriter) record(tag uint32, parts ...[]byte) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	w.b = binary.NativeEndian.AppendUint32(w.b, tag)
	w.b = binary.NativeEndian.AppendUint32(w.b, uint32(n))
	for _, p := range parts {
		w.b = append(w.b, p...)
	}
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func u32s(v ...uint32) []byte {
	var b []byte
	for _, x := range v {
		b = binary.NativeEndian.AppendUint32(b, x)
	}
	return b
}

func u64s(v ...uint64) []byte {
	var b []byte
	for _, x := range v {
		b = binary.NativeEndian.AppendUint64(b, x)
	}
	return b
}

// EncodeFlat encodes the bootstrap for the C init: spec (its seccomp
// profile already compiled to filter, nil for none) and db (nil: init
// reads the image's /etc/passwd and /etc/group itself).
func EncodeFlat(spec *specs.Spec, filter []byte, db *UserDB) ([]byte, error) {
	if spec.Process == nil || spec.Root == nil {
		return nil, errors.New("init: spec without process or root")
	}
	if len(filter) > 0 {
		if err := CheckFilter(filter); err != nil {
			return nil, err
		}
	}
	p := spec.Process
	var flags uint32
	for _, x := range []struct {
		ns  specs.LinuxNamespaceType
		bit uint32
	}{
		{specs.MountNamespace, flagNewNS}, {specs.CgroupNamespace, flagNewCgroup},
		{specs.NetworkNamespace, flagNetNS}, {specs.UTSNamespace, flagUTSNS},
	} {
		if hasNamespace(spec, x.ns) {
			flags |= x.bit
		}
	}
	if p.Terminal {
		flags |= flagTerminal
	}
	if spec.Root.Readonly {
		flags |= flagRootRO
	}
	if p.NoNewPrivileges {
		flags |= flagNoNewPrivs
	}
	if db != nil {
		flags |= flagUserDB
	}
	// With docker's default profile the C init's executor thread loads
	// the filter and drops its bounding set while the main thread builds
	// the root filesystem, then waits for the command and execs it: the
	// profile allows every system call it makes meanwhile (futex, and
	// what exec_process does). A profile from a file might refuse them,
	// and with no_new_privs the filter loads last, as runc loads it; both
	// keep the order of the Go init.
	if len(filter) > 0 && !p.NoNewPrivileges && spec.Annotations[SeccompDefaultAnnotation] == "true" {
		flags |= flagEarlyPrivileges
	}
	w := &flatWriter{b: append([]byte(flatMagic), u32s(FlatProtocol)...)}
	cgroups := false
	for _, m := range spec.Mounts {
		cgroups = cgroups || m.Type == "cgroup"
	}
	if cgroups && CgroupV2() {
		flags |= flagCgroup2
	}
	w.record(tagFlags, u32s(flags))
	w.record(tagRootfs, cstr(spec.Root.Path))
	w.record(tagHostname, cstr(spec.Hostname))
	for _, m := range spec.Mounts {
		mflags, prop, data := parseMountOptions(m.Options)
		kind := uint32(mountFS)
		switch {
		case m.Type == "cgroup":
			kind = mountCgroup
		case m.Type == "bind" || mflags&unix.MS_BIND != 0:
			kind = mountBind
		}
		props := make([]uint64, len(prop))
		for i, x := range prop {
			props[i] = uint64(x)
		}
		w.record(tagMount, u32s(kind, uint32(len(prop))), u64s(uint64(mflags)), u64s(props...),
			cstr(m.Destination), cstr(m.Source), cstr(m.Type), cstr(data))
	}
	if cgroups && flags&flagCgroup2 == 0 {
		hs, err := cgroupHierarchies()
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			w.record(tagCgroup1, cstr(h[0]), cstr(h[1]))
		}
	}
	if spec.Linux != nil {
		for _, x := range spec.Linux.MaskedPaths {
			w.record(tagMasked, cstr(x))
		}
		for _, x := range spec.Linux.ReadonlyPaths {
			w.record(tagReadonly, cstr(x))
		}
	}
	for _, rl := range p.Rlimits {
		t, ok := rlimitTypes[rl.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %s", rl.Type)
		}
		w.record(tagRlimit, u32s(uint32(t), 0), u64s(rl.Soft, rl.Hard))
	}
	for _, a := range p.Args {
		w.record(tagArg, cstr(a))
	}
	for _, e := range p.Env {
		w.record(tagEnv, cstr(e))
	}
	w.record(tagCwd, cstr(p.Cwd))
	w.record(tagUser, cstr(spec.Annotations[UserAnnotation]))
	if db != nil {
		if db.Passwd != nil {
			w.record(tagPasswd, db.Passwd)
		}
		if db.Group != nil {
			w.record(tagGroup, db.Group)
		}
	}
	caps, err := capMasks(p.Capabilities)
	if err != nil {
		return nil, err
	}
	w.record(tagCaps, u64s(caps[:]...))
	if len(filter) > 0 {
		w.record(tagFilter, filter)
	}
	return w.b, nil
}

// capMasks is the bounding, effective, permitted, inheritable and ambient
// sets as bit masks.
func capMasks(lc *specs.LinuxCapabilities) ([5]uint64, error) {
	var out [5]uint64
	if lc == nil {
		return out, nil
	}
	for i, names := range [][]string{lc.Bounding, lc.Effective, lc.Permitted, lc.Inheritable, lc.Ambient} {
		caps, err := capsFromNames(names)
		if err != nil {
			return out, err
		}
		for _, c := range caps {
			if c >= 64 {
				return out, fmt.Errorf("capability %v is beyond what init can set", c)
			}
			out[i] |= 1 << uint(c)
		}
	}
	return out, nil
}

// cgroupHierarchies lists the v1 hierarchies a container's cgroup mount
// shows, as (directory name, mount data) pairs, from this process's
// /proc/self/cgroup: the hierarchies are the host's, the same for every
// process (see mountCgroups).
func cgroupHierarchies() ([][2]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	var out [][2]string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || parts[0] == "0" || parts[1] == "" {
			continue // the empty unified hierarchy of a hybrid host
		}
		name := strings.TrimPrefix(parts[1], "name=")
		data := parts[1]
		if strings.HasPrefix(parts[1], "name=") {
			data = "none," + parts[1]
		}
		out = append(out, [2]string{name, data})
	}
	return out, nil
}

// SendFlat sends the flat bootstrap b with fds (stdio, or none).
func SendFlat(f *os.File, b []byte, fds ...int) error {
	if err := sendmsg(f, b, fds); err != nil {
		return fmt.Errorf("sync send bootstrap: %w", err)
	}
	return nil
}

// aheadMagic starts the look-ahead (EncodeAhead).
const aheadMagic = "LMNA"

// MaxAheadPaths is the most paths a look-ahead carries (init.c's
// AHEAD_MAX); the rest are left out.
const MaxAheadPaths = 24

// EncodeAhead encodes the look-ahead: a packet the monitor may send the C
// init ahead of the bootstrap, once the root filesystem is mounted at
// rootfs, so that init looks paths up there (the setup's mount points,
// the command's candidates) while the monitor makes the rest of what the
// bootstrap needs. On laminafs each first lookup is a FUSE round trip,
// which then comes before the bootstrap rather than after it. Layout: as
// the bootstrap's, with aheadMagic, a tagRootfs record and a tagAheadPath
// record per path. Init ignores one it cannot read: the bootstrap says
// everything it must know.
func EncodeAhead(rootfs string, paths []string) []byte {
	w := &flatWriter{b: append([]byte(aheadMagic), u32s(FlatProtocol)...)}
	w.record(tagRootfs, cstr(rootfs))
	for i, p := range paths {
		if i == MaxAheadPaths {
			break
		}
		w.record(tagAheadPath, cstr(p))
	}
	return w.b
}
