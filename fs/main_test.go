package fs_test

import (
	"testing"

	"github.com/lamina-project/lamina/internal/testutil"
)

// TestMain removes the binaries the tests built.
func TestMain(m *testing.M) { testutil.Main(m) }
