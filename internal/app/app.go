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
	"os"
	"path/filepath"
	"sync"
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
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/httpapi"
	"github.com/latchkey/latchkey/internal/migrate"
	"github.com/latchkey/latchkey/internal/natsembed"
	"github.com/latchkey/latchkey/internal/store"
)

// Options say how much of the stack a process needs.
type Options struct {
	// Migrate applies pending migrations instead of refusing to start.
	Migrate bool
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
}

// Open connects to PostgreSQL and NATS (starting the embedded server when no
// URL is configured), checks or applies the schema and ensures the stream.
func Open(ctx context.Context, cfg config.Config, log zerolog.Logger, opts Options) (_ *App, err error) {
	a := &App{Config: cfg, Log: log, Registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	a.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.events = events.NewMetrics(a.Registry)

	pool, err := store.Open(ctx, cfg.DatabaseURL)
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
			return nil, err
		}
		natsURL = a.embedded.ClientURL()
		log.Info().Str("url", natsURL).Str("store_dir", storeDir).Msg("embedded nats-server started")
	}
	a.NATS, err = nats.Connect(natsURL,
		nats.Name("latchkey"),
		nats.MaxReconnects(-1),
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
	a.JS, err = jetstream.New(a.NATS)
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
	return a, nil
}

// NATSURL is the URL other processes use to join this process's NATS.
func (a *App) NATSURL() string {
	if a.embedded != nil {
		return a.embedded.ClientURL()
	}
	return a.Config.NATSURL
}

// Close releases everything Open acquired, in reverse order.
func (a *App) Close() {
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

// Handler builds the HTTP API.
func (a *App) Handler() http.Handler {
	return httpapi.New(httpapi.Deps{
		Store:    a.Store,
		Accounts: accounts.New(a.Store, a.hasher, a.policy),
		Auth:     adminkeys.NewAuthenticator(a.Store, a.Config.AdminToken),
		Checks:   a.checks(),
		Gatherer: a.Registry,
		Metrics:  httpapi.NewMetrics(a.Registry),
		Logger:   a.Log,
	}, httpapi.Config{MaxBodyBytes: a.Config.MaxBodyBytes})
}

// OpsHandler serves only /healthz, /readyz and /metrics, for worker processes.
func (a *App) OpsHandler() http.Handler {
	return httpapi.NewOps(httpapi.Deps{Checks: a.checks(), Gatherer: a.Registry, Logger: a.Log})
}

// Serve runs an HTTP server on addr until ctx ends, then shuts it down
// gracefully, letting in-flight requests finish.
func (a *App) Serve(ctx context.Context, addr string, h http.Handler, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          nil,
	}
	if ready != nil {
		ready(ln.Addr())
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
			cancel()
			wg.Wait()
			return err
		}
		runner := events.NewRunner(consumer, handlers.dispatch, a.Store, a.events, a.Log, events.RunnerConfig{
			Consumer:        string(role),
			MaxDeliver:      a.Config.EventMaxDeliver,
			HandlerTimeout:  a.Config.EventAckWait * 4 / 5,
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
