package bench

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/testkit"
)

// TestHarnessSmoke runs the harness for a few seconds against the real
// binary: it must come back with every figure filled in and nothing lost. It
// measures nothing worth keeping; it keeps `make bench` from rotting.
func TestHarnessSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	serverURL, err := testkit.ServerURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bin := buildLatchkey(ctx, t)
	out := t.TempDir()
	rep, err := Run(ctx, Config{
		DatabaseURL: serverURL, Database: "latchkey_bench_smoke", Binary: bin, OutDir: out, Layouts: []Workers{{Tokens: 1, Mailers: 1}},
		Users: 30000, Rates: []int{50}, Phase: 2 * time.Second, Sustain: 2 * time.Second, LowRate: 2 * time.Second,
		// A small flood: 1000 logins take longer than the client's 30 s
		// timeout when the machine is busy, and would fail the smoke test
		// for the machine's speed, not the harness.
		LogLevel: "warn", Flood: 100,
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Ingress.Requests == 0 || rep.Ingress.Errors != 0 {
		t.Errorf("ingress: %+v", rep.Ingress)
	}
	p := rep.Pipelines[0]
	if p.LowRate.Accepted != 20 || p.LowRate.Received != 20 || p.LowRate.Lost != 0 || p.LowRate.Latency.P50 <= 0 {
		t.Errorf("10/s phase: %+v", p.LowRate)
	}
	if p.Sustained == nil || !p.Sustained.Passed || rep.Sustained != 50 {
		t.Errorf("sustained: %+v, %v", p.Sustained, rep.Sustained)
	}
	if rep.Login.ClosedLoop.Requests == 0 || rep.Login.FloodErrors != 0 || rep.Login.IngressPeakRSSMB <= 0 || rep.Login.BoundPerS <= 0 {
		t.Errorf("login: %+v", rep.Login)
	}
	raw, err := os.ReadFile(filepath.Join(out, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(raw, &back); err != nil || back.Cores == 0 || back.Revision == "" {
		t.Fatalf("bench.json: %v %+v", err, back)
	}
}

// buildLatchkey builds the binary the harness spawns.
func buildLatchkey(ctx context.Context, t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "latchkey")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/latchkey/latchkey/cmd/latchkey")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}
