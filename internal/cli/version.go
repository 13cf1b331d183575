package cli

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// buildVersion is what the build stamped into the binary.
type buildVersion struct {
	Version  string // the module version: a tag, a pseudo-version from VCS, or (devel)
	Revision string // the VCS commit, empty when the build had no VCS information
	Time     string // the commit's time (RFC 3339)
	Modified bool   // the work tree had uncommitted changes
	Go       string
}

// readBuild reads the build information; env.Version (stamped with -ldflags)
// wins over the module version.
func readBuild(env Env) buildVersion {
	b := buildVersion{Version: "(devel)", Go: runtime.Version()}
	if info, ok := env.BuildInfo(); ok && info != nil {
		if info.Main.Version != "" {
			b.Version = info.Main.Version
		}
		if info.GoVersion != "" {
			b.Go = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if env.Version != "" {
		b.Version = env.Version
	}
	return b
}

// String is the line `latchkey version` prints, e.g.
// "latchkey v0.0.0-20261129225304-068731db79d5 revision 068731db79d5e0b959bbbecb6152e9c71a562308 (2026-11-29T22:53:04Z) go1.26.8".
func (b buildVersion) String() string {
	s := "latchkey " + b.Version
	if b.Revision == "" {
		s += " (no VCS revision: built outside a git clone, or with -buildvcs=false)"
	} else {
		s += " revision " + b.Revision
		if b.Time != "" {
			s += " (" + b.Time + ")"
		}
		if b.Modified {
			s += " with uncommitted changes"
		}
	}
	return s + " " + b.Go
}

// shortRevision is the revision as logs show it.
func (b buildVersion) shortRevision() string {
	r := b.Revision
	if len(r) > 12 {
		r = r[:12]
	}
	if r != "" && b.Modified {
		r += "+dirty"
	}
	return r
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version and VCS revision stamped by the build",
		Long: `Print the module version and the VCS revision that the Go toolchain stamped into the binary
(debug.ReadBuildInfo). A binary built from a git clone carries both; one built without VCS
information (a container build without .git, -buildvcs=false) says so.`,
		Args: cobra.NoArgs,
		RunE: run(func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(c.env.Stdout, c.build)
			return err
		}),
	}
}
