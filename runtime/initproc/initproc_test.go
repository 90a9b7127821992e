package initproc

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLookupUser(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1000::/home/app:/bin/sh\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\napp:x:1000:\nwheel:x:10:app,other\nstaff:x:50:\n"), 0o644)
	tests := []struct {
		spec string
		want execUser
		err  string
	}{
		{"", execUser{UID: 0, GID: 0, Home: "/root"}, ""},
		{"root", execUser{UID: 0, GID: 0, Home: "/root"}, ""},
		{"app", execUser{UID: 1000, GID: 1000, Groups: []int{10}, Home: "/home/app"}, ""},
		{"1000", execUser{UID: 1000, GID: 1000, Groups: []int{10}, Home: "/home/app"}, ""},
		{"app:staff", execUser{UID: 1000, GID: 50, Home: "/home/app"}, ""},
		{"app:77", execUser{UID: 1000, GID: 77, Home: "/home/app"}, ""},
		{"4242", execUser{UID: 4242, GID: 0, Home: "/"}, ""},
		{"4242:4343", execUser{UID: 4242, GID: 4343, Home: "/"}, ""},
		{"nosuch", execUser{}, "unable to find user nosuch"},
		{"app:nosuch", execUser{}, "unable to find group nosuch"},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := lookupUser(tc.spec, passwd, group)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseMountOptions(t *testing.T) {
	flags, prop, data := parseMountOptions([]string{"nosuid", "ro", "rw", "rbind", "rprivate", "mode=755", "size=1k"})
	if flags != unix.MS_NOSUID|unix.MS_BIND|unix.MS_REC {
		t.Errorf("flags %#x", flags)
	}
	if len(prop) != 1 || prop[0] != unix.MS_PRIVATE|unix.MS_REC {
		t.Errorf("propagation %v", prop)
	}
	if data != "mode=755,size=1k" {
		t.Errorf("data %q", data)
	}
}
