// Package cli is the latchkey command: subcommands built from one table, and
// configuration from the environment with flags taking precedence.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strings"

	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/logging"
	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/store"
)

// Env gives the command its environment; os.LookupEnv in production.
type Env struct {
	Lookup  func(string) (string, bool)
	Stdout  io.Writer
	Stderr  io.Writer
	Version string
}

// ErrUsage marks a mistake in the command line; main exits with status 2.
var ErrUsage = errors.New("usage")

type runFunc func(ctx context.Context, env Env, cfg config.Config, args []string) error

type command struct {
	name    string
	args    string
	summary string
	// setup registers the command's own flags and returns its run function,
	// which reads them once they are parsed.
	setup func(fs *flag.FlagSet) runFunc
}

// plain is the setup of a command without flags of its own.
func plain(run runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return run }
}

func commands() []command {
	return []command{
		{"dev", "", "run everything in one process: migrations, embedded NATS, the HTTP API and every worker", plain(runDev)},
		{"serve", "", "run the HTTP API (ingress)", plain(runServe)},
		{"worker", "[ROLE…]", "run workers: tokens, mailer, notifier, campaigns, scheduler (default: all)", plain(runWorker)},
		{"migrate", "", "apply pending database migrations (safe to run concurrently)", plain(runMigrate)},
		{"admin-key", "create --name NAME [--domain DOMAIN]", "create an admin API key; it is printed once", adminKeySetup},
		{"bench", "[--quick] [--profile] [--layouts 1x1,2x2]", "run the load harness (needs PostgreSQL; see make bench)", benchSetup},
		{"version", "", "print the version", plain(func(_ context.Context, env Env, _ config.Config, _ []string) error {
			fmt.Fprintln(env.Stdout, "latchkey", env.Version)
			return nil
		})},
	}
}

// Run executes the command line args (without the program name).
func Run(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.Stdout)
		if len(args) == 0 {
			return ErrUsage
		}
		return nil
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		fs := flag.NewFlagSet("latchkey "+c.name, flag.ContinueOnError)
		fs.SetOutput(env.Stderr)
		settingByFlag := map[string]string{}
		for _, s := range config.Settings() {
			fs.String(s.Flag(), "", fmt.Sprintf("%s (env %s)", s.Help, s.Env()))
			settingByFlag[s.Flag()] = s.Name
		}
		rest := args[1:]
		run := c.setup(fs)
		if c.name == "admin-key" {
			if len(rest) == 0 || rest[0] != "create" {
				return fmt.Errorf("%w: latchkey admin-key create --name NAME [--domain DOMAIN]", ErrUsage)
			}
			rest = rest[1:]
		}
		if err := fs.Parse(rest); err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
		overrides := map[string]string{}
		fs.Visit(func(f *flag.Flag) {
			if name, ok := settingByFlag[f.Name]; ok {
				overrides[name] = f.Value.String()
			}
		})
		cfg, err := config.Load(env.Lookup, overrides)
		if err != nil {
			return fmt.Errorf("configuration: %w", err)
		}
		return run(ctx, env, cfg, fs.Args())
	}
	usage(env.Stderr)
	return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: latchkey COMMAND [FLAGS]")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %-38s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintln(w, "\nConfiguration comes from LATCHKEY_* environment variables; every one is also a flag")
	fmt.Fprintln(w, "(LATCHKEY_HTTP_ADDR is --http-addr). `latchkey COMMAND -h` lists them.")
}

func runDev(ctx context.Context, env Env, cfg config.Config, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: dev takes no arguments", ErrUsage)
	}
	log := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	a, err := app.Open(ctx, cfg, log, app.Options{Migrate: true})
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	handlers, err := a.Handlers()
	if err != nil {
		return err
	}
	workersDone := make(chan error, 1)
	go func() { workersDone <- a.RunWorkers(ctx, app.AllRoles(), handlers) }()
	err = a.Serve(ctx, cfg.HTTPAddr, a.Handler(), func(addr net.Addr) {
		fmt.Fprintf(env.Stdout, "\nLatchkey is running (Ctrl-C stops it).\n")
		fmt.Fprintf(env.Stdout, "  API:      http://%s\n", addr)
		if cfg.DevMailboxURL != "" {
			fmt.Fprintf(env.Stdout, "  Mailbox:  %s\n", cfg.DevMailboxURL)
		}
		fmt.Fprintf(env.Stdout, "  NATS:     %s\n", a.NATSURL())
		fmt.Fprintf(env.Stdout, "  Links in email point at %s\n\n", cfg.PublicBaseURL)
	})
	cancel()
	return errors.Join(err, <-workersDone)
}

// limitMemory gives the ingress a soft memory limit derived from its
// password hashing, unless the operator set GOMEMLIMIT. x/crypto/argon2
// allocates each hash's memory (19 MiB) afresh; left to GOGC alone, a login
// flood's heap grows to twice its live size (peak RSS 194–223 MiB with 1,000
// logins in flight on 2 cores). Twice the hashes' memory plus 64 MiB held it
// at 161–164 MiB without slowing ordinary logins, whose heap stays below it.
func limitMemory(env Env, a *app.App) {
	if _, set := env.Lookup("GOMEMLIMIT"); set {
		return
	}
	limit := 2*a.HashMemoryBound() + 64<<20
	debug.SetMemoryLimit(limit)
	a.Log.Info().Int64("bytes", limit).Msg("soft memory limit derived from password hashing (GOMEMLIMIT overrides)")
}

// servePprof runs the profile listener when LATCHKEY_PPROF_ADDR is set.
func servePprof(ctx context.Context, a *app.App, cfg config.Config) {
	if cfg.PprofAddr == "" {
		return
	}
	go func() {
		if err := a.Serve(ctx, cfg.PprofAddr, app.PprofHandler(), nil); err != nil {
			a.Log.Warn().Err(err).Msg("pprof listener")
		}
	}()
}

func runServe(ctx context.Context, env Env, cfg config.Config, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: serve takes no arguments", ErrUsage)
	}
	log := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	a, err := app.Open(ctx, cfg, log, app.Options{})
	if err != nil {
		return err
	}
	defer a.Close()
	limitMemory(env, a)
	servePprof(ctx, a, cfg)
	return a.Serve(ctx, cfg.HTTPAddr, a.Handler(), func(addr net.Addr) {
		log.Info().Str("addr", addr.String()).Msg("http api listening")
	})
}

func runWorker(ctx context.Context, env Env, cfg config.Config, args []string) error {
	roles, err := app.ParseRoles(args)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	log := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	a, err := app.Open(ctx, cfg, log, app.Options{})
	if err != nil {
		return err
	}
	defer a.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	servePprof(ctx, a, cfg)
	opsDone := make(chan error, 1)
	if cfg.OpsAddr != "" {
		go func() { opsDone <- a.Serve(ctx, cfg.OpsAddr, a.OpsHandler(), nil) }()
	} else {
		opsDone <- nil
	}
	handlers, err := a.Handlers()
	if err != nil {
		cancel()
		<-opsDone
		return err
	}
	err = a.RunWorkers(ctx, roles, handlers)
	cancel()
	return errors.Join(err, <-opsDone)
}

func runMigrate(ctx context.Context, env Env, cfg config.Config, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: migrate takes no arguments", ErrUsage)
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := migrate.Up(ctx, pool)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "schema at version %d (%d migrations applied)\n", res.To, res.Applied)
	return nil
}

func adminKeySetup(fs *flag.FlagSet) runFunc {
	name := fs.String("name", "", "a name for the key, e.g. who uses it")
	domain := fs.String("domain", "", "limit the key to this domain")
	return func(ctx context.Context, env Env, cfg config.Config, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%w: admin-key create takes only flags", ErrUsage)
		}
		return runAdminKey(ctx, env, cfg, *name, *domain)
	}
}

func runAdminKey(ctx context.Context, env Env, cfg config.Config, name, domain string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("%w: --name is required", ErrUsage)
	}
	pool, err := store.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return err
	}
	defer pool.Close()
	st := store.New(pool)
	if err := migrate.Check(ctx, pool); err != nil {
		return err
	}
	key, created, err := adminkeys.Create(ctx, st, name, domain)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "admin key %s (%s) created; it is shown once, store it now:\n", created.ID, created.Name)
	fmt.Fprintln(env.Stdout, key)
	return nil
}

// OSEnv is the real process environment.
func OSEnv(version string) Env {
	return Env{Lookup: os.LookupEnv, Stdout: os.Stdout, Stderr: os.Stderr, Version: version}
}
