package cli

import (
	"cmp"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/latchkey/latchkey/internal/bench"
)

func (c *cli) benchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "run the load harness (needs PostgreSQL; see make bench)",
		Long: `Run the load harness: it starts the whole stack on loopback (latchkey processes, nats-server,
an SMTP sink) against the PostgreSQL of --database-url, measures the ingress, the reset pipeline
and login, and writes a table and bench.json. 'make bench' runs it on the private cluster.`,
		Example: "  latchkey bench --quick\n  latchkey bench --layouts 1x1 --scenarios login --profile",
		Args:    cobra.NoArgs,
	}
	fs := cmd.Flags()
	out := fs.String("out", "", "folder for bench.json, logs and profiles (default $BENCH_OUT, else bench-out)")
	layouts := fs.String("layouts", "1x1,2x2", "worker layouts to measure, TOKENSxMAILERS processes")
	rates := fs.String("rates", "100,250,400,500,650,800,1000,1500,2000,2500,3000,4000", "request rates of the pipeline ramp, per second")
	users := fs.Int("users", 300000, "users to seed")
	phase := fs.Duration("phase", 10*time.Second, "length of each ramp step and closed-loop run")
	sustain := fs.Duration("sustain", 30*time.Second, "how long the best rate must hold")
	low := fs.Duration("low", 20*time.Second, "length of the 10/s latency run")
	profile := addBool(fs, "profile", "collect CPU and allocation profiles of every process per scenario")
	quick := addBool(fs, "quick", "short phases and one layout: a smoke test of the harness, not a measurement")
	scenarios := fs.String("scenarios", "ingress,pipeline,login", "which scenarios to run, comma-separated (to compare one change quickly)")
	addSettings(cmd, benchParts)
	cmd.RunE = run(func(cmd *cobra.Command, _ []string) error {
		cfg, _, err := c.load(cmd)
		if err != nil {
			return err
		}
		if *quick {
			*layouts, *rates, *users = "1x1", "100,400", 30000
			*phase, *sustain, *low = 3*time.Second, 3*time.Second, 3*time.Second
		}
		bc := bench.Config{
			DatabaseURL: cfg.DatabaseURL, OutDir: *out, LogLevel: cfg.LogLevel, Users: *users,
			Phase: *phase, Sustain: *sustain, LowRate: *low, Profile: bool(*profile),
		}
		if bc.OutDir == "" {
			benchOut, _ := c.env.Lookup("BENCH_OUT")
			bc.OutDir = cmp.Or(benchOut, "bench-out")
		}
		bc.Scenarios = map[string]bool{}
		for _, sc := range strings.Split(*scenarios, ",") {
			switch sc = strings.TrimSpace(sc); sc {
			case "ingress", "pipeline", "login":
				bc.Scenarios[sc] = true
			default:
				return usagef(cmd, "--scenarios takes ingress, pipeline and login")
			}
		}
		if bc.Binary, err = os.Executable(); err != nil {
			return err
		}
		if bc.Layouts, err = parseLayouts(*layouts); err != nil {
			return usagef(cmd, "%v", err)
		}
		for _, r := range strings.Split(*rates, ",") {
			rate, err := strconv.Atoi(strings.TrimSpace(r))
			if err != nil || rate < 1 {
				return usagef(cmd, "--rates takes positive numbers")
			}
			bc.Rates = append(bc.Rates, rate)
		}
		_, err = bench.Run(cmd.Context(), bc, c.env.Stdout)
		return err
	})
	return cmd
}

func parseLayouts(v string) ([]bench.Workers, error) {
	var out []bench.Workers
	for _, l := range strings.Split(v, ",") {
		t, m, ok := strings.Cut(strings.TrimSpace(l), "x")
		tokens, err1 := strconv.Atoi(t)
		mailers, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || tokens < 1 || mailers < 1 {
			return nil, fmt.Errorf("--layouts takes TOKENSxMAILERS, e.g. 1x1,2x2")
		}
		out = append(out, bench.Workers{Tokens: tokens, Mailers: mailers})
	}
	return out, nil
}
