package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/lamina-project/lamina/runtime"
	"github.com/spf13/cobra"
)

var psHeaders = map[string]string{
	"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "RunningFor": "CREATED",
	"CreatedAt": "CREATED AT", "Status": "STATUS", "Ports": "PORTS", "Names": "NAMES",
	"Size": "SIZE", "State": "STATE", "Labels": "LABELS", "Mounts": "MOUNTS", "Networks": "NETWORKS",
}

func newPsCmd(app *App) *cobra.Command {
	var all, quiet, size, noTrunc, latest bool
	var last int
	var filters []string
	var format string
	c := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := runtime.OpenStore(app.Root)
			if err != nil {
				return err
			}
			match, err := parsePsFilters(filters)
			if err != nil {
				return err
			}
			list, err := s.List()
			if err != nil {
				return err
			}
			if latest {
				last = 1
			}
			if last > 0 {
				all = true
			}
			tmpl := format
			switch {
			case quiet && format == "":
				tmpl = "{{.ID}}"
			case format == "" || format == "table":
				tmpl = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
				if size {
					tmpl += "\t{{.Size}}"
				}
			}
			f, err := newFormatter(app.Stdout, tmpl, psHeaders)
			if err != nil {
				return err
			}
			n := 0
			for _, c := range list {
				st, err := s.State(c)
				if err != nil {
					continue
				}
				if !all && !st.Running && len(filters) == 0 {
					continue
				}
				if !match(c, st) {
					continue
				}
				if last > 0 && n >= last {
					break
				}
				n++
				if err := f.row(psRow(c, st, noTrunc, size)); err != nil {
					return err
				}
			}
			return f.flush()
		},
	}
	fl := c.Flags()
	fl.BoolVarP(&all, "all", "a", false, "Show all containers (default shows just running)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "Only display container IDs")
	fl.BoolVarP(&size, "size", "s", false, "Display total file sizes")
	fl.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	fl.BoolVarP(&latest, "latest", "l", false, "Show the latest created container (includes all states)")
	fl.IntVarP(&last, "last", "n", -1, "Show n last created containers (includes all states)")
	stringArrayVarP(fl, &filters, "filter", "f", "Filter output based on conditions provided")
	fl.StringVar(&format, "format", "", "Format output using a custom template")
	return c
}

// status is docker's STATUS column.
func status(st *runtime.State) string {
	switch {
	case st.Running && st.Paused:
		return "Up " + units.HumanDuration(time.Since(st.StartedAt)) + " (Paused)"
	case st.Running:
		return "Up " + units.HumanDuration(time.Since(st.StartedAt))
	case st.Status == "exited":
		return fmt.Sprintf("Exited (%d) %s ago", st.ExitCode, units.HumanDuration(time.Since(st.FinishedAt)))
	case st.Status == "dead":
		return "Dead"
	}
	return "Created"
}

func stateName(st *runtime.State) string {
	switch {
	case st.Running && st.Paused:
		return "paused"
	case st.Running:
		return "running"
	}
	if st.Status == "" {
		return "created"
	}
	return st.Status
}

func psRow(c *runtime.Container, st *runtime.State, noTrunc, withSize bool) row {
	command := strings.Join(append([]string{c.Path}, c.Args...), " ")
	id := c.ID
	if !noTrunc {
		id = id[:12]
		command = ellipsis(command, 20)
	}
	image := c.ImageName
	if image == "" {
		image = c.Image
	}
	r := row{
		"ID": id, "Image": image, "Command": strconv.Quote(command),
		"RunningFor": since(c.Created), "CreatedAt": createdAt(c.Created),
		"Status": status(st), "State": stateName(st), "Ports": "", "Names": c.Name,
		"Labels": labelString(c.Config.Labels), "Mounts": strings.Join(c.HostConfig.Binds, ","),
		"Networks": c.HostConfig.NetworkMode,
	}
	if withSize {
		rw := dirSize(c.File("upper"))
		r["Size"] = fmt.Sprintf("%s (virtual %s)", humanSize(rw), humanSize(rw+c.ImageSize))
	}
	return r
}

func labelString(l map[string]string) string {
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

// parsePsFilters understands docker's id, name, status, exited, ancestor
// and label filters; several values of one key are ORed, keys are ANDed.
func parsePsFilters(filters []string) (func(*runtime.Container, *runtime.State) bool, error) {
	byKey := map[string][]string{}
	for _, f := range filters {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("bad format of filter (expected name=value)")
		}
		switch k {
		case "id", "name", "status", "exited", "ancestor", "label":
		default:
			return nil, fmt.Errorf("invalid filter '%s'", k)
		}
		if k == "status" {
			switch v {
			case "created", "restarting", "running", "removing", "paused", "exited", "dead":
			default:
				return nil, fmt.Errorf("invalid filter 'status=%s'", v)
			}
		}
		byKey[k] = append(byKey[k], v)
	}
	return func(c *runtime.Container, st *runtime.State) bool {
		for k, vals := range byKey {
			ok := false
			for _, v := range vals {
				switch k {
				case "id":
					ok = ok || strings.HasPrefix(c.ID, v)
				case "name":
					ok = ok || strings.Contains(c.Name, strings.TrimPrefix(v, "/"))
				case "status":
					ok = ok || stateName(st) == v
				case "exited":
					ok = ok || (st.Status == "exited" && strconv.Itoa(st.ExitCode) == v)
				case "ancestor":
					ok = ok || c.ImageName == v || strings.HasPrefix(strings.TrimPrefix(c.Image, "sha256:"), strings.TrimPrefix(v, "sha256:"))
				case "label":
					lk, lv, hasV := strings.Cut(v, "=")
					got, has := c.Config.Labels[lk]
					ok = ok || (has && (!hasV || got == lv))
				}
			}
			if !ok {
				return false
			}
		}
		return true
	}, nil
}
