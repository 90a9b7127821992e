package driver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// UnionFS is unionfs-fuse (libfuse 2), a peer measured by lamina bench:
//
//	unionfs -f -o cow,allow_other UPPER=RW:L1=RO:L2=RO MNT
//
// It does not understand overlay's on-disk format: a whiteout (character
// device 0/0) shows as a device and an opaque directory's lower entries
// stay visible, so on a tree with whiteouts it shows a different tree from
// the other drivers. Its own whiteouts live in UPPER/.unionfs-fuse. Work is
// unused.
type UnionFS struct {
	Path      string   // binary; "unionfs" when empty
	ExtraOpts []string // extra -o options
}

func (UnionFS) Name() string { return "unionfs-fuse" }

func (u UnionFS) bin() string {
	if u.Path == "" {
		return "unionfs"
	}
	return u.Path
}

func (u UnionFS) Available() error {
	if _, err := exec.LookPath(u.bin()); err != nil {
		return unavailable("unionfs-fuse", u.bin()+" not installed")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return unavailable("unionfs-fuse", "no /dev/fuse")
	}
	return nil
}

func (u UnionFS) Mount(l Layers, target string) (Mount, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("unionfs-fuse mount %s: %w", target, err)
	}
	var branches []string
	opts := []string{"allow_other"}
	if l.Upper != "" {
		branches = append(branches, l.Upper+"=RW")
		opts = append(opts, "cow")
	}
	for _, d := range l.Lower {
		branches = append(branches, d+"=RO")
	}
	for _, b := range branches {
		// The branch list has no escaping.
		if strings.Count(b, "=") > 1 || strings.Contains(b, ":") {
			return nil, fmt.Errorf("unionfs-fuse mount %s: branch %q contains ':' or '='", target, b)
		}
	}
	opts = append(opts, u.ExtraOpts...)
	cmd := exec.Command(u.bin(), "-f", "-o", strings.Join(opts, ","), strings.Join(branches, ":"), target)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("unionfs-fuse mount %s: %w", target, err)
	}
	m := &fuseMount{target: target, cmd: cmd, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait() }()
	err := waitMounted(target, 10*time.Second, func() (bool, error) {
		select {
		case err := <-m.done:
			m.done <- err
			return true, fmt.Errorf("exited: %v", err)
		default:
			return false, nil
		}
	})
	if err != nil {
		_ = cmd.Process.Kill()
		werr := <-m.done
		m.done <- werr
		return nil, fmt.Errorf("unionfs-fuse mount %s: %w: %s", target, err, strings.TrimSpace(out.String()))
	}
	return m, nil
}
