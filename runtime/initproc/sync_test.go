package initproc

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestSendSyncWire checks that a message sent without a spec or an exec
// request (what init sends: its encoding skips SyncMsg's type) is the
// bytes SyncMsg encodes to, and comes back as sent.
func TestSendSyncWire(t *testing.T) {
	tests := []struct {
		name string
		msg  SyncMsg
	}{
		{"ready", SyncMsg{Type: "ready"}},
		{"start", SyncMsg{Type: "start"}},
		{"pty", SyncMsg{Type: "pty"}},
		{"error", SyncMsg{Type: "error", Error: `exec: "nope": not found`, Code: 127}},
		{"protocol and filter", SyncMsg{Type: "x", Protocol: Protocol, Filter: []byte{1, 2, 3}}},
		{"bootstrap", SyncMsg{Type: "bootstrap", Protocol: Protocol, Spec: &specs.Spec{Hostname: "h", Process: &specs.Process{Args: []string{"true"}}}}},
		{"user database", SyncMsg{Type: "x", UserDB: &UserDB{Passwd: []byte("root:x:0:0::/root:/bin/sh\n")}}},
		{"exec", SyncMsg{Type: "exec", Exec: &ExecRequest{Process: &specs.Process{Args: []string{"sh"}}, User: "1000"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, child, err := NewSyncPair()
			if err != nil {
				t.Fatal(err)
			}
			defer parent.Close()
			defer child.Close()
			if err := SendSync(child, tt.msg); err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1<<16)
			n, err := parent.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf[:n], want) {
				t.Fatalf("sent %s, want %s", buf[:n], want)
			}
			if err := SendSync(child, tt.msg); err != nil {
				t.Fatal(err)
			}
			got, files, err := RecvSync(parent)
			if err != nil || len(files) != 0 {
				t.Fatalf("receive: %v, %d files", err, len(files))
			}
			if !reflect.DeepEqual(got, tt.msg) {
				t.Fatalf("received %+v, want %+v", got, tt.msg)
			}
		})
	}
	parent, child, err := NewSyncPair()
	if err != nil {
		t.Fatal(err)
	}
	defer parent.Close()
	child.Close()
	if _, _, err := RecvSync(parent); err != io.EOF {
		t.Fatalf("closed peer: %v, want io.EOF", err)
	}
}

// TestWarmBootstrap checks that the warm-up sample still decodes into a
// bootstrap with the parts of a spec the monitor sends: a field renamed
// in the spec's package would leave part of the decoder cold.
func TestWarmBootstrap(t *testing.T) {
	var m SyncMsg
	dec := json.NewDecoder(bytes.NewReader(warmBootstrap))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	s := m.Spec
	if m.Type != "bootstrap" || s == nil || s.Process == nil || s.Process.Capabilities == nil || len(s.Process.Rlimits) != 1 ||
		s.Root == nil || len(s.Mounts) != 1 || s.Linux == nil || s.Linux.Resources == nil || s.Linux.Resources.Pids == nil ||
		len(s.Linux.Namespaces) != 1 || len(s.Linux.MaskedPaths) != 1 || len(s.Linux.ReadonlyPaths) != 1 {
		t.Fatalf("sample decodes to %+v", m)
	}
}

// TestSyncHeaderFields keeps syncHeader in step with SyncMsg: every field
// of SyncMsg but those that make SendSync encode the whole message is in
// syncHeader, with the same JSON tag, or init would drop it unseen.
func TestSyncHeaderFields(t *testing.T) {
	full := map[string]bool{"Spec": true, "Exec": true, "UserDB": true}
	h := reflect.TypeOf(syncHeader{})
	m := reflect.TypeOf(SyncMsg{})
	for i := 0; i < m.NumField(); i++ {
		f := m.Field(i)
		if full[f.Name] {
			continue
		}
		hf, ok := h.FieldByName(f.Name)
		if !ok || hf.Tag.Get("json") != f.Tag.Get("json") || hf.Type != f.Type {
			t.Errorf("SyncMsg.%s (%s, %q) is not in syncHeader as it is", f.Name, f.Type, f.Tag.Get("json"))
		}
	}
	if h.NumField() != m.NumField()-len(full) {
		t.Errorf("syncHeader has %d fields, SyncMsg %d of which %d are sent whole", h.NumField(), m.NumField(), len(full))
	}
}
