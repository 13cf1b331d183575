// Package bench is Latchkey's load harness: it runs the real processes on
// loopback against PostgreSQL, JetStream and a timestamping SMTP sink, drives
// them open-loop, and reports every figure as a table and a JSON file.
package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/internal/credential"
	"github.com/latchkey/latchkey/internal/events"
)

// Workers is one worker layout: how many token and mailer processes.
type Workers struct {
	Tokens  int `json:"tokens"`
	Mailers int `json:"mailers"`
}

// Config configures a run.
type Config struct {
	DatabaseURL string // a PostgreSQL server; the harness makes its own database there
	Database    string // that database's name, dropped and created afresh (default latchkey_bench)
	Binary      string // the latchkey binary to spawn
	OutDir      string
	Layouts     []Workers
	Users       int
	Rates       []int // ramp of the pipeline scenario, requests/s
	Phase       time.Duration
	Sustain     time.Duration
	LowRate     time.Duration
	Profile     bool
	LogLevel    string
	// Flood is how many logins are sent at once while the ingress's RSS is
	// sampled (default 1000, the figure the README reports).
	Flood int
	// Scenarios to run: "ingress", "pipeline", "login"; nil runs them all.
	Scenarios map[string]bool
}

func (c Config) runs(scenario string) bool { return c.Scenarios == nil || c.Scenarios[scenario] }

// Report is everything a run measured.
type Report struct {
	StartedAt   time.Time        `json:"started_at"`
	Revision    string           `json:"git_revision"`
	GoVersion   string           `json:"go_version"`
	Cores       int              `json:"cores"`
	Ingress     ClosedLoop       `json:"ingress_forgot_password"`
	Pipelines   []PipelineReport `json:"reset_pipeline"`
	Sustained   float64          `json:"sustained_emails_per_s"`
	Login       LoginReport      `json:"login"`
	DurationSec float64          `json:"duration_s"`
}

// PipelineReport is the reset pipeline under one worker layout.
type PipelineReport struct {
	Workers   Workers         `json:"workers"`
	LowRate   PipelinePhase   `json:"low_rate"`
	Ramp      []PipelinePhase `json:"ramp"`
	Sustained *PipelinePhase  `json:"sustained"`
	// SustainedEmailsPerS is the highest rate held for the sustain period
	// with p99 under 1 s and nothing lost; 0 when none was.
	SustainedEmailsPerS float64 `json:"sustained_emails_per_s"`
}

// LoginReport is the login scenario.
type LoginReport struct {
	ClosedLoop ClosedLoop `json:"closed_loop"`
	// HashMs is one hash with the machine otherwise idle; BoundPerS is the
	// hashes/s of every core hashing at once, less than cores × 1000/HashMs
	// because memory-hard hashes share the caches and the memory bus.
	HashMs           float64 `json:"argon2id_ms_per_hash"`
	BoundPerS        float64 `json:"argon2id_bound_per_s"`
	OfBound          float64 `json:"fraction_of_bound"`
	OfCoresTimesOne  float64 `json:"fraction_of_cores_times_one_hash"`
	FloodInFlight    int     `json:"flood_in_flight"`
	FloodErrors      int     `json:"flood_errors"`
	IngressPeakRSSMB float64 `json:"ingress_peak_rss_mib"`
}

// Run executes every scenario and writes OutDir/bench.json.
func Run(ctx context.Context, cfg Config, out io.Writer) (Report, error) {
	rep := Report{StartedAt: time.Now().UTC(), Revision: gitRevision(), GoVersion: runtime.Version(), Cores: runtime.NumCPU()}
	for _, dir := range []string{cfg.OutDir, filepath.Join(cfg.OutDir, "logs"), filepath.Join(cfg.OutDir, "profiles")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return rep, err
		}
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, "bench: "+format+"\n", args...) }
	// The argon2id bound is measured first, while nothing else runs.
	var err error
	if rep.Login.HashMs, rep.Login.BoundPerS, err = measureArgon2(ctx); err != nil {
		return rep, err
	}
	say("seeding %d users and starting the stack", cfg.Users)
	s, err := newStack(ctx, cfg)
	if err != nil {
		return rep, err
	}
	defer s.close()
	nc, err := nats.Connect(s.nats.ClientURL())
	if err != nil {
		return rep, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return rep, err
	}
	s.js = js

	serve, err := s.start("serve", "serve")
	if err != nil {
		return rep, err
	}
	if err := s.waitReady(ctx); err != nil {
		return rep, err
	}

	if cfg.runs("ingress") {
		if err := s.ingress(ctx, cfg, &rep, say); err != nil {
			return rep, err
		}
	}
	for _, layout := range cfg.Layouts {
		if !cfg.runs("pipeline") {
			break
		}
		say("reset pipeline with %d token and %d mailer processes", layout.Tokens, layout.Mailers)
		pr, err := s.pipeline(ctx, cfg, layout, say)
		if err != nil {
			return rep, err
		}
		rep.Pipelines = append(rep.Pipelines, pr)
		rep.Sustained = max(rep.Sustained, pr.SustainedEmailsPerS)
	}

	if cfg.runs("login") {
		say("login: argon2id bound, closed loop, and a flood of 1000 in flight")
		if err := s.login(ctx, cfg, serve, &rep.Login); err != nil {
			return rep, err
		}
	}
	rep.DurationSec = time.Since(rep.StartedAt).Seconds()
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return rep, err
	}
	if err := os.WriteFile(filepath.Join(cfg.OutDir, "bench.json"), raw, 0o644); err != nil {
		return rep, err
	}
	PrintTable(out, rep)
	return rep, nil
}

// ingress measures POST /v1/password/forgot alone, with no workers running.
func (s *stack) ingress(ctx context.Context, cfg Config, rep *Report, say func(string, ...any)) error {
	say("ingress alone: POST /v1/password/forgot, 64 clients, %s", cfg.Phase)
	pool, err := s.takeUsers(20000)
	if err != nil {
		return err
	}
	stopProfile := s.profile("ingress", cfg.Phase)
	rep.Ingress = s.runClosedLoop(ctx, 64, cfg.Phase, "/v1/password/forgot", http.StatusAccepted, func(i int) []byte {
		return fmt.Appendf(nil, `{"identifier":"u%d@%s"}`, pool+i%20000, benchDomain)
	})
	stopProfile()
	rep.Ingress.Description = "forgot-password requests answered 202 (account lookup and publish), no workers running"
	// The events it published would be worked off by the workers started
	// next and pollute the pipeline's figures.
	return s.purge(ctx)
}

func (s *stack) pipeline(ctx context.Context, cfg Config, layout Workers, say func(string, ...any)) (PipelineReport, error) {
	pr := PipelineReport{Workers: layout}
	if err := s.startWorkers(layout.Tokens, layout.Mailers); err != nil {
		return pr, err
	}
	defer s.stopWorkers()
	var err error
	if pr.LowRate, err = s.runPipeline(ctx, 10, cfg.LowRate); err != nil {
		return pr, err
	}
	say("  10/s: p50 %.1f ms, p99 %.1f ms", pr.LowRate.Latency.P50, pr.LowRate.Latency.P99)
	best := 0
	for _, rate := range cfg.Rates {
		p, err := s.runPipeline(ctx, rate, cfg.Phase)
		if err != nil {
			return pr, err
		}
		pr.Ramp = append(pr.Ramp, p)
		say("  %d/s: %.0f emails/s, p99 %.0f ms, lost %d, late %d, errors %d", rate, p.EmailsPerS, p.Latency.P99, p.Lost, p.Late, p.Errors)
		if err := s.drain(ctx); err != nil {
			return pr, err
		}
		if !p.Passed {
			break
		}
		best = rate
	}
	// Hold the best rate for the sustain period; step down once if it fails.
	for _, rate := range sustainCandidates(cfg.Rates, best) {
		stop := s.profile(fmt.Sprintf("sustain-%dx%d", layout.Tokens, layout.Mailers), cfg.Sustain)
		p, err := s.runPipeline(ctx, rate, cfg.Sustain)
		stop()
		if err != nil {
			return pr, err
		}
		say("  sustained %d/s for %s: %.0f emails/s, p99 %.0f ms, lost %d -> passed %v", rate, cfg.Sustain, p.EmailsPerS, p.Latency.P99, p.Lost, p.Passed)
		pr.Sustained = &p
		if err := s.drain(ctx); err != nil {
			return pr, err
		}
		if p.Passed {
			pr.SustainedEmailsPerS = float64(p.Received) / p.Seconds
			break
		}
	}
	return pr, nil
}

// busiest is the phase that shows the pipeline's cost at its best: the
// sustained one, else the last of the ramp.
func (p PipelineReport) busiest() *PipelinePhase {
	if p.Sustained != nil {
		return p.Sustained
	}
	if len(p.Ramp) > 0 {
		return &p.Ramp[len(p.Ramp)-1]
	}
	return nil
}

func sustainCandidates(rates []int, best int) []int {
	if best == 0 {
		return nil
	}
	out := []int{best}
	for i, r := range rates {
		if r == best && i > 0 {
			out = append(out, rates[i-1])
		}
	}
	return out
}

// drain waits until the workers have worked off everything in the stream,
// so one phase's backlog does not count against the next.
func (s *stack) drain(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		busy := false
		for _, name := range []string{"tokens", "mailer"} {
			c, err := s.js.Consumer(ctx, events.StreamName, name)
			if err != nil {
				return err
			}
			info, err := c.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				busy = true
			}
		}
		if !busy {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("the workers did not drain the stream within 2 minutes")
}

func (s *stack) consumersReady() (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, name := range []string{"tokens", "mailer"} {
		if _, err := s.js.Consumer(ctx, events.StreamName, name); err != nil {
			return false, err
		}
	}
	return true, nil
}

func (s *stack) purge(ctx context.Context) error {
	stream, err := s.js.Stream(ctx, events.StreamName)
	if err != nil {
		return err
	}
	return stream.Purge(ctx)
}

// measureArgon2 times argon2id hashes one at a time (ms per hash), then with
// every core hashing at once (hashes/s): the bound logins are compared with.
func measureArgon2(ctx context.Context) (ms, perS float64, err error) {
	cores := runtime.NumCPU()
	hasher, err := credential.NewHasher(credential.HasherConfig{MaxConcurrent: cores})
	if err != nil {
		return 0, 0, err
	}
	const samples = 20
	hashAll := func(n int) error {
		for range n {
			if _, err := hasher.Hash(ctx, loginPassword); err != nil {
				return err
			}
		}
		return nil
	}
	// The first hash grows the heap; later ones reuse what the collector
	// freed, as in a running server.
	if err := hashAll(1); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := hashAll(samples); err != nil {
		return 0, 0, err
	}
	ms = float64((time.Since(t0) / samples).Microseconds()) / 1000

	errs := make([]error, cores)
	var wg sync.WaitGroup
	t0 = time.Now()
	for i := range cores {
		wg.Go(func() { errs[i] = hashAll(samples) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	return ms, float64(cores*samples) / time.Since(t0).Seconds(), nil
}

func (s *stack) login(ctx context.Context, cfg Config, serve *proc, rep *LoginReport) error {
	first, err := s.takeUsers(1000)
	if err != nil {
		return err
	}
	body := func(i int) []byte {
		return fmt.Appendf(nil, `{"login_name":"u%d@%s","secret":%q}`, first+i%1000, benchDomain, loginPassword)
	}
	stop := s.profile("login", cfg.Phase)
	rep.ClosedLoop = s.runClosedLoop(ctx, 4*runtime.NumCPU(), cfg.Phase, "/v1/login", http.StatusOK, body)
	stop()
	rep.ClosedLoop.Description = "password logins answered 200 (argon2id verify, session insert)"
	rep.OfBound = rep.ClosedLoop.PerSecond / rep.BoundPerS
	rep.OfCoresTimesOne = rep.ClosedLoop.PerSecond * rep.HashMs / (1000 * float64(runtime.NumCPU()))

	// The flood: many logins at once; the ingress must queue them on its
	// hashing bound instead of allocating 19 MiB for each.
	rep.FloodInFlight = cmp.Or(cfg.Flood, 1000)
	var peak int64
	done := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if r, err := serve.rss(); err == nil && r > peak {
				peak = r
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	client := newClient()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i := range rep.FloodInFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, err := post(ctx, client, s.apiURL+"/v1/login", body(i))
			if err != nil || code != http.StatusOK {
				mu.Lock()
				rep.FloodErrors++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(done)
	sampler.Wait()
	client.CloseIdleConnections()
	rep.IngressPeakRSSMB = float64(peak) / (1 << 20)
	return nil
}

// profile collects a CPU profile of every process for d, when profiling is
// on; the returned function waits for the profiles and adds heap profiles.
func (s *stack) profile(name string, d time.Duration) func() {
	if !s.cfg.Profile {
		return func() {}
	}
	var wg sync.WaitGroup
	for i, p := range s.procs {
		if p.pprofAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := fmt.Sprintf("%s/%s-%s-%d", filepath.Join(s.cfg.OutDir, "profiles"), name, p.role, i)
			fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprofAddr, int(d.Seconds())), base+".cpu.pprof")
			fetch(fmt.Sprintf("http://%s/debug/pprof/allocs", p.pprofAddr), base+".allocs.pprof")
		}()
	}
	return wg.Wait
}

func fetch(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	if f, err := os.Create(path); err == nil {
		_, _ = io.Copy(f, resp.Body)
		f.Close()
	}
}

func gitRevision() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += "-dirty"
	}
	return rev
}

// PrintTable writes the report for people.
func PrintTable(w io.Writer, r Report) {
	fmt.Fprintf(w, "\nLatchkey bench — %s, %d cores, %s, %.0f s\n\n", r.Revision, r.Cores, r.GoVersion, r.DurationSec)
	fmt.Fprintf(w, "%-44s %12s %10s %10s %10s\n", "scenario", "throughput", "p50 ms", "p95 ms", "p99 ms")
	row := func(name string, tput string, l Latency) {
		fmt.Fprintf(w, "%-44s %12s %10.1f %10.1f %10.1f\n", name, tput, l.P50, l.P95, l.P99)
	}
	row("ingress: POST /v1/password/forgot (64 clients)", fmt.Sprintf("%.0f req/s", r.Ingress.PerSecond), r.Ingress.Latency)
	for _, p := range r.Pipelines {
		layout := fmt.Sprintf("%dT/%dM", p.Workers.Tokens, p.Workers.Mailers)
		row(fmt.Sprintf("reset pipeline %s at 10/s (request→email)", layout), fmt.Sprintf("%.0f mail/s", p.LowRate.EmailsPerS), p.LowRate.Latency)
		for _, ph := range p.Ramp {
			mark := ""
			if !ph.Passed {
				mark = " ✗"
			}
			row(fmt.Sprintf("reset pipeline %s at %d/s%s", layout, ph.Rate, mark), fmt.Sprintf("%.0f mail/s", ph.EmailsPerS), ph.Latency)
		}
		if p.Sustained != nil {
			row(fmt.Sprintf("reset pipeline %s sustained %d/s %.0fs", layout, p.Sustained.Rate, p.Sustained.Seconds),
				fmt.Sprintf("%.0f mail/s", p.Sustained.EmailsPerS), p.Sustained.Latency)
		}
		fmt.Fprintf(w, "%-44s %12.0f emails/s\n", fmt.Sprintf("  sustained_emails_per_s (%s)", layout), p.SustainedEmailsPerS)
	}
	row("login (argon2id)", fmt.Sprintf("%.0f login/s", r.Login.ClosedLoop.PerSecond), r.Login.ClosedLoop.Latency)

	fmt.Fprintf(w, "\nCPU per request or email, ms (harness = load generator + nats-server + SMTP sink)\n")
	cpu := func(name string, c CPUShare) {
		parts := slices.Sorted(maps.Keys(c.MsPerOp))
		var b strings.Builder
		total := 0.0
		for _, part := range parts {
			fmt.Fprintf(&b, " %s %.3f", part, c.MsPerOp[part])
			total += c.MsPerOp[part]
		}
		fmt.Fprintf(w, "%-44s total %.3f:%s; cores %.0f%% busy\n", name, total, b.String(), 100*c.Busy)
	}
	cpu("ingress: POST /v1/password/forgot", r.Ingress.CPU)
	for _, p := range r.Pipelines {
		layout := fmt.Sprintf("%dT/%dM", p.Workers.Tokens, p.Workers.Mailers)
		if ph := p.busiest(); ph != nil {
			cpu(fmt.Sprintf("reset pipeline %s at %d/s", layout, ph.Rate), ph.CPU)
		}
	}
	cpu("login (argon2id)", r.Login.ClosedLoop.CPU)
	fmt.Fprintf(w, "\nsustained_emails_per_s: %.0f\n", r.Sustained)
	fmt.Fprintf(w, "argon2id: %.1f ms/hash alone; every core hashing at once → bound %.0f/s; logins at %.0f%% of it (%.0f%% of cores × one hash)\n",
		r.Login.HashMs, r.Login.BoundPerS, 100*r.Login.OfBound, 100*r.Login.OfCoresTimesOne)
	fmt.Fprintf(w, "ingress peak RSS with %d logins in flight: %.0f MiB (%d errors)\n", r.Login.FloodInFlight, r.Login.IngressPeakRSSMB, r.Login.FloodErrors)
}
