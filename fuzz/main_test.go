package fuzz

import (
	"os"
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBinaries()
	os.Exit(code)
}
