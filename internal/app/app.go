// Package app assembles Latchkey's components from the configuration: the
// database pool, NATS (external or embedded), the stream, the HTTP ingress
// and the workers. The subcommands of cmd/latchkey are thin shells over it.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/latchkey/latchkey/internal/accounts"
	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/config"
	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/delivery"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/httpapi"
	"github.com/latchkey/latchkey/internal/login"
	"github.com/latchkey/latchkey/internal/mailer"
	"github.com/latchkey/latchkey/internal/mailtmpl"
	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/natsembed"
	"github.com/latchkey/latchkey/internal/outbox"
	"github.com/latchkey/latchkey/internal/periodic"
	"github.com/latchkey/latchkey/internal/ratelimit"
	"github.com/latchkey/latchkey/internal/recovery"
	"github.com/latchkey/latchkey/internal/sessions"
	"github.com/latchkey/latchkey/internal/store"
)

// Options say how much of the stack a process needs.
type Options struct {
	// Migrate applies pending migrations instead of refusing to start.
	Migrate bool
	// Now is the clock; tests inject one to expire tokens. Default time.Now.
	Now func() time.Time
}

// App is a process's shared infrastructure.
type App struct {
	Config   config.Config
	Log      zerolog.Logger
	Store    *store.Store
	NATS     *nats.Conn
	JS       jetstream.JetStream
	Stream   jetstream.Stream
	Registry *prometheus.Registry

	embedded *natsembed.Server
	hasher   *credential.Hasher
	policy   *credential.Policy
	events   *events.Metrics
	now      func() time.Time

	publisher *events.Publisher
	outbox    *outbox.Outbox
	requester *delivery.Requester
	sessions  *sessions.Manager
	recovery  *recovery.Service
	login     *login.Service
	catalog   *mailtmpl.Catalog
	sender    *mailer.Sender

	sweepOnce sync.Once
	stopSweep func() // stops the rate-limit sweep and waits for it
}

// Open connects to PostgreSQL and NATS (starting the embedded server when no
// URL is configured), checks or applies the schema and ensures the stream.
func Open(ctx context.Context, cfg config.Config, log zerolog.Logger, opts Options) (_ *App, err error) {
	a := &App{Config: cfg, Log: log, Registry: prometheus.NewRegistry(), now: opts.Now}
	if a.now == nil {
		a.now = time.Now
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	a.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.events = events.NewMetrics(a.Registry)

	pool, err := store.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
	if err != nil {
		return nil, err
	}
	a.Store = store.New(pool)
	if opts.Migrate {
		res, err := migrate.Up(ctx, pool)
		if err != nil {
			return nil, err
		}
		log.Info().Int64("from", res.From).Int64("to", res.To).Int("applied", res.Applied).Msg("schema migrated")
	} else if err := migrate.Check(ctx, pool); err != nil {
		return nil, err
	}

	natsURL := cfg.NATSURL
	if natsURL == "" {
		storeDir := filepath.Join(cfg.DataDir, "jetstream")
		if err := os.MkdirAll(storeDir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", storeDir, err)
		}
		a.embedded, err = natsembed.Start(natsembed.Config{Listen: cfg.NATSListen, StoreDir: storeDir})
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("embedded NATS: %s is already in use (a latchkey or nats-server left running?). Stop it, or choose another address with %sNATS_LISTEN (port 0 picks a free one), or use a running NATS with %sNATS_URL: %w",
					cfg.NATSListen, config.Prefix, config.Prefix, err)
			}
			return nil, err
		}
		natsURL = a.embedded.ClientURL()
		log.Info().Str("url", natsURL).Str("store_dir", storeDir).Msg("embedded nats-server started")
	}
	a.NATS, err = nats.Connect(natsURL,
		nats.Name("latchkey"),
		nats.MaxReconnects(-1),
		// No buffering while disconnected: a publish the caller was told
		// failed (503) must not go out later behind its back.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info().Msg("nats reconnected") }),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to nats: %w", err)
	}
	// Without an async publish timeout the client keeps a lost PubAck's
	// future pending forever; with it, the future fails and its slot in the
	// client's pending window is freed.
	a.JS, err = jetstream.New(a.NATS, jetstream.WithPublishAsyncTimeout(events.DefaultAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	a.Stream, err = events.EnsureStream(ctx, a.JS, events.StreamConfig{Replicas: cfg.StreamReplicas, MaxAge: cfg.StreamMaxAge})
	if err != nil {
		return nil, err
	}

	a.hasher, err = credential.NewHasher(credential.HasherConfig{})
	if err != nil {
		return nil, err
	}
	a.policy, err = credential.NewPolicy(credential.PolicyConfig{
		PasswordMinLength: cfg.PasswordMinLength, PasswordMaxLength: cfg.PasswordMaxLength,
		PINMinLength: cfg.PINMinLength, PINMaxLength: cfg.PINMaxLength,
	})
	if err != nil {
		return nil, err
	}
	if a.catalog, err = mailtmpl.Builtin(); err != nil {
		return nil, err
	}
	a.publisher = events.NewPublisher(a.JS)
	a.outbox = outbox.New(a.Store, a.publisher, log)
	a.requester = delivery.NewRequester(a.Store, a.publisher, a.now)
	a.sessions = sessions.New(a.Store, cfg.SessionTTL, a.now)
	a.recovery = recovery.New(recovery.Config{
		Disclosure: cfg.Disclosure, ResetTTL: cfg.ResetTTL, RateLimitPerAccount: cfg.RateLimitPerAccount,
		UnlockOnReset: cfg.UnlockOnReset, LoginAfterReset: cfg.LoginAfterReset,
	}, a.Store, a.publisher, a.requester, a.outbox, a.hasher, a.policy, a.sessions, a.now)
	a.login = login.New(login.Config{LockoutThreshold: cfg.LockoutThreshold, LockoutDuration: cfg.LockoutDuration},
		a.Store, a.hasher, a.sessions, a.now)
	return a, nil
}

// HashMemoryBound is the memory, in bytes, that the password hashes in
// flight hold at most (credential.Hasher.MemoryBound).
func (a *App) HashMemoryBound() int64 { return a.hasher.MemoryBound() }

// NATSURL is the URL other processes use to join this process's NATS.
func (a *App) NATSURL() string {
	if a.embedded != nil {
		return a.embedded.ClientURL()
	}
	return a.Config.NATSURL
}

// Close releases everything Open acquired, in reverse order.
func (a *App) Close() {
	if a.stopSweep != nil {
		a.stopSweep()
	}
	if a.sender != nil {
		_ = a.sender.Close()
	}
	if a.NATS != nil {
		_ = a.NATS.Drain()
		a.NATS.Close()
	}
	if a.embedded != nil {
		a.embedded.Shutdown()
	}
	if a.Store != nil {
		a.Store.Pool().Close()
	}
}

func (a *App) checks() []httpapi.Check {
	return []httpapi.Check{
		{Name: "database", Ping: a.Store.Ping},
		{Name: "nats", Ping: func(ctx context.Context) error {
			if a.NATS.Status() != nats.CONNECTED {
				return fmt.Errorf("nats connection is %s", a.NATS.Status())
			}
			_, err := a.JS.AccountInfo(ctx)
			return err
		}},
	}
}

// Handler builds the HTTP API, and starts the sweep of its rate limiters'
// table, which runs until Close.
func (a *App) Handler() http.Handler {
	a.startRateLimitSweep()
	return httpapi.New(httpapi.Deps{
		Store:    a.Store,
		Accounts: accounts.New(a.Store, a.hasher, a.policy, a.now, accounts.Config{DeliveryClaimLease: a.mailerConfig().Lease()}),
		Recovery: a.recovery,
		Login:    a.login,
		Sessions: a.sessions,
		Limiters: httpapi.Limiters{
			PerAddress: ratelimit.New(a.Store, "address", a.Config.RateLimitPerAddress.Count, a.Config.RateLimitPerAddress.Window, a.now),
			PerAccount: ratelimit.New(a.Store, "account", a.Config.RateLimitPerAccount.Count, a.Config.RateLimitPerAccount.Window, a.now),
		},
		Now:      a.now,
		Auth:     adminkeys.NewAuthenticator(a.Store, a.Config.AdminToken),
		Checks:   a.checks(),
		Gatherer: a.Registry,
		Metrics:  httpapi.NewMetrics(a.Registry),
		Logger:   a.Log,
	}, httpapi.Config{MaxBodyBytes: a.Config.MaxBodyBytes, TrustedProxies: a.Config.TrustedProxies})
}

// rateLimitSweepEvery is how often an ingress process deletes the rate-limit
// keys that have fully recovered. The table holds at most the keys active
// within one window plus those recovered within one period.
const rateLimitSweepEvery = 30 * time.Second

// startRateLimitSweep starts, once, the sweeps of the limiters' table and of
// the Idempotency-Key records; Close stops them. Every ingress process sweeps
// (the deletes are idempotent), so the tables stay bounded whichever
// processes run.
func (a *App) startRateLimitSweep() {
	a.sweepOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		a.stopSweep = func() { cancel(); wg.Wait() }
		wg.Go(func() {
			periodic.Run(ctx, rateLimitSweepEvery, a.Log, "rate-limit sweep", func(ctx context.Context) (int64, error) {
				return a.Store.DeleteRecoveredRateLimits(ctx, a.now())
			})
		})
		wg.Go(func() {
			periodic.Run(ctx, rateLimitSweepEvery, a.Log, "idempotency-key sweep", func(ctx context.Context) (int64, error) {
				return a.Store.DeleteExpiredIdempotencyKeys(ctx, a.now().Add(-httpapi.IdempotencyTTL))
			})
		})
	})
}

// PprofHandler serves Go's profiles, on its own listener so they are never
// reachable through the API's address.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// OpsHandler serves only /healthz, /readyz and /metrics, for worker processes.
func (a *App) OpsHandler() http.Handler {
	return httpapi.NewOps(httpapi.Deps{Checks: a.checks(), Gatherer: a.Registry, Logger: a.Log})
}

// Listen opens a TCP listener on addr, the value of the setting named
// setting (without the LATCHKEY_ prefix). A busy port's error says so and
// names the variable that moves it.
func Listen(addr, setting string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, fmt.Errorf("%s is already in use (a latchkey left from an earlier run?). Stop it, or choose another address with %s%s: %w",
			addr, config.Prefix, setting, err)
	case err != nil:
		return nil, fmt.Errorf("listen on %s (%s%s): %w", addr, config.Prefix, setting, err)
	}
	return ln, nil
}

// Serve runs an HTTP server on ln until ctx ends, then shuts it down
// gracefully, letting in-flight requests finish. It closes ln.
func (a *App) Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.Config.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// mailerConfig is the mailer's configuration. The ingress reads its claim
// lease too: an email change waits out the claims of the user's deliveries.
func (a *App) mailerConfig() delivery.MailerConfig {
	return delivery.MailerConfig{
		PublicBaseURL: a.Config.PublicBaseURL, FromName: a.Config.MailFromName, FromAddress: a.Config.MailFromAddress,
		MaxAttempts: a.Config.EventMaxDeliver,
		// Renewed while the batch holds it, so it need not cover a whole
		// batch: it bounds how long a killed worker's deliveries wait.
		ClaimLease: 2 * a.Config.EventAckWait,
		// One SMTP exchange takes at most SMTP_TIMEOUT plus the sender's
		// second of grace; the claim lease must cover that.
		SendTimeout: a.Config.SMTPTimeout + time.Second,
		Concurrency: a.Config.SMTPPool,
	}
}

// Handlers are the production event handlers of every role. The mailer's
// SMTP connections open on first use.
func (a *App) Handlers() (Handlers, error) {
	if a.sender == nil {
		var err error
		a.sender, err = mailer.New(mailer.Config{URL: a.Config.SMTPURL, Pool: a.Config.SMTPPool, Timeout: a.Config.SMTPTimeout}, a.Log)
		if err != nil {
			return nil, err
		}
	}
	m := delivery.NewMailer(a.mailerConfig(), a.Store, a.sender, a.catalog, a.outbox, a.now)
	return Handlers{
		events.TypeResetRequested:  a.recovery.HandleResetRequested,
		events.TypeMailRequested:   m.Handle,
		events.TypePasswordChanged: events.One(delivery.NewNotifier(a.Store, a.requester).Handle),
	}, nil
}

// RunWorkers runs the given roles until ctx ends. handlers supplies the
// event handlers of the flows; an event without one becomes a dead letter.
func (a *App) RunWorkers(ctx context.Context, roles []Role, handlers Handlers) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(roles)+1)
	start := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	start("max-deliveries watcher", func() error {
		return events.WatchMaxDeliveries(ctx, a.NATS, a.Stream, a.Store, a.Log)
	})
	start("outbox relay", func() error { return a.outbox.Relay(ctx, 2*time.Second, 5*time.Second) })
	start("unknown login sweep", func() error {
		rule := store.Lockout{Threshold: a.Config.LockoutThreshold, Duration: a.Config.LockoutDuration}
		periodic.Run(ctx, time.Minute, a.Log, "unknown login sweep", func(ctx context.Context) (int64, error) {
			return a.Store.SweepUnknownLoginFailures(ctx, rule, a.now())
		})
		return nil
	})
	for _, role := range roles {
		types := roleEvents(role)
		if len(types) == 0 {
			a.Log.Info().Str("role", string(role)).Msg("worker role started (clock-driven)")
			continue
		}
		consumer, err := events.EnsureConsumer(ctx, a.Stream, events.ConsumerSpec{
			Name:       string(role),
			Types:      types,
			AckWait:    a.Config.EventAckWait,
			MaxDeliver: a.Config.EventMaxDeliver,
			Replicas:   a.Config.StreamReplicas,
		})
		if err != nil {
			stopping := ctx.Err() != nil
			cancel()
			wg.Wait()
			if stopping {
				return nil // asked to stop while starting: not a failure
			}
			return err
		}
		concurrency, batch := tuning(role)
		// StuckAfter: the mailer's batch may outlast its deadline on a slow
		// relay (sends are not cut short); only a handler this late is stuck.
		runner := events.NewBatchRunner(consumer, handlers.dispatch, a.Store, a.events, a.Log, events.RunnerConfig{
			Consumer:        string(role),
			Concurrency:     concurrency,
			BatchSize:       batch,
			MaxDeliver:      a.Config.EventMaxDeliver,
			HandlerTimeout:  a.Config.EventAckWait * 4 / 5,
			StuckAfter:      max(10*a.Config.EventAckWait*4/5, 5*time.Minute),
			ShutdownTimeout: a.Config.ShutdownTimeout,
		})
		a.Log.Info().Str("role", string(role)).Strs("events", types).Msg("worker role started")
		start(string(role), func() error { return runner.Run(ctx) })
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
