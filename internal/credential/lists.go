package credential

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
)

// Provenance and licences: data/README.md.
var (
	//go:embed data/common_passwords.txt
	commonPasswordsFile string
	//go:embed data/common_pins.txt
	commonPINsFile string
)

// sortedList is a strictly ascending list of entries. The data files are
// shipped sorted so loading is a split, and lookup a binary search over
// substrings of the embedded data, with no map to build or copy to hold.
type sortedList []string

// parseSortedList reads one entry per line, skipping blank lines and
// comments ("#" alone or followed by a space: "#name?" is a real password).
// An unsorted or duplicated entry is an error because binary search would
// silently miss entries.
func parseSortedList(name, data string) (sortedList, error) {
	out := make(sortedList, 0, strings.Count(data, "\n"))
	n := 0
	for line := range strings.Lines(data) {
		n++
		line = strings.TrimRight(line, "\r\n")
		if line == "" || line == "#" || strings.HasPrefix(line, "# ") {
			continue
		}
		if len(out) > 0 && line <= out[len(out)-1] {
			return nil, fmt.Errorf("credential: %s line %d: %q not after %q (file must be sorted, unique)",
				name, n, line, out[len(out)-1])
		}
		out = append(out, line)
	}
	return slices.Clip(out), nil
}

func (l sortedList) contains(s string) bool {
	_, found := slices.BinarySearch(l, s)
	return found
}
