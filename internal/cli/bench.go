package cli

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/latchkey/latchkey/internal/bench"
	"github.com/latchkey/latchkey/internal/config"
)

func benchSetup(fs *flag.FlagSet) runFunc {
	out := fs.String("out", "", "folder for bench.json, logs and profiles (default $BENCH_OUT, else bench-out)")
	layouts := fs.String("layouts", "1x1,2x2", "worker layouts to measure, TOKENSxMAILERS processes")
	rates := fs.String("rates", "100,250,400,500,650,800,1000,1500,2000,2500,3000,4000", "request rates of the pipeline ramp, per second")
	users := fs.Int("users", 300000, "users to seed")
	phase := fs.Duration("phase", 10*time.Second, "length of each ramp step and closed-loop run")
	sustain := fs.Duration("sustain", 30*time.Second, "how long the best rate must hold")
	low := fs.Duration("low", 20*time.Second, "length of the 10/s latency run")
	profile := fs.Bool("profile", false, "collect CPU and allocation profiles of every process per scenario")
	quick := fs.Bool("quick", false, "short phases and one layout: a smoke test of the harness, not a measurement")
	scenarios := fs.String("scenarios", "ingress,pipeline,login", "which scenarios to run, comma-separated (to compare one change quickly)")
	return func(ctx context.Context, env Env, cfg config.Config, args []string) error {
		if len(args) > 0 {
			return fmt.Errorf("%w: bench takes only flags", ErrUsage)
		}
		if *quick {
			*layouts, *rates, *users = "1x1", "100,400", 30000
			*phase, *sustain, *low = 3*time.Second, 3*time.Second, 3*time.Second
		}
		bc := bench.Config{
			DatabaseURL: cfg.DatabaseURL, OutDir: *out, LogLevel: cfg.LogLevel, Users: *users,
			Phase: *phase, Sustain: *sustain, LowRate: *low, Profile: *profile,
		}
		if bc.OutDir == "" {
			bc.OutDir = cmp.Or(os.Getenv("BENCH_OUT"), "bench-out")
		}
		bc.Scenarios = map[string]bool{}
		for _, sc := range strings.Split(*scenarios, ",") {
			switch sc = strings.TrimSpace(sc); sc {
			case "ingress", "pipeline", "login":
				bc.Scenarios[sc] = true
			default:
				return fmt.Errorf("%w: --scenarios takes ingress, pipeline and login", ErrUsage)
			}
		}
		var err error
		if bc.Binary, err = os.Executable(); err != nil {
			return err
		}
		if bc.Layouts, err = parseLayouts(*layouts); err != nil {
			return err
		}
		for _, r := range strings.Split(*rates, ",") {
			rate, err := strconv.Atoi(strings.TrimSpace(r))
			if err != nil || rate < 1 {
				return fmt.Errorf("%w: --rates takes positive numbers", ErrUsage)
			}
			bc.Rates = append(bc.Rates, rate)
		}
		_, err = bench.Run(ctx, bc, env.Stdout)
		return err
	}
}

func parseLayouts(v string) ([]bench.Workers, error) {
	var out []bench.Workers
	for _, l := range strings.Split(v, ",") {
		t, m, ok := strings.Cut(strings.TrimSpace(l), "x")
		tokens, err1 := strconv.Atoi(t)
		mailers, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || tokens < 1 || mailers < 1 {
			return nil, fmt.Errorf("%w: --layouts takes TOKENSxMAILERS, e.g. 1x1,2x2", ErrUsage)
		}
		out = append(out, bench.Workers{Tokens: tokens, Mailers: mailers})
	}
	return out, nil
}
