// Package runtime runs a container's process: the monitor that owns a
// running container, the init that builds the container from the inside
// (namespaces, mounts, pivot_root, /dev, cgroups, seccomp, capabilities,
// user) and execs the user's command, exec into a running container, and the
// container's state and logs on disk.
//
// A container is run by an OCI runtime spec (specs.Spec): the same document
// runc and crun take, so the order of operations and the security lessons
// of runc apply one to one, and a spec can be compared against theirs. Its
// record keeps the docker-run options the spec is built from (Options), as
// docker keeps its config: the spec is built at each start. What the spec
// has no field for (the user as a name to resolve in the image, the
// storage driver) lives beside it in Container.
package runtime

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/lamina-project/lamina/runtime/initproc"
	seccompprofile "github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Options are the docker-run flags that shape a container's spec. They are
// part of a container's record (Container.Run): a field renamed, or given
// another meaning, needs the records that have it converted.
type Options struct {
	Args       []string // command and arguments (entrypoint already applied)
	Env        []string // KEY=VALUE, image's then the user's
	Cwd        string   // working directory inside the container; "" = /
	User       string   // USER[:GROUP], names or numbers, resolved in the image at start
	Hostname   string   // "" = the first 12 hex digits of the ID
	Terminal   bool     // -t
	ReadOnly   bool     // --read-only
	Privileged bool     // --privileged
	CapAdd     []string // --cap-add (ALL allowed)
	CapDrop    []string // --cap-drop (ALL allowed)
	// NoNewPrivileges is --security-opt no-new-privileges.
	NoNewPrivileges bool
	// Seccomp is "" for docker's default profile, "unconfined", or the
	// JSON text of a docker seccomp profile.
	Seccomp   string
	Memory    int64   // bytes; 0 = unlimited
	CPUs      float64 // 0 = unlimited
	PidsLimit int64   // 0 = unlimited; -1 = unlimited
	// Network is "none" (a new namespace with only loopback, the default
	// until bridge networking exists) or "host".
	Network string
	Binds   []string // HOST:CTR[:ro|rw]
	Tmpfs   []string // CTR[:opts]
	Ulimits []specs.POSIXRlimit
}

// UserAnnotation carries the -u value, resolved against the image's
// /etc/passwd and /etc/group by init once the root filesystem is in place
// (the spec itself only has numbers).
const UserAnnotation = initproc.UserAnnotation

// DefaultCaps is docker's default capability set.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// maskedPaths and readonlyPaths are docker's: kernel interfaces that leak
// host information or let a container change the host.
var maskedPaths = []string{
	"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
	"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
	"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// DefaultPath is docker's PATH when the image sets none.
const DefaultPath = initproc.DefaultPath

// NewSpec builds the spec for a container whose root filesystem will be at
// rootfs, with docker's defaults changed by o, and checks what o names on
// the host (bind mounts' sources): what a create does.
func NewSpec(id, rootfs string, o Options) (*specs.Spec, error) {
	return newSpec(id, rootfs, o, true)
}

// newSpec is NewSpec; a start or an exec (RuntimeSpec) does not look at the
// host again (checkHost false): a bind source gone since the create fails
// the start in init's mount, and is nothing to an exec, as with docker.
func newSpec(id, rootfs string, o Options, checkHost bool) (*specs.Spec, error) {
	if len(o.Args) == 0 {
		return nil, fmt.Errorf("no command specified")
	}
	hostname := o.Hostname
	if hostname == "" {
		hostname = id
		if len(hostname) > 12 {
			hostname = hostname[:12]
		}
	}
	cwd := o.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return nil, fmt.Errorf("the working directory %q is invalid, it needs to be an absolute path", cwd)
	}
	caps, err := capSet(o)
	if err != nil {
		return nil, err
	}
	env := withDefaultEnv(o.Env, hostname, o.Terminal)
	for _, rl := range o.Ulimits {
		if rl.Type == "RLIMIT_NPROC" {
			// Inside a new PID namespace setrlimit(RLIMIT_NPROC) fails
			// with EINVAL on this kernel, even to lower it; use
			// --pids-limit, which the pids cgroup enforces.
			return nil, fmt.Errorf("--ulimit nproc is not supported in a PID namespace; use --pids-limit")
		}
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: hostname,
		Root:     &specs.Root{Path: rootfs, Readonly: o.ReadOnly},
		Process: &specs.Process{
			Terminal:        o.Terminal,
			Args:            o.Args,
			Env:             env,
			Cwd:             cwd,
			Capabilities:    caps,
			NoNewPrivileges: o.NoNewPrivileges,
			Rlimits:         o.Ulimits,
		},
		Annotations: map[string]string{},
		Mounts:      defaultMounts(o.Privileged),
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace}, {Type: specs.PIDNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.CgroupNamespace},
			},
			Resources: resources(o),
		},
	}
	if o.User != "" {
		s.Annotations[UserAnnotation] = o.User
	}
	switch o.Network {
	case "", "none":
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	case "host":
		// Docker shares the host's name with the host's network.
		if o.Hostname == "" {
			h, err := os.Hostname()
			if err == nil {
				s.Hostname = h
			}
		}
	default:
		return nil, fmt.Errorf("network %q is not supported (none, host)", o.Network)
	}
	if !o.Privileged {
		s.Linux.MaskedPaths = maskedPaths
		s.Linux.ReadonlyPaths = readonlyPaths
	}
	for _, b := range o.Binds {
		parse := parseBindSyntax
		if checkHost {
			parse = parseBind
		}
		m, err := parse(b)
		if err != nil {
			return nil, err
		}
		s.Mounts = append(s.Mounts, m)
	}
	for _, t := range o.Tmpfs {
		m, err := parseTmpfs(t)
		if err != nil {
			return nil, err
		}
		s.Mounts = append(s.Mounts, m)
	}
	switch {
	case o.Privileged || o.Seccomp == "unconfined":
	case o.Seccomp == "":
		if s.Linux.Seccomp, err = seccompprofile.GetDefaultProfile(s); err != nil {
			return nil, fmt.Errorf("seccomp default profile: %w", err)
		}
		s.Annotations[initproc.SeccompDefaultAnnotation] = "true"
	default:
		if s.Linux.Seccomp, err = seccompprofile.LoadProfile(o.Seccomp, s); err != nil {
			return nil, fmt.Errorf("seccomp profile: %w", err)
		}
	}
	return s, nil
}

func withDefaultEnv(env []string, hostname string, tty bool) []string {
	has := func(k string) bool {
		for _, e := range env {
			if strings.HasPrefix(e, k+"=") {
				return true
			}
		}
		return false
	}
	out := append([]string(nil), env...)
	if !has("PATH") {
		out = append([]string{"PATH=" + DefaultPath}, out...)
	}
	if !has("HOSTNAME") {
		out = append(out, "HOSTNAME="+hostname)
	}
	if tty && !has("TERM") {
		out = append(out, "TERM=xterm")
	}
	return out
}

func capSet(o Options) (*specs.LinuxCapabilities, error) {
	// What this process may pass on is read from /proc only when asked
	// for (a name to check, --privileged): not for docker's default set.
	var all []string
	if o.Privileged || len(o.CapAdd) > 0 || len(o.CapDrop) > 0 {
		all = initproc.AllCapNames()
	}
	norm := func(c string) (string, error) {
		c = strings.ToUpper(c)
		if c == "ALL" {
			return c, nil
		}
		if !strings.HasPrefix(c, "CAP_") {
			c = "CAP_" + c
		}
		for _, a := range all {
			if a == c {
				return c, nil
			}
		}
		return "", fmt.Errorf("unknown capability: %q", c)
	}
	set := map[string]bool{}
	if o.Privileged {
		for _, c := range all {
			set[c] = true
		}
	} else {
		for _, c := range DefaultCaps {
			set[c] = true
		}
	}
	// Docker applies drops before adds, so --cap-drop ALL --cap-add X
	// leaves exactly X.
	for _, c := range o.CapDrop {
		n, err := norm(c)
		if err != nil {
			return nil, err
		}
		if n == "ALL" {
			set = map[string]bool{}
			continue
		}
		delete(set, n)
	}
	for _, c := range o.CapAdd {
		n, err := norm(c)
		if err != nil {
			return nil, err
		}
		if n == "ALL" {
			for _, a := range all {
				set[a] = true
			}
			continue
		}
		set[n] = true
	}
	src := all
	if src == nil {
		src = DefaultCaps // all that set can hold
	}
	var list []string
	for _, c := range src {
		if set[c] {
			list = append(list, c)
		}
	}
	return &specs.LinuxCapabilities{Bounding: list, Effective: list, Permitted: list}, nil
}

func defaultMounts(privileged bool) []specs.Mount {
	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	if privileged {
		sysOpts = []string{"nosuid", "noexec", "nodev"}
	}
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: append([]string{"relatime"}, sysOpts...)},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=67108864"}},
	}
}

// parseBind parses -v HOST:CTR[:ro|rw] and checks that the host path is
// there. Only absolute host paths are bind mounts; named volumes are not
// supported yet.
func parseBind(b string) (specs.Mount, error) {
	m, err := parseBindSyntax(b)
	if err != nil {
		return specs.Mount{}, err
	}
	if _, err := os.Stat(m.Source); err != nil {
		return specs.Mount{}, fmt.Errorf("invalid volume specification %q: %w", b, err)
	}
	return m, nil
}

// BindMounts returns c's bind mounts (-v) as its spec has them, without
// looking at the host: inspect shows them whether or not their sources
// are still there. Those that do not parse are left out.
func (c *Container) BindMounts() []specs.Mount {
	var out []specs.Mount
	if len(c.Run.Args) == 0 { // an older record: its spec has them
		spec, err := c.RuntimeSpec()
		if err != nil {
			return nil
		}
		for _, m := range spec.Mounts {
			if m.Type == "bind" {
				out = append(out, m)
			}
		}
		return out
	}
	for _, b := range c.Run.Binds {
		if m, err := parseBindSyntax(b); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// parseBindSyntax is parseBind without the look at the host.
func parseBindSyntax(b string) (specs.Mount, error) {
	parts := strings.Split(b, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return specs.Mount{}, fmt.Errorf("invalid volume specification: %q", b)
	}
	src, dst := parts[0], parts[1]
	if !path.IsAbs(src) {
		return specs.Mount{}, fmt.Errorf("invalid volume specification %q: only absolute host paths are supported", b)
	}
	if !path.IsAbs(dst) || path.Clean(dst) == "/" {
		return specs.Mount{}, fmt.Errorf("invalid volume specification %q: destination must be an absolute path other than /", b)
	}
	opts := []string{"rbind", "rprivate"}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			opts = append(opts, "ro")
		case "rw":
		default:
			return specs.Mount{}, fmt.Errorf("invalid volume specification %q: invalid mode %q", b, parts[2])
		}
	}
	return specs.Mount{Destination: path.Clean(dst), Type: "bind", Source: src, Options: opts}, nil
}

// parseTmpfs parses --tmpfs CTR[:opts] with docker's defaults.
func parseTmpfs(t string) (specs.Mount, error) {
	dst, opts, _ := strings.Cut(t, ":")
	if !path.IsAbs(dst) || path.Clean(dst) == "/" {
		return specs.Mount{}, fmt.Errorf("invalid tmpfs mount %q: destination must be an absolute path other than /", t)
	}
	o := []string{"nosuid", "nodev", "noexec"}
	if opts != "" {
		o = append(o, strings.Split(opts, ",")...)
	}
	return specs.Mount{Destination: path.Clean(dst), Type: "tmpfs", Source: "tmpfs", Options: o}, nil
}

func resources(o Options) *specs.LinuxResources {
	r := &specs.LinuxResources{}
	if o.Memory > 0 {
		m := o.Memory
		r.Memory = &specs.LinuxMemory{Limit: &m}
		// Docker's default: swap as large as memory (memory+swap = 2x).
		sw := 2 * m
		r.Memory.Swap = &sw
	}
	if o.CPUs > 0 {
		period := uint64(100000)
		quota := int64(o.CPUs * float64(period))
		r.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if o.PidsLimit > 0 {
		l := o.PidsLimit
		r.Pids = &specs.LinuxPids{Limit: &l}
	}
	return r
}

// ParseUlimit parses docker's --ulimit NAME=SOFT[:HARD].
func ParseUlimit(s string) (specs.POSIXRlimit, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok {
		return specs.POSIXRlimit{}, fmt.Errorf("invalid ulimit argument: %q", s)
	}
	softS, hardS, hasHard := strings.Cut(val, ":")
	soft, err := strconv.ParseInt(softS, 10, 64)
	if err != nil {
		return specs.POSIXRlimit{}, fmt.Errorf("invalid ulimit soft value %q", softS)
	}
	hard := soft
	if hasHard {
		if hard, err = strconv.ParseInt(hardS, 10, 64); err != nil {
			return specs.POSIXRlimit{}, fmt.Errorf("invalid ulimit hard value %q", hardS)
		}
	}
	if soft > hard {
		return specs.POSIXRlimit{}, fmt.Errorf("ulimit soft limit must be less than or equal to hard limit: %d > %d", soft, hard)
	}
	if !initproc.KnownRlimit("RLIMIT_" + strings.ToUpper(name)) {
		return specs.POSIXRlimit{}, fmt.Errorf("invalid ulimit type: %s", name)
	}
	return specs.POSIXRlimit{Type: "RLIMIT_" + strings.ToUpper(name), Soft: uint64(soft), Hard: uint64(hard)}, nil
}
