package driver

import "fmt"

// Names lists the drivers ByName knows, in the order lamina bench runs them.
func Names() []string {
	return []string{"laminafs", "overlay", "fuse-overlayfs", "unionfs-fuse", "native"}
}

// ByName returns the driver called name. laminafsPath is the laminafs
// binary ("laminafs" looks it up in $PATH).
//
// The FUSE servers run in the foreground as children (-f), so that
// Unmount can wait until the server has gone rather than leave a
// daemonized process exiting behind the caller's back.
func ByName(name, laminafsPath string) (Driver, error) {
	switch name {
	case "laminafs":
		if laminafsPath == "" {
			laminafsPath = "laminafs"
		}
		return FUSEBinary{DriverName: "laminafs", Path: laminafsPath, Foreground: true}, nil
	case "overlay":
		return Overlay{}, nil
	case "fuse-overlayfs":
		return FUSEBinary{DriverName: "fuse-overlayfs", Path: "fuse-overlayfs", Foreground: true}, nil
	case "unionfs-fuse":
		return UnionFS{}, nil
	case "native":
		return Native{}, nil
	}
	return nil, fmt.Errorf("unknown driver %q (known: %v)", name, Names())
}
