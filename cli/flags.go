package cli

import (
	"strings"

	"github.com/spf13/pflag"
)

// stringArray is a repeatable string flag that behaves as pflag's
// StringArray (each use adds one value, commas and all; the help calls it
// "stringArray"), registered without StringArray's cost: pflag formats
// every flag's default when it is added, and StringArray's goes through
// encoding/csv, a 4 KB buffer per flag. The run command's nine of them
// took 0.5 ms of every lamina run's CPU.
type stringArray struct{ v *[]string }

// stringArrayVarP adds a stringArray flag bound to p (short may be "").
func stringArrayVarP(fl *pflag.FlagSet, p *[]string, name, short, usage string) {
	fl.VarP(stringArray{p}, name, short, usage)
}

func (a stringArray) Set(s string) error { *a.v = append(*a.v, s); return nil }

func (a stringArray) Type() string { return "stringArray" }

// String is what the help shows as the default: nothing for none.
func (a stringArray) String() string {
	if len(*a.v) == 0 {
		return ""
	}
	return "[" + strings.Join(*a.v, ",") + "]"
}
