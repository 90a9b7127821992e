package driver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// FUSEBinary is a union filesystem served by a separate program that takes
// fuse-overlayfs's command line: BIN -o lowerdir=..,upperdir=..,workdir=.. MNT.
// laminafs and fuse-overlayfs are both driven this way, so that both are
// measured and tested through the same path.
type FUSEBinary struct {
	DriverName string   // e.g. "laminafs", "fuse-overlayfs"
	Path       string   // binary; looked up in $PATH when not absolute
	ExtraOpts  []string // extra -o options
	// Foreground runs the binary with -f and keeps it as a child; otherwise
	// it is expected to daemonize once the mount is ready.
	Foreground bool
}

func (b FUSEBinary) Name() string { return b.DriverName }

func (b FUSEBinary) Available() error {
	if _, err := exec.LookPath(b.Path); err != nil {
		return unavailable(b.DriverName, fmt.Sprintf("%s not installed", b.Path))
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return unavailable(b.DriverName, "no /dev/fuse")
	}
	return nil
}

func (b FUSEBinary) Mount(l Layers, target string) (Mount, error) {
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("%s mount %s: %w", b.DriverName, target, err)
	}
	opts := l.Options()
	if len(b.ExtraOpts) > 0 {
		opts += "," + strings.Join(b.ExtraOpts, ",")
	}
	args := []string{"-o", opts, target}
	if b.Foreground {
		args = append([]string{"-f"}, args...)
	}
	cmd := exec.Command(b.Path, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if b.Foreground {
		// A foreground server is ours: if we die without unmounting (a
		// test process killed, a fuzz worker stopped), it gets SIGTERM,
		// on which laminafs and libfuse servers unmount, rather than
		// serving a mount nobody will take down. (The signal follows the
		// thread that started the server, golang/go#27505: it would come
		// early if a goroutine that locked that thread ended; none of
		// the programs that mount through this package lock threads.)
		cmd.SysProcAttr.Pdeathsig = unix.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s mount %s: %w", b.DriverName, target, err)
	}
	m := &fuseMount{target: target, done: make(chan error, 1)}
	go func() { m.done <- cmd.Wait() }()
	// In the foreground the server is our child until unmount; a
	// daemonizing binary's first process exits once the mount is ready,
	// and its exit before that is a failure we need not wait out.
	exited := func() (bool, error) {
		select {
		case err := <-m.done:
			m.done <- err
			if err == nil && !b.Foreground {
				return false, nil
			}
			return true, fmt.Errorf("exited before mounting: %v", err)
		default:
			return false, nil
		}
	}
	if err := waitMounted(target, 10*time.Second, exited); err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("%s mount %s: %w: %s", b.DriverName, target, err, strings.TrimSpace(out.String()))
	}
	if b.Foreground {
		m.cmd = cmd
	} else if err := <-m.done; err != nil {
		_ = unmountFUSE(target)
		return nil, fmt.Errorf("%s mount %s: %w: %s", b.DriverName, target, err, strings.TrimSpace(out.String()))
	}
	m.conn = fuseConnection(target)
	return m, nil
}

// fuseConnection is the fusectl directory of the FUSE mount at target, or
// "" when it is unknown or fusectl is not mounted.
func fuseConnection(target string) string {
	conn := FUSEConnection(target)
	if conn == 0 {
		return ""
	}
	dir := connectionDir(conn)
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}

// waitMounted polls until target is a mount point, failed says the server
// gave up, or the timeout passes.
func waitMounted(target string, timeout time.Duration, failed func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := mountinfo.Mounted(target)
		if err == nil && ok {
			return nil
		}
		if stop, ferr := failed(); stop {
			return ferr
		}
		if time.Now().After(deadline) {
			return errors.New("mount did not appear in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type fuseMount struct {
	target string
	cmd    *exec.Cmd  // set for foreground servers
	done   chan error // the started process's exit
	conn   string     // fusectl dir of the connection, to wait for a daemon's exit
	once   sync.Once
	err    error
}

func (m *fuseMount) Target() string { return m.target }

func (m *fuseMount) Unmount() error {
	m.once.Do(func() {
		m.err = unmountFUSE(m.target)
		if m.cmd != nil {
			select {
			case <-m.done:
			case <-time.After(10 * time.Second):
				_ = m.cmd.Process.Kill()
				<-m.done
			}
			return
		}
		// A daemon is not our child: its connection going away from
		// fusectl is the sign it has finished.
		if m.conn != "" {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if _, err := os.Stat(m.conn); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
	return m.err
}

// unmountFUSE unmounts a FUSE mount, lazily if it is busy, and waits until
// the mount table no longer shows it.
func unmountFUSE(target string) error {
	err := unix.Unmount(target, 0)
	if err != nil && err != unix.EINVAL {
		if err2 := unix.Unmount(target, unix.MNT_DETACH); err2 != nil {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return nil
}
