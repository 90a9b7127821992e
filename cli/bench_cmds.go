package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/lamina-project/lamina/bench"
	"github.com/lamina-project/lamina/driver"
	"github.com/spf13/cobra"
)

// benchCommands returns the bench commands.
func benchCommands(app *App) []*cobra.Command {
	var (
		drivers, workloads, size   string
		layers, files, runs        int
		jsonOut, plotOut, dir, lfs string
		noDrop                     bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark union filesystems on a generated fixture",
		Long: `Build a deterministic layer fixture once, mount it with each driver and time
workloads that isolate union costs. Every run gets a fresh mount, an empty
upper layer and dropped caches; each result is checked, so a driver showing a
wrong tree is flagged. Prints a Markdown table; --json and --plot write the
report and an SVG plot.

Workloads: ` + strings.Join(bench.WorkloadNames(), ", "),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var spec bench.Spec
			switch size {
			case "default":
				spec = bench.DefaultSpec()
			case "small":
				spec = bench.SmallSpec()
			default:
				return fmt.Errorf("bench: --size must be small or default, not %q", size)
			}
			if layers > 0 {
				spec.Layers = layers
			}
			if files > 0 {
				spec.ScaleFiles(files)
			}
			if lfs == "" {
				lfs = "laminafs"
				if exe, err := os.Executable(); err == nil {
					if p := filepath.Join(filepath.Dir(exe), "laminafs"); benchExists(p) {
						lfs = p
					}
				}
			}
			// Fail now, not after half an hour of measuring.
			for _, out := range []string{jsonOut, plotOut} {
				if out == "" {
					continue
				}
				if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
					return fmt.Errorf("bench: cannot write %s: no directory %s", out, filepath.Dir(out))
				}
			}
			var ds []driver.Driver
			for _, name := range benchList(drivers) {
				d, err := driver.ByName(name, lfs)
				if err != nil {
					return fmt.Errorf("bench: %w", err)
				}
				ds = append(ds, d)
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			cfg := bench.Config{
				Spec:         spec,
				Dir:          dir,
				Drivers:      ds,
				Workloads:    benchList(workloads),
				Runs:         runs,
				Worker:       []string{exe, "bench", "worker"},
				NoDropCaches: noDrop,
			}
			if benchTerminal(app.Stderr) {
				cfg.Progress = app.Stderr
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Run(ctx, cfg)
			if err != nil {
				return err
			}
			if jsonOut != "" {
				if err := benchWrite(jsonOut, rep.WriteJSON); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
			}
			if plotOut != "" {
				if err := benchWrite(plotOut, rep.WritePlot); err != nil {
					return fmt.Errorf("bench: %w", err)
				}
			}
			for _, d := range rep.Drivers {
				if !d.Available {
					fmt.Fprintf(app.Stdout, "%s\n", d.Note)
				}
			}
			return rep.WriteTable(app.Stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&drivers, "drivers", strings.Join(driver.Names(), ","), "drivers to measure, comma-separated")
	f.StringVar(&workloads, "workloads", "", "workloads to run, comma-separated (default all)")
	f.StringVar(&size, "size", "default", "fixture size: small or default")
	f.IntVar(&layers, "layers", 0, "lower layers in the fixture (default 3)")
	f.IntVar(&files, "files", 0, "files in the fixture's tree; other counts scale with it")
	f.IntVar(&runs, "runs", 3, "runs per driver and workload")
	f.StringVar(&jsonOut, "json", "", "write the report as JSON to `FILE`")
	f.StringVar(&plotOut, "plot", "", "write an SVG plot to `FILE`")
	f.StringVar(&dir, "dir", "/var/tmp/lamina-bench", "scratch directory (fixture, mounts); one filesystem")
	f.StringVar(&lfs, "laminafs", "", "laminafs binary (default: next to lamina, else $PATH)")
	f.BoolVar(&noDrop, "no-drop-caches", false, "do not drop the page cache before each run")

	worker := &cobra.Command{
		Use:    "worker OP ROOT [ARG...]",
		Short:  "Run one benchmark operation (used by lamina bench)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := bench.WorkerMain(args, app.Stdin, app.Stdout); code != 0 {
				return &StatusError{Code: code}
			}
			return nil
		},
	}
	worker.DisableFlagParsing = true
	cmd.AddCommand(worker)
	return []*cobra.Command{cmd}
}

func benchList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func benchExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// benchTerminal reports whether w is a terminal, so progress is shown there
// and not in a pipe or file.
func benchTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func benchWrite(path string, write func(w io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
