package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/internal/testkit"
)

// TestMailerKilledMidBatchSendsEveryEmailOnce is the crash drill of the
// exactly-once promise, with real processes: serve, a tokens worker and two
// mailers spawned from the binary, PostgreSQL, JetStream and an SMTP sink
// that counts every message per user. Under a steady load of password
// resets, the sink holds new messages at MAIL FROM (so that none is half
// accepted), one mailer is killed with SIGKILL while it holds claimed
// deliveries and sends in flight, the sink lets go, and the mailer is
// started again. Every request accepted must then produce exactly one email:
// the dead worker's claims expire after their lease and are sent by a live
// worker, and what it had sent before the kill had been recorded.
func TestMailerKilledMidBatchSendsEveryEmailOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	serverURL, err := testkit.ServerURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DatabaseURL: serverURL, Database: "latchkey_bench_crash", Binary: buildLatchkey(ctx, t),
		OutDir: t.TempDir(), Users: 2000, LogLevel: "info"}
	if err := os.MkdirAll(filepath.Join(cfg.OutDir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := newStack(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	// Short ack wait and SMTP timeout: the dead worker's claim lease
	// (max(2 × ack wait, 4 × (SMTP timeout + 1 s)) = 12 s) runs out soon.
	s.extraEnv = []string{"LATCHKEY_EVENT_ACK_WAIT=3s", "LATCHKEY_SMTP_TIMEOUT=2s", "LATCHKEY_SMTP_POOL=4"}
	nc, err := nats.Connect(s.nats.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if _, err := s.start("serve", "serve"); err != nil {
		t.Fatal(err)
	}
	if err := s.waitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.startWorkers(1, 2); err != nil {
		t.Fatal(err)
	}
	victim := s.procs[len(s.procs)-1] // a mailer

	// The load: one reset request per user, 100/s for 4 s, in bursts of 40
	// so that batches fill; a relay that takes 50 ms per message, so that a
	// batch's sends end one after another.
	s.sink.delay.Store(int64(50 * time.Millisecond))
	const n, burst = 400, 40
	first, err := s.takeUsers(n)
	if err != nil {
		t.Fatal(err)
	}
	accepted := make([]bool, n)
	var acceptedCount atomic.Int64
	client := newClient()
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		time.Sleep(time.Until(start.Add(time.Duration(i/burst) * burst * 10 * time.Millisecond)))
		wg.Go(func() {
			body := fmt.Appendf(nil, `{"identifier":"u%d@%s"}`, first+i, benchDomain)
			if code, err := post(ctx, client, s.apiURL+"/v1/password/forgot", body); err == nil && code == http.StatusAccepted {
				accepted[i] = true
				acceptedCount.Add(1)
			}
		})
		if i != n/3 {
			continue
		}
		time.Sleep(200 * time.Millisecond) // into the burst's sends
		// A third in: hold new messages, let the outcomes of the sends that
		// ended be recorded, and kill a mailer that has claims in flight.
		s.sink.freeze()
		waitFor(ctx, t, "messages held at the sink", func() bool { return s.sink.held.Load() >= 2 })
		// The kill must land outside the window the README admits (a 250
		// not yet recorded): wait until no message is past MAIL FROM and
		// every email the sink took is recorded as sent. A fixed pause was
		// not enough on a loaded machine (2 duplicates in one of ten runs).
		waitFor(ctx, t, "every accepted email recorded as sent", func() bool {
			if s.sink.inFlight.Load() != 0 {
				return false
			}
			var sent int64
			err := s.pool.QueryRow(ctx, "SELECT count(*) FROM mail_deliveries WHERE status = 'sent'").Scan(&sent)
			return err == nil && sent == s.sink.accepted.Load()
		})
		var sending int
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM mail_deliveries WHERE status = 'sending'").Scan(&sending); err != nil {
			t.Fatal(err)
		}
		if sending == 0 {
			t.Fatal("no delivery was being sent when the mailer was killed: the drill proves nothing")
		}
		if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-victim.done
		s.forget(victim)
		s.sink.thaw()
		t.Logf("killed a mailer with %d deliveries being sent, %d emails at the sink", sending, s.sink.accepted.Load())
		if _, err := s.start("mailer", "worker", "mailer"); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()

	// Every accepted request's email, then a quiet spell long enough for a
	// duplicate to show: a lease and a redelivery past the last arrival.
	want := acceptedCount.Load()
	waitFor(ctx, t, fmt.Sprintf("%d emails", want), func() bool { return s.sink.accepted.Load() >= want })
	waitFor(ctx, t, "no delivery left to send", func() bool {
		var open int
		err := s.pool.QueryRow(ctx, "SELECT count(*) FROM mail_deliveries WHERE status IN ('queued', 'sending')").Scan(&open)
		return err == nil && open == 0
	})
	time.Sleep(5 * time.Second)

	var lost []int
	for i, ok := range accepted {
		if _, arrived := s.sink.arrival(first + i); ok && !arrived {
			lost = append(lost, first+i)
		}
	}
	if len(lost) > 0 || s.sink.duplicates.Load() != 0 || s.sink.accepted.Load() != want {
		t.Fatalf("%d requests accepted: %d emails at the sink, %d duplicates, lost users %v",
			want, s.sink.accepted.Load(), s.sink.duplicates.Load(), lost)
	}
	var retried int
	if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM mail_deliveries WHERE status = 'sent' AND attempts > 1").Scan(&retried); err != nil {
		t.Fatal(err)
	}
	if retried == 0 {
		t.Fatal("no delivery needed a second attempt: the kill did not interrupt a batch")
	}
	t.Logf("%d requests, %d emails, none lost or repeated; %d deliveries sent again after the kill", want, s.sink.accepted.Load(), retried)
}

// waitFor polls cond until it holds, failing the test when ctx ends first.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
