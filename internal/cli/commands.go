package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/store"
)

// The parts of a process each command runs, which decide the settings its
// help lists and its flags accept.
const (
	oneShotParts = config.PartLog | config.PartDatabase | config.PartPool
	serveParts   = oneShotParts | config.PartService | config.PartIngress
	workerParts  = oneShotParts | config.PartService | config.PartWorkers | config.PartOps
	devParts     = oneShotParts | config.PartService | config.PartIngress | config.PartWorkers | config.PartDev
	benchParts   = config.PartLog | config.PartDatabase
)

// ingressRole is how logs name the HTTP API among the worker roles.
const ingressRole = "ingress"

func (c *cli) serveCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the HTTP API (ingress)",
		Long: `Run the HTTP API: the public and admin endpoints, /healthz, /readyz and /metrics. It refuses to
start on a database whose schema is older than the binary ('latchkey migrate' first). Any number
of serve processes run side by side against one PostgreSQL and one NATS JetStream.`,
		Args: cobra.NoArgs,
	}
	addSettings(cmd, serveParts)
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) (err error) {
		cfg, log, err := c.load(cmd)
		if err != nil {
			return err
		}
		// Deferred first, so it runs last, when everything is released.
		life := c.lifecycle(log)
		defer life.down(&err)
		ctx := cmd.Context()
		a, err := app.Open(ctx, cfg, log, app.Options{})
		if err != nil {
			return err
		}
		defer a.Close()
		limitMemory(c.env, a)
		ln, err := app.Listen(cfg.HTTPAddr, "HTTP_ADDR")
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		pprof := servePprof(ctx, &wg, a, cfg)
		life.up([]string{ingressRole}, a, ln.Addr().String(), "", pprof)
		return a.Serve(ctx, ln, a.Handler())
	})
	return cmd
}

func (c *cli) workerCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "worker [ROLE...]",
		Short: "run worker roles: tokens, mailer, notifier, campaigns, scheduler (default: all)",
		Long: `Run worker roles, any subset per process (default: all), as separate arguments or comma-separated:
  tokens     mints reset, welcome and login-name tokens
  mailer     renders and sends email over SMTP
  notifier   tells users their password changed
  campaigns  bulk welcome emails
  scheduler  the dated rollout (driven by the clock)
Processes with the same role share its durable consumer, so adding processes splits the work.`,
		Example: "  latchkey worker tokens mailer\n  latchkey worker notifier,campaigns,scheduler",
		Args: func(_ *cobra.Command, args []string) error {
			_, err := app.ParseRoles(args)
			return err
		},
	}
	addSettings(cmd, workerParts)
	cmd.RunE = run(func(cmd *cobra.Command, args []string) (err error) {
		roles, err := app.ParseRoles(args)
		if err != nil {
			return err
		}
		cfg, log, err := c.load(cmd)
		if err != nil {
			return err
		}
		life := c.lifecycle(log)
		defer life.down(&err)
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		a, err := app.Open(ctx, cfg, log, app.Options{})
		if err != nil {
			return err
		}
		defer a.Close()
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel() // before the wait: the pprof listener stops with the workers
		var ops string
		opsDone := make(chan error, 1)
		if cfg.OpsAddr != "" {
			ln, err := app.Listen(cfg.OpsAddr, "OPS_ADDR")
			if err != nil {
				return err
			}
			ops = ln.Addr().String()
			go func() {
				err := a.Serve(ctx, ln, a.OpsHandler())
				if err != nil {
					cancel() // a worker whose health cannot be seen stops
				}
				opsDone <- err
			}()
		} else {
			opsDone <- nil
		}
		pprof := servePprof(ctx, &wg, a, cfg)
		handlers, err := a.Handlers()
		if err != nil {
			cancel()
			return errors.Join(err, <-opsDone)
		}
		names := make([]string, len(roles))
		for i, r := range roles {
			names[i] = string(r)
		}
		life.up(names, a, "", ops, pprof)
		err = a.RunWorkers(ctx, roles, handlers)
		cancel()
		return errors.Join(err, <-opsDone)
	})
	return cmd
}

func (c *cli) migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "apply pending database migrations (safe to run concurrently)",
		Long: `Apply the pending database migrations embedded in the binary, under a PostgreSQL advisory lock,
so several processes may run it at once. serve and worker refuse to start on an older schema.`,
		Args: cobra.NoArgs,
	}
	addSettings(cmd, oneShotParts)
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		cfg, _, err := c.load(cmd)
		if err != nil {
			return err
		}
		pool, err := store.Open(cmd.Context(), cfg.DatabaseURL, cfg.DBMaxConns)
		if err != nil {
			return err
		}
		defer pool.Close()
		res, err := migrate.Up(cmd.Context(), pool)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.env.Stdout, "schema at version %d (%d migrations applied)\n", res.To, res.Applied)
		return nil
	})
	return cmd
}

func (c *cli) adminKeyCommand() *cobra.Command {
	parent := &cobra.Command{
		Use:   "admin-key COMMAND",
		Short: "manage admin API keys",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(cmd, "admin-key needs a subcommand: create")
			}
			return usagef(cmd, "unknown admin-key subcommand %q", args[0])
		},
	}
	create := &cobra.Command{
		Use:   "create --name NAME [--domain DOMAIN]",
		Short: "create an admin API key; it is printed once",
		Long: `Create an admin API key and print it once on standard output; only its hash is stored. A key
with --domain can act only on that domain's users.`,
		Example: "  latchkey admin-key create --name ops\n  latchkey admin-key create --name acme-portal --domain acme.11111.service",
		Args:    cobra.NoArgs,
	}
	name := create.Flags().String("name", "", "a name for the key, e.g. who uses it (required)")
	domain := create.Flags().String("domain", "", "limit the key to this domain")
	addSettings(create, oneShotParts)
	create.RunE = run(func(cmd *cobra.Command, _ []string) error {
		if strings.TrimSpace(*name) == "" {
			return usagef(cmd, "--name is required")
		}
		cfg, _, err := c.load(cmd)
		if err != nil {
			return err
		}
		ctx := cmd.Context()
		pool, err := store.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
		if err != nil {
			return err
		}
		defer pool.Close()
		st := store.New(pool)
		if err := migrate.Check(ctx, pool); err != nil {
			return err
		}
		key, created, err := adminkeys.Create(ctx, st, *name, *domain)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.env.Stderr, "admin key %s (%s) created; it is shown once, store it now:\n", created.ID, created.Name)
		fmt.Fprintln(c.env.Stdout, key)
		return nil
	})
	parent.AddCommand(create)
	return parent
}

// lifecycle writes the two lines of a service process's life: one when it
// is up, naming its version, roles and listening addresses, and one when it
// stops. A process that fails before it is up logs no "stopped": main
// reports the error.
type lifecycle struct {
	log     zerolog.Logger
	build   buildVersion
	begun   time.Time
	started bool
}

func (c *cli) lifecycle(log zerolog.Logger) *lifecycle {
	return &lifecycle{log: log, build: c.build, begun: time.Now()}
}

func (l *lifecycle) up(roles []string, a *app.App, http, ops, pprof string) {
	ev := l.log.Info().Str("version", l.build.Version)
	if r := l.build.shortRevision(); r != "" {
		ev = ev.Str("revision", r)
	}
	ev = ev.Strs("roles", roles)
	if http != "" {
		ev = ev.Str("http", http)
	}
	ev = ev.Str("nats", redactURLs(a.NATSURL()))
	if ops != "" {
		ev = ev.Str("ops", ops)
	}
	if pprof != "" {
		ev = ev.Str("pprof", pprof)
	}
	ev.Msg("latchkey started")
	l.started = true
}

// down is deferred, so *err is the command's final error.
func (l *lifecycle) down(err *error) {
	if !l.started {
		return
	}
	uptime := time.Since(l.begun).Round(time.Second).String()
	if *err != nil {
		l.log.Error().Err(*err).Str("uptime", uptime).Msg("latchkey stopped")
		return
	}
	l.log.Info().Str("uptime", uptime).Msg("latchkey stopped")
}

// redactURLs hides the secrets of comma-separated URLs, for logs and the
// banner: a password becomes xxxxx, and a nats:// URL loses its user
// information altogether, since NATS takes a token in the user field.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.Host == "" {
			// Not a URL we can take apart (a keyword/value DSN): say only
			// that something is set.
			parts[i] = "(set)"
			continue
		}
		if u.User != nil && (u.Scheme == "nats" || u.Scheme == "tls" || u.Scheme == "ws" || u.Scheme == "wss") {
			u.User = url.User("redacted")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
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

// servePprof runs the profile listener when LATCHKEY_PPROF_ADDR is set and
// returns its address. A profile listener that cannot start is worth a
// warning, not the process.
func servePprof(ctx context.Context, wg *sync.WaitGroup, a *app.App, cfg config.Config) string {
	if cfg.PprofAddr == "" {
		return ""
	}
	ln, err := app.Listen(cfg.PprofAddr, "PPROF_ADDR")
	if err != nil {
		a.Log.Warn().Err(err).Msg("pprof listener")
		return ""
	}
	wg.Go(func() {
		if err := a.Serve(ctx, ln, app.PprofHandler()); err != nil {
			a.Log.Warn().Err(err).Msg("pprof listener")
		}
	})
	return ln.Addr().String()
}

// hostURL is the http URL of a listening address, with an unspecified host
// (0.0.0.0, ::) replaced by loopback, which a browser on this machine reaches.
func hostURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
