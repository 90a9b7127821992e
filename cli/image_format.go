package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/docker/go-units"
)

// row is one line of a listing: field name → value, the names docker's
// --format templates use ({{.ID}}, {{.Repository}}, ...).
type row map[string]any

// formatter prints rows as docker does: a table (format "table ..."),
// one JSON object per line (format "json"), or a Go template per row.
type formatter struct {
	w     io.Writer
	tw    *tabwriter.Writer
	tmpl  *template.Template
	json  bool
	table bool
}

// templateFuncs are the helpers docker offers in --format templates.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"truncate": func(s string, n int) string {
		if len(s) > n {
			return s[:n]
		}
		return s
	},
	"pad": func(s string, l, r int) string {
		return strings.Repeat(" ", l) + s + strings.Repeat(" ", r)
	},
}

// newFormatter parses format. headers names the table columns by field;
// the header line is printed at once, so an empty table still has one.
func newFormatter(w io.Writer, format string, headers map[string]string) (*formatter, error) {
	f := &formatter{w: w}
	switch {
	case format == "json":
		f.json = true
		return f, nil
	case strings.HasPrefix(format, "table"):
		f.table = true
		format = strings.TrimSpace(strings.TrimPrefix(format, "table"))
		f.tw = tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)
	}
	format = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format)
	t, err := template.New("format").Funcs(templateFuncs).Option("missingkey=zero").Parse(format + "\n")
	if err != nil {
		return nil, fmt.Errorf("template parsing error: %w", err)
	}
	f.tmpl = t
	if f.table {
		h := row{}
		for k, v := range headers {
			h[k] = v
		}
		if err := f.tmpl.Execute(f.tw, h); err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
	}
	return f, nil
}

func (f *formatter) row(r row) error {
	switch {
	case f.json:
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(f.w, "%s\n", b)
		return err
	case f.table:
		return f.tmpl.Execute(f.tw, r)
	}
	return f.tmpl.Execute(f.w, r)
}

func (f *formatter) flush() error {
	if f.tw != nil {
		return f.tw.Flush()
	}
	return nil
}

// humanSize is docker's size column (SI units, 3 significant digits).
func humanSize(n int64) string { return units.HumanSizeWithPrecision(float64(n), 3) }

// since is docker's CREATED column: "2 hours ago", "About a minute ago".
func since(t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	return units.HumanDuration(time.Now().UTC().Sub(t)) + " ago"
}

// createdAt is docker's CreatedAt field format.
func createdAt(t time.Time) string { return t.Local().Format("2006-01-02 15:04:05 -0700 MST") }

// ellipsis shortens s to n runes with a trailing "…", as docker's
// formatter.Ellipsis does for history's CREATED BY.
func ellipsis(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
