package layerstore

import (
	"time"
)

// HistoryEntry is one row of `history`, newest first.
type HistoryEntry struct {
	// ID is the image this step produced, or "<missing>" when that image
	// is not in the store (an imported or pulled image's lower steps).
	ID        string
	Created   time.Time
	CreatedBy string
	Comment   string
	Size      int64
	Tags      []string
}

// MissingID is the ID shown for steps that are not themselves images.
const MissingID = "<missing>"

// History is docker's history of the image ref: one row per config history
// entry, each non-empty one sized by its layer, and IDs filled in down the
// local parent chain (daemon/images/image_history.go).
func (s *Store) History(ref string) ([]HistoryEntry, error) {
	img, err := s.ResolveImage(ref)
	if err != nil {
		return nil, err
	}
	var rows []HistoryEntry
	li := 0
	for _, h := range img.Config.History {
		e := HistoryEntry{ID: MissingID, CreatedBy: h.CreatedBy, Comment: h.Comment}
		if h.Created != nil {
			e.Created = *h.Created
		}
		if !h.EmptyLayer && li < len(img.Layers) {
			e.Size = img.Layers[li].Size
			li++
		}
		rows = append([]HistoryEntry{e}, rows...)
	}
	if len(img.Config.History) == 0 {
		// A config without history: one row per layer, so sizes still show.
		for _, l := range img.Layers {
			rows = append([]HistoryEntry{{ID: MissingID, Created: l.Created, Size: l.Size}}, rows...)
		}
	}
	cur := img
	for i := range rows {
		rows[i].ID = cur.ID.String()
		rows[i].Tags = cur.RepoTags
		if cur.Parent == "" {
			break
		}
		if cur, err = s.ResolveImage(cur.Parent.String()); err != nil {
			break
		}
	}
	return rows, nil
}
