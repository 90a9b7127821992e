package runtime

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotRunning is returned for operations that need a running container.
var ErrNotRunning = errors.New("is not running")

func (s *Store) running(c *Container) (*State, error) {
	st, err := s.State(c)
	if err != nil {
		return nil, err
	}
	if !st.Running || st.Pid <= 0 {
		return st, fmt.Errorf("container %s %w", c.ID[:12], ErrNotRunning)
	}
	return st, nil
}

// Kill sends sig to the container's init. SIGKILL also thaws a paused
// container, since a frozen process cannot die.
func (s *Store) Kill(c *Container, sig unix.Signal) error {
	st, err := s.running(c)
	if err != nil {
		return err
	}
	if err := unix.Kill(st.Pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill container %s: %w", c.ID[:12], err)
	}
	if st.Paused && sig == unix.SIGKILL && st.Cgroup != nil {
		_ = st.Cgroup.Thaw()
	}
	return nil
}

// Stop sends sig (SIGTERM by default) and, if the container has not
// stopped after timeout, SIGKILL; it returns once the monitor has finished.
// A negative timeout waits forever.
func (s *Store) Stop(c *Container, sig unix.Signal, timeout time.Duration) error {
	st, err := s.State(c)
	if err != nil {
		return err
	}
	if !st.Running {
		return nil // docker: stopping a stopped container succeeds
	}
	if sig == 0 {
		sig = unix.SIGTERM
	}
	if st.Paused && st.Cgroup != nil {
		// The signal is delivered when the container thaws.
		_ = unix.Kill(st.Pid, sig)
		_ = st.Cgroup.Thaw()
	} else if err := s.Kill(c, sig); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	if timeout < 0 || s.WaitStopped(c, timeout) {
		if timeout < 0 {
			s.WaitStopped(c, 100*365*24*time.Hour)
		}
		return nil
	}
	if err := s.Kill(c, unix.SIGKILL); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	if !s.WaitStopped(c, 30*time.Second) {
		return fmt.Errorf("container %s did not stop", c.ID[:12])
	}
	return nil
}

// WaitStopped waits up to timeout for c's monitor to finish; it reports
// whether it did.
func (s *Store) WaitStopped(c *Container, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for s.MonitorAlive(c) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
		if delay < 50*time.Millisecond {
			delay *= 2
		}
	}
	return true
}

// Pause freezes every process of the container.
func (s *Store) Pause(c *Container) error {
	unlock, err := s.LockContainer(c)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.running(c)
	if err != nil {
		return err
	}
	if st.Paused {
		return fmt.Errorf("container %s is already paused", c.ID[:12])
	}
	if st.Cgroup == nil {
		return fmt.Errorf("container %s has no cgroup to freeze", c.ID[:12])
	}
	if err := st.Cgroup.Freeze(); err != nil {
		_ = st.Cgroup.Thaw()
		return fmt.Errorf("pause %s: %w", c.ID[:12], err)
	}
	st.Paused, st.Status = true, "paused"
	return s.SaveState(c, st)
}

// Unpause thaws a paused container.
func (s *Store) Unpause(c *Container) error {
	unlock, err := s.LockContainer(c)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.running(c)
	if err != nil {
		return err
	}
	if !st.Paused {
		return fmt.Errorf("container %s is not paused", c.ID[:12])
	}
	if err := st.Cgroup.Thaw(); err != nil {
		return fmt.Errorf("unpause %s: %w", c.ID[:12], err)
	}
	st.Paused, st.Status = false, "running"
	return s.SaveState(c, st)
}

// Pids lists the container's processes (host pids).
func (s *Store) Pids(c *Container) ([]int, error) {
	st, err := s.running(c)
	if err != nil {
		return nil, err
	}
	if st.Cgroup == nil {
		return []int{st.Pid}, nil
	}
	return st.Cgroup.Pids()
}
