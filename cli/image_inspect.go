package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lamina-project/lamina/layerstore"
	"github.com/spf13/cobra"
)

// inspectImage is docker's image inspect document.
type inspectImage struct {
	ID            string            `json:"Id"`
	RepoTags      []string          `json:"RepoTags"`
	RepoDigests   []string          `json:"RepoDigests"`
	Parent        string            `json:"Parent"`
	Comment       string            `json:"Comment"`
	Created       string            `json:"Created"`
	DockerVersion string            `json:"DockerVersion"`
	Author        string            `json:"Author"`
	Config        any               `json:"Config"`
	Architecture  string            `json:"Architecture"`
	Os            string            `json:"Os"`
	Size          int64             `json:"Size"`
	GraphDriver   graphDriver       `json:"GraphDriver"`
	RootFS        inspectRootFS     `json:"RootFS"`
	Metadata      map[string]string `json:"Metadata"`
}

type graphDriver struct {
	Data map[string]string `json:"Data"`
	Name string            `json:"Name"`
}

type inspectRootFS struct {
	Type   string   `json:"Type"`
	Layers []string `json:"Layers"`
}

func newImageInspectCmd(app *App) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "inspect [OPTIONS] IMAGE [IMAGE...]",
		Short: "Display detailed information on one or more images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore(app)
			if err != nil {
				return err
			}
			defer s.Close()
			var docs []any
			var errs []error
			for _, ref := range args {
				img, err := s.ResolveImage(ref)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				docs = append(docs, toInspect(s, img))
			}
			if err := writeInspect(app, format, docs); err != nil {
				return err
			}
			return errors.Join(errs...)
		},
	}
	c.Flags().StringVarP(&format, "format", "f", "", "Format output using a custom template")
	return c
}

func toInspect(s *layerstore.Store, img *layerstore.Image) inspectImage {
	doc := inspectImage{
		ID:           img.ID.String(),
		RepoTags:     img.RepoTags,
		RepoDigests:  []string{},
		Parent:       string(img.Parent),
		Created:      img.Created.Format("2006-01-02T15:04:05.999999999Z07:00"),
		Author:       img.Config.Author,
		Config:       img.Config.Config,
		Architecture: img.Config.Architecture,
		Os:           img.Config.OS,
		Size:         img.Size,
		GraphDriver:  graphDriver{Name: "laminafs", Data: map[string]string{}},
		RootFS:       inspectRootFS{Type: "layers", Layers: []string{}},
		Metadata:     map[string]string{},
	}
	if n := len(img.Config.History); n > 0 {
		doc.Comment = img.Config.History[n-1].Comment
	}
	for _, d := range img.Config.RootFS.DiffIDs {
		doc.RootFS.Layers = append(doc.RootFS.Layers, d.String())
	}
	if dirs := img.LowerDirs(s); len(dirs) > 0 {
		doc.GraphDriver.Data["UpperDir"] = dirs[0]
		if len(dirs) > 1 {
			doc.GraphDriver.Data["LowerDir"] = strings.Join(dirs[1:], ":")
		}
	}
	if !img.LastTagTime.IsZero() {
		doc.Metadata["LastTagTime"] = img.LastTagTime.Format("2006-01-02T15:04:05.999999999Z07:00")
	}
	return doc
}

// writeInspect prints inspect documents as docker does: through the
// --format template, each document round-tripped through JSON so that
// templates see docker's field names ({{.Id}}, {{.RootFS.Layers}}), or
// else as one indented JSON array.
func writeInspect(app *App, format string, docs []any) error {
	if format != "" {
		f, err := newFormatter(app.Stdout, format, nil)
		if err != nil {
			return err
		}
		for _, d := range docs {
			var m map[string]any
			b, err := json.Marshal(d)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			if err := f.row(m); err != nil {
				return err
			}
		}
		return nil
	}
	if docs == nil {
		docs = []any{}
	}
	b, err := json.MarshalIndent(docs, "", "    ")
	if err != nil {
		return err
	}
	fmt.Fprintf(app.Stdout, "%s\n", b)
	return nil
}
