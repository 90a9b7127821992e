package initproc

import (
	"fmt"
	"strings"

	"github.com/moby/sys/capability"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// AllCapNames lists the capabilities this kernel knows and this process
// may pass on (its bounding set), as CAP_NAME: --privileged and
// --cap-add ALL mean every capability lamina has, not more.
func AllCapNames() []string {
	last, err := capability.LastCap()
	own, oerr := capability.NewPid2(0)
	if oerr == nil {
		oerr = own.Load()
	}
	var names []string
	for _, c := range capability.ListKnown() {
		if err == nil && c > last {
			continue
		}
		if oerr == nil && !own.Get(capability.BOUNDING, c) {
			continue
		}
		names = append(names, "CAP_"+strings.ToUpper(c.String()))
	}
	return names
}

func capsFromNames(names []string) ([]capability.Cap, error) {
	byName := map[string]capability.Cap{}
	for _, c := range capability.ListKnown() {
		byName["CAP_"+strings.ToUpper(c.String())] = c
	}
	var out []capability.Cap
	for _, n := range names {
		c, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("unknown capability %q", n)
		}
		out = append(out, c)
	}
	return out, nil
}

// capState is a spec's capability sets, resolved to numbers once.
type capState struct {
	c capability.Capabilities
	// sets of the spec, by kind.
	bounding, effective, permitted, inheritable, ambient []capability.Cap
}

func newCapState(lc *specs.LinuxCapabilities) (*capState, error) {
	if lc == nil {
		lc = &specs.LinuxCapabilities{}
	}
	c, err := capability.NewPid2(0)
	if err != nil {
		return nil, fmt.Errorf("capabilities: %w", err)
	}
	if err := c.Load(); err != nil {
		return nil, fmt.Errorf("capabilities: %w", err)
	}
	s := &capState{c: c}
	for _, x := range []struct {
		dst   *[]capability.Cap
		names []string
	}{
		{&s.bounding, lc.Bounding}, {&s.effective, lc.Effective}, {&s.permitted, lc.Permitted},
		{&s.inheritable, lc.Inheritable}, {&s.ambient, lc.Ambient},
	} {
		if *x.dst, err = capsFromNames(x.names); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// applyBounding drops every capability outside the bounding set. It must run
// while the process still has CAP_SETPCAP, i.e. before the user switch.
//
// Preconditions: the calling goroutine is locked to its OS thread, which
// is the one that will execve (capabilities are per thread).
func (s *capState) applyBounding() error {
	s.c.Clear(capability.BOUNDS)
	s.c.Set(capability.BOUNDING, s.bounding...)
	if err := s.c.Apply(capability.BOUNDS); err != nil {
		return fmt.Errorf("apply bounding capabilities: %w", err)
	}
	return nil
}

// apply sets the effective, permitted, inheritable and ambient sets, after
// the user switch (setuid clears them unless keepcaps was set).
func (s *capState) apply() error {
	s.c.Clear(capability.CAPS | capability.AMBS)
	s.c.Set(capability.EFFECTIVE, s.effective...)
	s.c.Set(capability.PERMITTED, s.permitted...)
	s.c.Set(capability.INHERITABLE, s.inheritable...)
	s.c.Set(capability.AMBIENT, s.ambient...)
	if err := s.c.Apply(capability.CAPS | capability.AMBS); err != nil {
		return fmt.Errorf("apply capabilities: %w", err)
	}
	return nil
}
