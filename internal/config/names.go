package config

import (
	"fmt"
	"slices"
	"strings"
)

// toolVariables are the LATCHKEY_ variables that the scripts and tests around the
// binary read (deploy/local, deploy/compose.yaml, internal/testkit), not the
// binary itself. They are known names: setting one is never reported.
var toolVariables = []string{
	"LATCHKEY_TEST_DATABASE_URL", // internal/testkit: the PostgreSQL cluster of the tests
	"LATCHKEY_PG_DIR",            // deploy/local/pg.sh
	"LATCHKEY_PG_PORT",           // deploy/local/pg.sh
	"LATCHKEY_MAILDEV_DIR",       // deploy/local/maildev.sh
	"LATCHKEY_MAILDEV_SMTP_PORT", // deploy/local/maildev.sh, run.sh
	"LATCHKEY_MAILDEV_WEB_PORT",  // deploy/local/maildev.sh, run.sh
	"LATCHKEY_MAILDEV_VERSION",   // deploy/local/maildev.sh
	"LATCHKEY_RUN_CMD",           // deploy/local/run.sh
	"LATCHKEY_IMAGE",             // deploy/compose.yaml
	"LATCHKEY_HTTP_PORT",         // deploy/compose.yaml
}

// ToolVariables lists the LATCHKEY_ variables read by the scripts and tests
// around the binary rather than by the binary.
func ToolVariables() []string { return slices.Clone(toolVariables) }

// typoDistance is how many edits (insertions, deletions, substitutions,
// transpositions of neighbours) make an unknown name a typo of a setting's:
// RESTE_TTL is one from RESET_TTL.
const typoDistance = 2

// CheckNames looks at the names of the LATCHKEY_ variables in environ
// ("NAME=value" entries, as os.Environ gives them) that neither a setting nor
// the tooling reads. One within typoDistance edits of a setting's variable is
// taken for a typo of it and returned in err, naming the setting: a mistyped
// security setting (DISCLOSRE=uniform for DISCLOSURE) would otherwise leave its
// default in force without a word. Any other unknown name is returned as a
// warning, since it may be meant for another version of Latchkey (a shared
// ConfigMap during an upgrade); the warning names the nearest known variable
// (a setting or a tool's) when it is at most one edit further. Values are never looked at or echoed.
func CheckNames(environ []string) (warnings []string, err error) {
	known := map[string]bool{}
	var settings []string
	for _, s := range Settings() {
		known[s.Env()] = true
		settings = append(settings, s.Env())
	}
	for _, t := range toolVariables {
		known[t] = true
	}
	var typos []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, Prefix) || known[name] {
			continue
		}
		if near, d := nearest(name, settings); d <= typoDistance {
			typos = append(typos, fmt.Sprintf("%s is not a setting: did you mean %s?", name, strings.Join(near, " or ")))
			continue
		}
		warning := name + " is not a setting of this version; it is ignored"
		all := append(slices.Clone(settings), toolVariables...)
		if near, d := nearest(name, all); d <= typoDistance+1 {
			warning += fmt.Sprintf(" (did you mean %s?)", strings.Join(near, " or "))
		}
		warnings = append(warnings, warning)
	}
	slices.Sort(typos)
	slices.Sort(warnings)
	if len(typos) > 0 {
		return warnings, fmt.Errorf("%s (a LATCHKEY_ variable within %d edits of a setting's name is taken for a typo and stops start-up)",
			strings.Join(typos, "; "), typoDistance)
	}
	return warnings, nil
}

// nearest returns the candidates closest to name (several when they tie:
// PIN_MAN_LENGTH is as near PIN_MIN_LENGTH as PIN_MAX_LENGTH) and their
// distance.
func nearest(name string, candidates []string) ([]string, int) {
	var best []string
	bestD := int(^uint(0) >> 1)
	for _, c := range candidates {
		switch d := editDistance(name, c); {
		case d < bestD:
			best, bestD = []string{c}, d
		case d == bestD:
			best = append(best, c)
		}
	}
	return best, bestD
}

// editDistance is the optimal string alignment distance between a and b:
// Levenshtein's insertions, deletions and substitutions, plus transpositions
// of adjacent characters, the commonest typo. Names are ASCII, so it works
// on bytes.
func editDistance(a, b string) int {
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
