package runtime

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lamina-project/lamina/driver"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A container lives in <root>/containers/<id>/:
//
//	config.json   Container, written at create and rename
//	state.json    State, written by the monitor and by pause/unpause
//	lock          flock taken for every change of this container
//	monitor.lock  held exclusively by the monitor for its whole life, so
//	              that anyone can tell a live monitor from a dead one
//	              without trusting a pid that may have been reused
//	ctr.log       docker json-file log
//	monitor.log   what the monitor printed (shown when it dies unreported)
//	attach.sock   the monitor's attach socket
//	hosts, hostname, resolv.conf   bind-mounted into the container
//	upper/ work/ merged/           the read-write layer and the mount point
//
// <root>/containers/.lock serialises what must be unique across containers
// (names) and removal; <root>/containers/.seccomp/ caches compiled seccomp
// filters. Files are written to a temp name and renamed.

// Config is the docker-visible configuration of a container, with
// docker's JSON names, as inspect shows it.
type Config struct {
	Hostname     string
	User         string
	Env          []string
	Cmd          []string
	Entrypoint   []string
	WorkingDir   string
	Image        string
	Tty          bool
	OpenStdin    bool
	StdinOnce    bool
	AttachStdin  bool
	AttachStdout bool
	AttachStderr bool
	Labels       map[string]string
}

// HostConfig is docker's HostConfig, the subset lamina implements.
type HostConfig struct {
	Binds          []string
	Tmpfs          []string `json:",omitempty"`
	AutoRemove     bool
	ReadonlyRootfs bool
	Privileged     bool
	CapAdd         []string
	CapDrop        []string
	SecurityOpt    []string
	Memory         int64
	NanoCpus       int64
	PidsLimit      int64
	NetworkMode    string
}

// Container is a container's record (config.json).
type Container struct {
	ID         string
	Name       string
	Created    time.Time
	Path       string
	Args       []string
	Image      string // the image ID
	ImageName  string // the reference the user gave
	Config     Config
	HostConfig HostConfig
	// Run is what the container runs, as the user asked for it: docker's
	// run flags resolved against the image. Its runtime spec is built from
	// it at each start (RuntimeSpec), as docker builds one from its
	// config, and not stored: encoding/json builds an encoder for every
	// type a value's type can reach, some hundred for specs.Spec, which
	// cost 1-2 ms of CPU in every run.
	Run Options
	// Spec is the OCI runtime spec the container runs with, its root path
	// the mount point: set by whoever made the container, else built by
	// RuntimeSpec. Not part of the record.
	Spec *specs.Spec `json:"-"`
	// LegacySpec is the spec a record from before Run holds, kept as it
	// was written (RuntimeSpec decodes it).
	LegacySpec json.RawMessage `json:"Spec,omitempty"`
	// Driver is the storage driver; Layers the union it mounts.
	Driver string
	Layers driver.Layers
	// ImageSize is the image's size, for ps -s "(virtual ...)".
	ImageSize int64

	dir string
}

// RuntimeSpec returns c's runtime spec: Spec if set, else the one built
// from Run (as NewSpec does, without looking at the host again: newSpec)
// or, for an older record, the one it holds; then kept in Spec. Not safe
// for concurrent use: a monitor asks for it before it starts anything,
// exec and inspect once.
func (c *Container) RuntimeSpec() (*specs.Spec, error) {
	if c.Spec != nil {
		return c.Spec, nil
	}
	if len(c.Run.Args) == 0 && len(c.LegacySpec) > 0 {
		var spec specs.Spec
		if err := json.Unmarshal(c.LegacySpec, &spec); err != nil {
			return nil, fmt.Errorf("container %s: runtime spec: %w", c.ID, err)
		}
		c.Spec = &spec
		return c.Spec, nil
	}
	spec, err := newSpec(c.ID, c.File("merged"), c.Run, false)
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", c.ID, err)
	}
	c.Spec = spec
	return spec, nil
}

// State is a container's run state (state.json), with docker's names.
type State struct {
	Status     string // created, running, paused, exited, dead
	Running    bool
	Paused     bool
	Restarting bool
	OOMKilled  bool
	Dead       bool
	Pid        int
	ExitCode   int
	Error      string
	StartedAt  time.Time
	FinishedAt time.Time
	// MonitorPid is the monitor's pid while it runs.
	MonitorPid int     `json:",omitempty"`
	Cgroup     *Cgroup `json:",omitempty"`
}

// Store is the containers directory of a lamina store.
type Store struct {
	dir string
}

// Errors the CLI turns into docker's messages.
var (
	ErrNoSuchContainer = errors.New("no such container")
	ErrNameInUse       = errors.New("name already in use")
	ErrAmbiguous       = errors.New("multiple containers match")
)

// OpenStore opens (creating) the containers directory under a lamina root.
func OpenStore(root string) (*Store, error) {
	dir := filepath.Join(root, "containers")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("containers dir: %w", err)
	}
	return &Store{dir: dir}, nil
}

// seccompDir caches compiled seccomp filters (see seccompFilter).
func (s *Store) seccompDir() string { return filepath.Join(s.dir, ".seccomp") }

// Dir is the container's directory.
func (c *Container) Dir() string { return c.dir }

// File is a path inside the container's directory.
func (c *Container) File(name string) string { return filepath.Join(c.dir, name) }

// NewID returns a random 64-hex container ID whose short form is not all
// digits (docker avoids those, they read as numbers).
func NewID() string {
	for {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		id := hex.EncodeToString(b)
		if strings.Trim(id[:12], "0123456789") != "" {
			return id
		}
	}
}

// validName reports whether s is a container name docker accepts,
// /?[a-zA-Z0-9][a-zA-Z0-9_.-]+ (a function, not a regexp: compiling one
// at package initialisation slowed every lamina process's start).
func validName(s string) bool {
	s = strings.TrimPrefix(s, "/")
	if len(s) < 2 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// isID reports whether id is a full container ID: 64 lowercase hex digits.
func isID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, r := range id {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// Lock takes the store-wide lock; the returned function releases it.
func (s *Store) Lock() (func(), error) { return flock(filepath.Join(s.dir, ".lock")) }

// LockContainer takes c's lock.
func (s *Store) LockContainer(c *Container) (func(), error) { return flock(c.File("lock")) }

func flock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// Create makes c's directory and records it, failing if the name is taken.
// With an empty name, a docker-style name is generated.
func (s *Store) Create(c *Container) error { return s.CreateWith(c, nil) }

// CreateWith is Create that calls made, when not nil, as soon as the
// container's directory exists (the container then holds what it names:
// see the CLI's holderGone), while the rest of the record is written. An
// error from made fails the create; the undo it returns, when not nil,
// is called with the error if the record then fails, before the
// directory is removed.
func (s *Store) CreateWith(c *Container, made func() (undo func(error), err error)) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	taken, err := s.names(true)
	if err != nil {
		return err
	}
	if c.Name == "" {
		for i := 0; ; i++ {
			n := GenerateName(i > 10)
			if _, ok := taken[n]; !ok {
				c.Name = n
				break
			}
		}
	} else {
		c.Name = strings.TrimPrefix(c.Name, "/")
		if !validName(c.Name) {
			return fmt.Errorf("invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", c.Name)
		}
		if id, ok := taken[c.Name]; ok {
			return fmt.Errorf("the container name \"/%s\" is already in use by container %q: %w", c.Name, id, ErrNameInUse)
		}
	}
	c.dir = filepath.Join(s.dir, c.ID)
	if err := os.Mkdir(c.dir, 0o700); err != nil {
		return fmt.Errorf("container dir: %w", err)
	}
	var undo func(error)
	if made != nil {
		if undo, err = made(); err != nil {
			os.RemoveAll(c.dir)
			return err
		}
	}
	fail := func(err error) error {
		if undo != nil {
			undo(err)
		}
		os.RemoveAll(c.dir)
		return err
	}
	// The state is written beside the record (a fresh process builds
	// encoding/json's encoders for each at its first encoding); the name
	// after both, as it says the container is there.
	stateErr := make(chan error, 1)
	go func() { stateErr <- s.SaveState(c, &State{Status: "created"}) }()
	err = s.SaveConfig(c)
	if serr := <-stateErr; err == nil {
		err = serr
	}
	if err != nil {
		return fail(err)
	}
	if err := writeName(c); err != nil {
		return fail(err)
	}
	return nil
}

// A container's name is also kept alone in its file "name", written after
// config.json, so that checking a name (every create, every lookup by
// name) reads a few bytes per container, not every container's record:
// with a hundred stopped containers, decoding their records doubled the
// time of a lamina run. A container without the file (one made before
// it, or one whose rename was cut short) is read from config.json.

// writeName writes c's name file atomically.
func writeName(c *Container) error { return writeFile(c.File("name"), []byte(c.Name)) }

// names maps every container's name to its ID. With migrate (the caller
// holds the store's lock), a container without a name file gets one.
func (s *Store) names(migrate bool) (map[string]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	names := make(map[string]string, len(entries))
	for _, e := range entries {
		id := e.Name()
		if !e.IsDir() || !isID(id) {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(s.dir, id, "name")); err == nil {
			names[string(b)] = id
			continue
		}
		if c, err := s.Load(id); err == nil {
			names[c.Name] = id
			if migrate {
				_ = writeName(c) // only a speed-up: the record still says it
			}
		} // else being created or removed
	}
	return names, nil
}

// SaveConfig writes config.json atomically.
func (s *Store) SaveConfig(c *Container) error { return writeJSON(c.File("config.json"), c) }

// SaveState writes state.json atomically.
func (s *Store) SaveState(c *Container, st *State) error { return writeJSON(c.File("state.json"), st) }

// writeJSON writes v's JSON to path atomically. Compact, as docker's
// config.v2.json: indenting a container's record (20 KB when it held the
// runtime spec) took 0.2 ms more than encoding it, on the path of every
// run, for files no one reads but lamina.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFile(path, b)
}

// writeFile replaces the file at path with b atomically: written beside
// it, then renamed over it.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Load reads the container with the full ID id.
func (s *Store) Load(id string) (*Container, error) {
	dir := filepath.Join(s.dir, id)
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", id, ErrNoSuchContainer)
	}
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", id, err)
	}
	c := &Container{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("container %s: config.json: %w", id, err)
	}
	c.dir = dir
	return c, nil
}

// List returns every container, newest first.
func (s *Store) List() ([]*Container, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []*Container
	for _, e := range entries {
		if !e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		c, err := s.Load(e.Name())
		if err != nil {
			continue // being created or removed
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

// Get finds a container by full ID, name, or unique ID prefix, as docker
// does (an exact name wins over a prefix).
func (s *Store) Get(ref string) (*Container, error) {
	ref = strings.TrimPrefix(ref, "/")
	if ref == "" {
		return nil, fmt.Errorf("%q: %w", ref, ErrNoSuchContainer)
	}
	if len(ref) == 64 {
		if c, err := s.Load(ref); err == nil {
			return c, nil
		}
	}
	names, err := s.names(false)
	if err != nil {
		return nil, err
	}
	if id, ok := names[ref]; ok {
		if c, err := s.Load(id); err == nil {
			return c, nil
		}
	}
	var match []string
	for _, id := range names {
		if strings.HasPrefix(id, ref) {
			match = append(match, id)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("%s: %w", ref, ErrNoSuchContainer)
	case 1:
		if c, err := s.Load(match[0]); err == nil {
			return c, nil
		}
		return nil, fmt.Errorf("%s: %w", ref, ErrNoSuchContainer)
	}
	return nil, fmt.Errorf("%s: %w", ref, ErrAmbiguous)
}

// State reads c's state and corrects it when the monitor has died without
// recording the end: ps must show the truth.
func (s *Store) State(c *Container) (*State, error) {
	st := &State{}
	b, err := os.ReadFile(c.File("state.json"))
	if err != nil {
		return nil, fmt.Errorf("container %s: state: %w", c.ID, err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("container %s: state.json: %w", c.ID, err)
	}
	if (st.Running || st.Status == "running" || st.Status == "paused") && !s.MonitorAlive(c) {
		// Re-read: the monitor may have just finished writing.
		if b, err := os.ReadFile(c.File("state.json")); err == nil {
			_ = json.Unmarshal(b, st)
		}
		if st.Running {
			// No container runs without its monitor: Pdeathsig usually
			// took init with it, but not reliably (a SIGKILLed
			// multi-threaded parent), so finish the job through the
			// cgroup, which holds every process of the container.
			if st.Cgroup != nil {
				st.Cgroup.killAll()
			}
			st.Status, st.Running, st.Paused = "exited", false, false
			st.ExitCode = 255
			st.Error = "container monitor exited unexpectedly"
			st.Pid = 0
			if st.FinishedAt.IsZero() {
				st.FinishedAt = time.Now().UTC()
			}
		}
	}
	return st, nil
}

// MonitorAlive reports whether c's monitor holds monitor.lock.
func (s *Store) MonitorAlive(c *Container) bool {
	f, err := os.OpenFile(c.File("monitor.lock"), os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	return false
}

// Rename changes c's name.
func (s *Store) Rename(c *Container, name string) error {
	unlock, err := s.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	name = strings.TrimPrefix(name, "/")
	if !validName(name) {
		return fmt.Errorf("invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", name)
	}
	names, err := s.names(true)
	if err != nil {
		return err
	}
	if id, ok := names[name]; ok {
		return fmt.Errorf("the container name \"/%s\" is already in use by container %q: %w", name, id, ErrNameInUse)
	}
	// Without its name file while config.json changes: a rename cut
	// short leaves the record, not a stale copy, to say the name.
	if err := os.Remove(c.File("name")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rename: %w", err)
	}
	c.Name = name
	if err := s.SaveConfig(c); err != nil {
		return err
	}
	return writeName(c)
}

// Delete removes a stopped container's directory, unmounting whatever a
// dead monitor left mounted and removing its cgroups.
func (s *Store) Delete(c *Container) error {
	reclaim, err := s.Unlist(c)
	if err != nil {
		return err
	}
	return reclaim()
}

// Unlist is the part of Delete after which the container is gone for every
// command (its name free, its ID unknown); the returned reclaim removes
// its files, what is left of them. A process that dies in between leaves a
// directory that the next reclaim removes.
func (s *Store) Unlist(c *Container) (reclaim func() error, err error) {
	return s.unlist(c, false)
}

// UnlistExited is Unlist for a container that has just exited, by its
// monitor (the CLI's --rm, an ExitHook): the container's cgroups are the
// monitor's to remove, and its state, which the monitor did not record,
// is not read. Its union may still be mounted: the directory moves with
// the mount in it, c's directory is the new one, and the monitor unmounts
// the union there before it calls reclaim (which unmounts whatever is
// left before it removes anything).
func (s *Store) UnlistExited(c *Container) (reclaim func() error, err error) {
	return s.unlist(c, true)
}

// unlist is Unlist, or UnlistExited when byMonitor: the monitor removes
// the cgroups itself, and unmounts the union after the rename.
func (s *Store) unlist(c *Container, byMonitor bool) (reclaim func() error, err error) {
	unlock, err := s.Lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if !byMonitor {
		st, _ := s.State(c)
		if st != nil && st.Cgroup != nil {
			if err := st.Cgroup.Destroy(); err != nil {
				return nil, err
			}
		}
		if err := unmountAll(c.File("merged")); err != nil {
			return nil, err
		}
	}
	// Renamed first so a half-removed container never shows in List.
	gone := filepath.Join(s.dir, removingPrefix+c.ID)
	if err := os.Rename(c.dir, gone); err != nil {
		return nil, fmt.Errorf("remove container: %w", err)
	}
	c.dir = gone
	return func() error {
		// Never through a union: whatever is still mounted there goes
		// first, or the files stay for a later sweep.
		if err := unmountAll(filepath.Join(gone, "merged")); err != nil {
			return fmt.Errorf("remove container: %w", err)
		}
		if err := os.RemoveAll(gone); err != nil {
			return fmt.Errorf("remove container: %w", err)
		}
		s.sweepRemoved()
		return nil
	}, nil
}

// removingPrefix names a removed container's directory until its files are.
const removingPrefix = ".removing-"

// sweepRemoved removes what removals that died half-way left (Unlist):
// another process may be removing the same directory, which RemoveAll
// bears. One whose monitor lives is that monitor's to remove (its union
// may still be mounted there, UnlistExited); one whose monitor died with
// its union mounted is unmounted first, so that RemoveAll never goes
// into a union.
func (s *Store) sweepRemoved() {
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), removingPrefix) {
			continue
		}
		gone := &Container{dir: filepath.Join(s.dir, e.Name())}
		if s.MonitorAlive(gone) || unmountAll(gone.File("merged")) != nil {
			continue
		}
		_ = os.RemoveAll(gone.dir)
	}
}
