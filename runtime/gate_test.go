package runtime

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lamina-project/lamina/driver"
	"github.com/lamina-project/lamina/internal/testutil"
)

// TestGate: a monitor run in the CLI's process (PrepareHere) does not
// start the container's command until the gate the CLI gave it
// (Pending.Gate: the container's hold on its image, still being
// recorded) has opened, and fails the start with the gate's error,
// without running the command, when it fails. A monitor process cannot
// take a gate.
func TestGate(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"opens", nil},
		{"fails", errors.New("image is being removed")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c, ran := touchContainer(t, rootfs, "gated-"+tc.name)
			if err := s.CreateWith(c, mkContainerDirs(c)); err != nil {
				t.Fatal(err)
			}
			p := prepareHere(t, s, c)
			release := make(chan struct{})
			var asked atomic.Bool
			if !p.Gate(func() error { asked.Store(true); <-release; return tc.err }) {
				t.Fatal("a monitor run here refused a gate")
			}
			done := make(chan error, 1)
			go func() {
				_, err := p.Start(c, AttachOptions{})
				done <- err
			}()
			deadline := time.Now().Add(20 * time.Second)
			for !asked.Load() {
				if time.Now().After(deadline) {
					close(release)
					t.Fatalf("the monitor never asked the gate (start: %v)", <-done)
				}
				time.Sleep(5 * time.Millisecond)
			}
			// Asked, the gate holds: the command must not run meanwhile.
			time.Sleep(300 * time.Millisecond)
			if ran() {
				close(release)
				t.Fatal("the command ran before the gate opened")
			}
			select {
			case err := <-done:
				close(release)
				t.Fatalf("Start returned before the gate opened: %v", err)
			default:
			}
			close(release)
			err := <-done
			if tc.err != nil {
				if err == nil || !strings.Contains(err.Error(), tc.err.Error()) {
					t.Fatalf("start: %v, want the gate's error %q", err, tc.err)
				}
				<-p.Done()
				if ran() {
					t.Error("the command ran although the gate failed")
				}
				if st, err := s.State(c); err != nil || st.Status != "created" || st.ExitCode != 125 {
					t.Errorf("state %+v (%v), want created with exit code 125", st, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			if !s.WaitStopped(c, 30*time.Second) {
				t.Fatal("the container did not finish")
			}
			if !ran() {
				t.Error("the command did not run once the gate opened")
			}
		})
	}
	t.Run("monitor process", func(t *testing.T) {
		if monitorProcess(t).Gate(func() error { return nil }) {
			t.Error("a monitor process took a gate it cannot wait for")
		}
	})
}

// TestHandoff: a container handed to a monitor run here before its record
// is complete (Pending.Handoff) starts only once Recorded says the record
// is; a record that failed, or an Abort, ends the monitor with its
// container's root filesystem unmounted and its command never run.
func TestHandoff(t *testing.T) {
	testutil.RequirePrivileged(t)
	rootfs := sharedRootfs(t)
	mounted := func(t *testing.T, target string) bool {
		t.Helper()
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Contains(string(b), " "+target+" ")
	}
	for _, tc := range []string{"recorded", "record failed", "aborted"} {
		t.Run(tc, func(t *testing.T) {
			s, c, ran := touchContainer(t, rootfs, "handed")
			p := prepareHere(t, s, c)
			// As createContainer does: the directories first, then the
			// hand-over, then the record.
			mkdirs := mkContainerDirs(c)
			err := s.CreateWith(c, func() (func(error), error) {
				if _, err := mkdirs(); err != nil {
					return nil, err
				}
				if !p.Handoff(c) {
					t.Error("a monitor run here refused the hand-over")
				}
				return nil, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// The monitor mounts and bootstraps, and waits.
			deadline := time.Now().Add(20 * time.Second)
			for !mounted(t, c.File("merged")) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
			if ran() {
				t.Fatal("the command ran before the record was said complete")
			}
			switch tc {
			case "recorded":
				p.Recorded(nil)
				if _, err := p.Start(c, AttachOptions{}); err != nil {
					t.Fatalf("start: %v", err)
				}
				if !s.WaitStopped(c, 30*time.Second) {
					t.Fatal("the container did not finish")
				}
				if !ran() {
					t.Error("the command did not run")
				}
				return
			case "record failed":
				p.Recorded(errors.New("disk full"))
				<-p.Done()
			case "aborted":
				p.Abort()
			}
			if ran() {
				t.Error("the command ran")
			}
			if mounted(t, c.File("merged")) {
				t.Error("the root filesystem is still mounted after the monitor ended")
			}
		})
	}
	t.Run("monitor process", func(t *testing.T) {
		if monitorProcess(t).Handoff(&Container{ID: NewID()}) {
			t.Error("a monitor process took a hand-over")
		}
	})
}

// touchContainer returns a new store and, not yet created in it, a
// container on rootfs (the overlay driver: no FUSE server in the test
// process) whose command touches a file; ran reports whether it did.
func touchContainer(t *testing.T, rootfs, name string) (s *Store, c *Container, ran func() bool) {
	t.Helper()
	shared := t.TempDir()
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	id := NewID()
	dir := filepath.Join(s.dir, id)
	c = &Container{ID: id, Name: name, Driver: DriverOverlay,
		Run: Options{
			Args: []string{"/bin/touch", "/shared/ran"}, Network: "none",
			Binds: []string{shared + ":/shared"},
		},
		Layers: driver.Layers{Lower: []string{rootfs}, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work")}}
	ran = func() bool {
		_, err := os.Stat(filepath.Join(shared, "ran"))
		return err == nil
	}
	return s, c, ran
}

// mkContainerDirs is a CreateWith hook that makes c's layer and mount
// directories, as the CLI's createContainer does.
func mkContainerDirs(c *Container) func() (func(error), error) {
	return func() (func(error), error) {
		for _, d := range []string{"upper", "work", "merged"} {
			if err := os.Mkdir(c.File(d), 0o755); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
}

// prepareHere prepares a monitor in the test process for c, and waits at
// the test's end for it to end before c is deleted.
func prepareHere(t *testing.T, s *Store, c *Container) *Pending {
	t.Helper()
	p, err := s.PrepareHere(false, c.ID, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Error("the monitor did not end")
		}
		if err := s.Delete(c); err != nil {
			t.Error(err)
		}
	})
	return p
}

// monitorProcess prepares a monitor process (lamina __monitor), aborted
// at the test's end.
func monitorProcess(t *testing.T) *Pending {
	t.Helper()
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Prepare(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Abort)
	return p
}
