package cli

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"
)

// stringArray parses and shows as pflag's StringArray does.
func TestStringArrayFlag(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-e", "A=1"},
		{"-e", "A=1,B=2", "--env", "C=3", "-eD=4", "--env=E"},
		{"--env", "", "-e", `"quoted",x`},
	} {
		ours, theirs := pflag.NewFlagSet("ours", pflag.ContinueOnError), pflag.NewFlagSet("theirs", pflag.ContinueOnError)
		var got, want []string
		stringArrayVarP(ours, &got, "env", "e", "Set environment variables")
		theirs.StringArrayVarP(&want, "env", "e", nil, "Set environment variables")
		if err := ours.Parse(args); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if err := theirs.Parse(args); err != nil {
			t.Fatalf("%q: pflag: %v", args, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %q, pflag's StringArray %q", args, got, want)
		}
		if u, w := ours.FlagUsages(), theirs.FlagUsages(); u != w {
			t.Errorf("%q: help %q, pflag's StringArray %q", args, u, w)
		}
	}
}
