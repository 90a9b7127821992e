package fs

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCommandLine(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		lower   []string
		upper   string
		work    string
		target  string
		fg, ro  bool
		warns   int
		wantErr string
	}{
		{name: "full", args: []string{"-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/m"},
			lower: []string{"/a", "/b"}, upper: "/u", work: "/w", target: "/m"},
		{name: "attached -o and foreground", args: []string{"-f", "-olowerdir=/a", "/m"},
			lower: []string{"/a"}, target: "/m", fg: true},
		{name: "several -o", args: []string{"-o", "lowerdir=/a", "-o", "upperdir=/u,workdir=/w,ro", "/m"},
			lower: []string{"/a"}, upper: "/u", work: "/w", target: "/m", ro: true},
		{name: "escaped colon and comma", args: []string{"-o", `lowerdir=/a\:b:/c\,d`, "/m"},
			lower: []string{"/a:b", "/c,d"}, target: "/m"},
		{name: "mount helper form", args: []string{"laminafs", "/m", "-o", "lowerdir=/a"},
			lower: []string{"/a"}, target: "/m"},
		{name: "unknown option warns", args: []string{"-o", "lowerdir=/a,lazytime,squash_to_root,frob=1", "/m"},
			lower: []string{"/a"}, target: "/m", warns: 2},
		{name: "debug implies foreground", args: []string{"-d", "-o", "lowerdir=/a", "/m"},
			lower: []string{"/a"}, target: "/m", fg: true},
		{name: "no mountpoint", args: []string{"-o", "lowerdir=/a"}, wantErr: "no mountpoint"},
		{name: "no lowerdir", args: []string{"/m"}, wantErr: "no lowerdir"},
		{name: "empty layer", args: []string{"-o", "lowerdir=/a::/b", "/m"}, wantErr: "empty layer"},
		{name: "upper without work", args: []string{"-o", "lowerdir=/a,upperdir=/u", "/m"}, wantErr: "needs workdir"},
		{name: "work without upper", args: []string{"-o", "lowerdir=/a,workdir=/w", "/m"}, wantErr: "needs upperdir"},
		{name: "dangling -o", args: []string{"/m", "-o"}, wantErr: "needs a value"},
		{name: "too many args", args: []string{"-o", "lowerdir=/a", "x", "y", "z"}, wantErr: "too many"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := ParseCommandLine(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cl.Config.Lower, tc.lower) || cl.Config.Upper != tc.upper || cl.Config.Work != tc.work {
				t.Errorf("config = %+v", cl.Config)
			}
			if cl.Target != tc.target || cl.Foreground != tc.fg || cl.Mount.ReadOnly != tc.ro {
				t.Errorf("target %q fg %v ro %v", cl.Target, cl.Foreground, cl.Mount.ReadOnly)
			}
			if len(cl.Warnings) != tc.warns {
				t.Errorf("warnings = %q, want %d", cl.Warnings, tc.warns)
			}
		})
	}
}
