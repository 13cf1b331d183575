// Package cli is the latchkey command: subcommands on spf13/cobra, each with
// flags for the settings it uses, and configuration from the environment
// (internal/config) with flags taking precedence.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/logging"
)

// Env gives the command its environment; the process's own in production
// (OSEnv).
type Env struct {
	Lookup  func(string) (string, bool)
	Environ func() []string // "NAME=value" entries, to find unknown LATCHKEY_ names
	Stdout  io.Writer
	Stderr  io.Writer
	// Version, when set (-ldflags "-X main.version=…"), replaces the module
	// version of the build information.
	Version string
	// BuildInfo reads the build's stamp: debug.ReadBuildInfo.
	BuildInfo func() (*debug.BuildInfo, bool)
}

// OSEnv is the real process environment.
func OSEnv(version string) Env {
	return Env{
		Lookup: os.LookupEnv, Environ: os.Environ, Stdout: os.Stdout, Stderr: os.Stderr,
		Version: version, BuildInfo: debug.ReadBuildInfo,
	}
}

// ErrUsage marks a mistake in the command line; main exits with status 2.
var ErrUsage = errors.New("usage error")

// usageError is a mistake in the command line, with a pointer to the help
// of the command it was made in.
type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == ErrUsage }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	// cobra's suggestions ("Did you mean this?") follow on lines of their own.
	first, rest, _ := strings.Cut(fmt.Sprintf(format, args...), "\n")
	msg := first + fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
	if rest = strings.TrimSpace(rest); rest != "" {
		msg += "\n" + rest
	}
	return usageError{msg}
}

// runError carries the error of a command that ran, as opposed to one cobra
// found in the command line.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }

// Run executes the command line args (without the program name).
func Run(ctx context.Context, env Env, args []string) error {
	if env.Environ == nil {
		env.Environ = func() []string { return nil }
	}
	if env.BuildInfo == nil {
		env.BuildInfo = func() (*debug.BuildInfo, bool) { return nil, false }
	}
	root := newRoot(env)
	// A nil slice would make cobra read os.Args.
	root.SetArgs(append([]string{}, args...))
	cmd, err := root.ExecuteContextC(ctx)
	var ran runError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ran):
		return ran.err
	case errors.Is(err, ErrUsage):
		return err
	default:
		// cobra's own findings: an unknown command, a bad argument.
		return usagef(cmd, "%v", err)
	}
}

// cli holds what every command needs.
type cli struct {
	env   Env
	build buildVersion
}

func newRoot(env Env) *cobra.Command {
	c := &cli{env: env, build: readBuild(env)}
	root := &cobra.Command{
		Use:   "latchkey COMMAND",
		Short: "the credential-lifecycle service",
		Long: `Latchkey owns the credential lifecycle of a multi-tenant portal: password reset, welcome and
login-name emails, login with lockout, sessions, and the admin API.

Configuration comes from LATCHKEY_* environment variables; each is also a flag of the commands
that use it (LATCHKEY_HTTP_ADDR is --http-addr), and a flag wins over its variable. Booleans
accept true/false, yes/no and 1/0 in any case. An unknown LATCHKEY_ variable within two edits
of a setting's name (LATCHKEY_RESTE_TTL) stops start-up as a typo; other unknown ones are
logged as warnings. 'latchkey help COMMAND' lists a command's settings, types and defaults.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Shell completion would be one more command in every listing for a
		// server that operators start from unit files and manifests.
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		RunE: func(cmd *cobra.Command, args []string) error {
			if v, _ := cmd.Flags().GetBool("version"); v {
				fmt.Fprintln(env.Stdout, c.build)
				return nil
			}
			cmd.SetOut(env.Stderr)
			_ = cmd.Help()
			return usagef(cmd, "a command is needed")
		},
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.Flags().BoolP("version", "v", false, "print the version and VCS revision, as the version command does")
	root.SetUsageFunc(printUsage)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usagef(cmd, "%v", err) })
	root.AddCommand(c.devCommand(), c.serveCommand(), c.workerCommand(), c.migrateCommand(),
		c.adminKeyCommand(), c.benchCommand(), c.versionCommand())
	root.InitDefaultHelpCmd()
	for _, sub := range root.Commands() {
		if sub.Name() == "help" {
			sub.Short = "show a command's help: its flags and settings"
		}
	}
	return root
}

// settingAnnotation marks the flags that stand for a setting; its value is
// the setting's name.
const settingAnnotation = "latchkey/setting"

// addSettings gives cmd a flag for every setting the parts read. Their
// values are only collected here; config.Load validates them with the
// variables, so a bad flag and a bad variable are reported alike.
func addSettings(cmd *cobra.Command, parts config.Part) {
	// In the settings table's order, which groups related settings.
	cmd.Flags().SortFlags = false
	for _, s := range config.SettingsOf(parts) {
		// Backquotes mark code in the README's table; pflag would take the
		// first quoted word for the value's name and garble the line.
		help := strings.ReplaceAll(s.Help, "`", "") + " [" + s.Env() + "]"
		var v pflag.Value = &settingValue{value: s.Default, typ: s.Type}
		if s.Type == "bool" {
			v = &boolSettingValue{settingValue{value: s.Default, typ: s.Type}}
		}
		f := cmd.Flags().VarPF(v, s.Flag(), "", help)
		if s.Type == "bool" {
			f.NoOptDefVal = "true"
		}
		f.Annotations = map[string][]string{settingAnnotation: {s.Name}}
	}
}

// settingValue holds a setting's flag as typed; it is parsed with the
// environment by config.Load.
type settingValue struct {
	value string
	typ   string
}

func (v *settingValue) String() string     { return v.value }
func (v *settingValue) Set(s string) error { v.value = s; return nil }
func (v *settingValue) Type() string       { return v.typ }

// boolSettingValue lets a boolean setting's flag stand alone (--unlock-on-reset).
type boolSettingValue struct{ settingValue }

func (*boolSettingValue) IsBoolFlag() bool { return true }

// boolValue is a command's own boolean flag, read like every boolean
// setting (config.ParseBool).
type boolValue bool

func (b *boolValue) String() string { return fmt.Sprint(bool(*b)) }
func (b *boolValue) Set(s string) error {
	v, err := config.ParseBool(s)
	*b = boolValue(v)
	return err
}
func (*boolValue) Type() string     { return "bool" }
func (*boolValue) IsBoolFlag() bool { return true }

func addBool(fs *pflag.FlagSet, name, usage string) *boolValue {
	v := new(boolValue)
	fs.VarPF(v, name, "", usage).NoOptDefVal = "true"
	return v
}

// load reads the configuration (flags of cmd over the environment), reports
// unknown LATCHKEY_ variables and builds the logger.
func (c *cli) load(cmd *cobra.Command) (config.Config, zerolog.Logger, error) {
	overrides := map[string]string{}
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if name := f.Annotations[settingAnnotation]; len(name) == 1 {
			overrides[name[0]] = f.Value.String()
		}
	})
	warnings, namesErr := config.CheckNames(c.env.Environ())
	cfg, err := config.Load(c.env.Lookup, overrides)
	if err = errors.Join(namesErr, err); err != nil {
		return cfg, zerolog.Nop(), fmt.Errorf("configuration: %w", err)
	}
	log := logging.New(c.env.Stderr, logging.Options{
		Level: cfg.LogLevel, Format: cfg.LogFormat, Color: logging.ColorFor(c.env.Stderr, c.env.Lookup),
	})
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	return cfg, log, nil
}

// run adapts a command body to cobra, marking its error as the command's
// own rather than a mistake in the command line.
func run(body func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := body(cmd, args); err != nil {
			if errors.Is(err, ErrUsage) {
				return err
			}
			return runError{err}
		}
		return nil
	}
}

// usageWidth is where help text wraps; fixed, so help reads the same in a
// terminal, a pager and the README.
const usageWidth = 100

// printUsage writes a command's usage: its subcommands, its own flags, then
// the settings it reads, each with type, default and environment variable.
func printUsage(cmd *cobra.Command) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage:\n  %s\n", cmd.UseLine())
	if cmd.HasExample() {
		fmt.Fprintf(&b, "\nExamples:\n%s\n", cmd.Example)
	}
	if cmd.HasAvailableSubCommands() {
		b.WriteString("\nCommands:\n")
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() || sub.Name() == "help" {
				fmt.Fprintf(&b, "  %-*s  %s\n", cmd.NamePadding(), sub.Name(), sub.Short)
			}
		}
	}
	own := pflag.NewFlagSet("own", pflag.ContinueOnError)
	settings := pflag.NewFlagSet("settings", pflag.ContinueOnError)
	own.SortFlags, settings.SortFlags = false, false
	anyBool := false
	cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[settingAnnotation]; ok {
			settings.AddFlag(f)
			anyBool = anyBool || f.Value.Type() == "bool"
		} else {
			own.AddFlag(f)
		}
	})
	if own.HasAvailableFlags() {
		fmt.Fprintf(&b, "\nFlags:\n%s", own.FlagUsagesWrapped(usageWidth))
	}
	if settings.HasAvailableFlags() {
		b.WriteString("\nSettings: a flag wins over its [LATCHKEY_ variable], which wins over the default.\n")
		if anyBool {
			b.WriteString("A boolean is on with --flag alone; --flag=false (or no, 0) turns it off.\n")
		}
		b.WriteString(settings.FlagUsagesWrapped(usageWidth))
	}
	if cmd.HasAvailableSubCommands() {
		fmt.Fprintf(&b, "\nRun '%s COMMAND --help' for a command's flags and settings.\n", cmd.CommandPath())
	}
	_, err := io.WriteString(cmd.OutOrStderr(), b.String())
	return err
}
