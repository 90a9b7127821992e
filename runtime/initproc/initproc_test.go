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
	pb, _ := os.ReadFile(passwd)
	gb, _ := os.ReadFile(group)
	// The files as init reads them, and as the monitor hands them over.
	lookups := map[string]func(string) (execUser, error){
		"files":    func(spec string) (execUser, error) { return lookupUser(spec, passwd, group) },
		"database": func(spec string) (execUser, error) { return lookupUserIn(spec, &UserDB{Passwd: pb, Group: gb}) },
	}
	for name, lookup := range lookups {
		for _, tc := range tests {
			t.Run(name+"/"+tc.spec, func(t *testing.T) {
				got, err := lookup(tc.spec)
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
	// Without the files (missing, or an empty database), only numbers
	// resolve, as root's defaults.
	missing := filepath.Join(dir, "none")
	for spec, want := range map[string]execUser{"": {Home: "/"}, "1000:50": {UID: 1000, GID: 50, Home: "/"}} {
		a, err1 := lookupUser(spec, missing, missing)
		b, err2 := lookupUserIn(spec, &UserDB{})
		if err1 != nil || err2 != nil || !reflect.DeepEqual(a, want) || !reflect.DeepEqual(b, want) {
			t.Errorf("%q without files: %+v, %v and %+v, %v; want %+v", spec, a, err1, b, err2, want)
		}
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

func TestTimerSlackArg(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want uint64
		ok   bool
	}{
		{[]string{"lamina-init", InitCommand}, 0, false},
		{[]string{"lamina-init", InitCommand, TimerSlackFlag + "50000"}, 50000, true},
		{[]string{"lamina-init", InitCommand, TimerSlackFlag + "0"}, 0, false},
		{[]string{"lamina-init", InitCommand, TimerSlackFlag + "x"}, 0, false},
		{[]string{"lamina-init", TimerSlackFlag + "50000"}, 0, false}, // not after InitCommand
	} {
		got, ok := timerSlackArg(tc.args)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%q: %d, %v; want %d, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}
