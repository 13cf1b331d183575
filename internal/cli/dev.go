package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/latchkey/latchkey/internal/app"
	"github.com/latchkey/latchkey/internal/config"
)

// devAdminToken is the well-known admin token deploy/local/run.sh gives
// `make run`; the banner shows it only when it is this one, since a token
// the user chose may be a real secret.
const devAdminToken = "latchkey-dev-admin-token"

func (c *cli) devCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "run everything in one process: migrations, embedded NATS, the HTTP API and every worker",
		Long: `Run the whole service in one process, for a laptop: apply the migrations, start nats-server
with JetStream inside the process (unless --nats-url is set), serve the HTTP API and run every
worker role. When the API answers it prints its URLs once. Links in email follow the address it
listens on unless --public-base-url (LATCHKEY_PUBLIC_BASE_URL) is set. 'make run' runs it with a
private PostgreSQL and a web mailbox.`,
		Args: cobra.NoArgs,
	}
	addSettings(cmd, devParts)
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) (err error) {
		cfg, log, err := c.load(cmd)
		if err != nil {
			return err
		}
		life := c.lifecycle(log)
		defer life.down(&err)
		ctx, cancel := context.WithCancel(cmd.Context())
		defer cancel()
		// Listening first tells a busy port at once, and gives the address
		// the links in email follow when no base URL is set.
		ln, err := app.Listen(cfg.HTTPAddr, "HTTP_ADDR")
		if err != nil {
			return err
		}
		apiURL := hostURL(ln.Addr())
		if cfg.IsDefault("PUBLIC_BASE_URL") {
			if cfg.PublicBaseURL, err = url.Parse(apiURL); err != nil {
				ln.Close()
				return fmt.Errorf("public base URL from %s: %w", apiURL, err)
			}
		}
		a, err := app.Open(ctx, cfg, log, app.Options{Migrate: true})
		if err != nil {
			ln.Close()
			return err
		}
		defer a.Close()
		var wg sync.WaitGroup
		defer wg.Wait()
		defer cancel() // before the wait: the pprof listener stops with the rest
		pprof := servePprof(ctx, &wg, a, cfg)
		handlers, err := a.Handlers()
		if err != nil {
			ln.Close()
			return err
		}
		workersDone := make(chan error, 1)
		go func() {
			err := a.RunWorkers(ctx, app.AllRoles(), handlers)
			if err != nil {
				cancel() // half a stack is no use on a laptop
			}
			workersDone <- err
		}()
		served := make(chan struct{})
		var serveErr error
		go func() {
			serveErr = a.Serve(ctx, ln, a.Handler())
			close(served)
		}()
		roles := []string{ingressRole}
		for _, r := range app.AllRoles() {
			roles = append(roles, string(r))
		}
		life.up(roles, a, ln.Addr().String(), "", pprof)
		if waitReady(ctx, log, apiURL, served) {
			c.printBanner(cfg, a, apiURL)
		}
		<-served
		cancel()
		return errors.Join(serveErr, <-workersDone)
	})
	return cmd
}

// waitReady polls the API's /readyz until it answers 200, so the banner
// shows only URLs that work. It gives up when the server stops or ctx ends.
func waitReady(ctx context.Context, log zerolog.Logger, apiURL string, stopped <-chan struct{}) bool {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	warnAt := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL+"/readyz", nil)
		if err != nil {
			return false
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		if time.Now().After(warnAt) {
			log.Warn().Str("url", apiURL+"/readyz").Msg("the API is not ready yet; its URLs are printed when it is")
			warnAt = time.Now().Add(time.Minute)
		}
		select {
		case <-ctx.Done():
			return false
		case <-stopped:
			return false
		case <-tick.C:
		}
	}
}

// printBanner tells the person who ran `latchkey dev` (or `make run`) where
// everything is. Secrets are left out: the database and SMTP URLs lose their
// credentials, and the admin token is shown only when it is the well-known
// development one.
func (c *cli) printBanner(cfg config.Config, a *app.App, apiURL string) {
	var b strings.Builder
	fmt.Fprintf(&b, "\nLatchkey %s is ready (Ctrl-C stops it)\n", c.build.Version)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-12s %s\n", k, v) }
	row("API", apiURL)
	if cfg.DevMailboxURL != "" {
		row("Mailbox", cfg.DevMailboxURL)
	} else {
		row("Mail", "sent to "+redactURLs(cfg.SMTPURL.String())+" (no web mailbox)")
	}
	row("Email links", cfg.PublicBaseURL.String())
	switch cfg.AdminToken {
	case devAdminToken:
		row("Admin token", devAdminToken+`  (send "Authorization: Bearer <token>" to /v1/admin/...)`)
	case "":
		row("Admin token", "none set: create a key with 'latchkey admin-key create --name NAME'")
	default:
		row("Admin token", "the value of LATCHKEY_ADMIN_TOKEN")
	}
	row("NATS", redactURLs(a.NATSURL()))
	row("Database", redactURLs(cfg.DatabaseURL))
	b.WriteString("\n")
	_, _ = io.WriteString(c.env.Stdout, b.String())
}
