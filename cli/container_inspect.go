package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lamina-project/lamina/runtime"
	"github.com/spf13/cobra"
)

// inspectContainer is docker's container inspect document, the parts
// lamina has.
type inspectContainer struct {
	ID              string `json:"Id"`
	Created         string
	Path            string
	Args            []string
	State           inspectState
	Image           string
	ResolvConfPath  string
	HostnamePath    string
	HostsPath       string
	LogPath         string
	Name            string
	RestartCount    int
	Driver          string
	Platform        string
	MountLabel      string
	ProcessLabel    string
	AppArmorProfile string
	HostConfig      runtime.HostConfig
	GraphDriver     graphDriver
	SizeRw          int64
	SizeRootFs      int64
	Mounts          []inspectMount
	Config          runtime.Config
}

type inspectState struct {
	Status     string
	Running    bool
	Paused     bool
	Restarting bool
	OOMKilled  bool
	Dead       bool
	Pid        int
	ExitCode   int
	Error      string
	StartedAt  string
	FinishedAt string
}

type inspectMount struct {
	Type        string
	Source      string
	Destination string
	Mode        string
	RW          bool
	Propagation string
}

const zeroTime = "0001-01-01T00:00:00Z"

func inspectTime(t interface{ IsZero() bool }, s string) string {
	if t.IsZero() {
		return zeroTime
	}
	return s
}

func toContainerInspect(c *runtime.Container, st *runtime.State) inspectContainer {
	rw := dirSize(c.File("upper"))
	d := inspectContainer{
		ID: c.ID, Created: c.Created.Format("2006-01-02T15:04:05.999999999Z07:00"),
		Path: c.Path, Args: c.Args, Image: c.Image, Name: "/" + c.Name,
		ResolvConfPath: c.File("resolv.conf"), HostnamePath: c.File("hostname"), HostsPath: c.File("hosts"),
		LogPath: c.File("ctr.log"), Driver: c.Driver, Platform: "linux",
		HostConfig: c.HostConfig, Config: c.Config,
		SizeRw: rw, SizeRootFs: rw + c.ImageSize,
		State: inspectState{
			Status: stateName(st), Running: st.Running, Paused: st.Paused, Restarting: st.Restarting,
			OOMKilled: st.OOMKilled, Dead: st.Dead, Pid: st.Pid, ExitCode: st.ExitCode, Error: st.Error,
			StartedAt:  inspectTime(st.StartedAt, st.StartedAt.Format("2006-01-02T15:04:05.999999999Z07:00")),
			FinishedAt: inspectTime(st.FinishedAt, st.FinishedAt.Format("2006-01-02T15:04:05.999999999Z07:00")),
		},
		GraphDriver: graphDriver{Name: c.Driver, Data: map[string]string{
			"LowerDir": strings.Join(c.Layers.Lower, ":"), "UpperDir": c.Layers.Upper,
			"WorkDir": c.Layers.Work, "MergedDir": c.File("merged"),
		}},
		Mounts: []inspectMount{},
	}
	if c.Args == nil {
		d.Args = []string{}
	}
	for _, m := range c.BindMounts() {
		rw, mode := true, ""
		for _, o := range m.Options {
			if o == "ro" {
				rw, mode = false, "ro"
			}
		}
		d.Mounts = append(d.Mounts, inspectMount{Type: "bind", Source: m.Source, Destination: m.Destination,
			Mode: mode, RW: rw, Propagation: "rprivate"})
	}
	return d
}

func newContainerInspectCmd(app *App) *cobra.Command {
	var format string
	var size bool
	c := &cobra.Command{
		Use:   "inspect [OPTIONS] NAME|ID [NAME|ID...]",
		Short: "Display detailed information on one or more containers (or images)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			var docs []any
			var errs []error
			for _, ref := range args {
				c, err := s.Get(ref)
				if err == nil {
					st, serr := s.State(c)
					if serr != nil {
						errs = append(errs, serr)
						continue
					}
					docs = append(docs, toContainerInspect(c, st))
					continue
				}
				if !errors.Is(err, runtime.ErrNoSuchContainer) {
					errs = append(errs, err)
					continue
				}
				// docker inspect also answers for images.
				if ls, lerr := openStore(app); lerr == nil {
					img, ierr := ls.ResolveImage(ref)
					if ierr == nil {
						docs = append(docs, toInspect(ls, img))
					}
					ls.Close()
					if ierr == nil {
						continue
					}
				}
				errs = append(errs, fmt.Errorf("No such object: %s", ref))
			}
			if err := writeInspect(app, format, docs); err != nil {
				return err
			}
			if len(errs) > 0 {
				return &StatusError{Code: 1, Err: errors.Join(errs...)}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "", "Format output using a custom template")
	c.Flags().BoolVarP(&size, "size", "s", false, "Display total file sizes")
	return c
}
