package testkit

import (
	"net/url"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/internal/natsembed"
)

// NATS is an in-process nats-server with JetStream storing in a temp dir.
type NATS struct {
	Server   *natsembed.Server
	URL      string
	storeDir string
	mu       sync.Mutex
}

// NewNATS starts a server on a free loopback port, stopped when the test ends.
func NewNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{storeDir: t.TempDir()}
	srv, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: n.storeDir})
	if err != nil {
		t.Fatalf("testkit: start nats-server: %v", err)
	}
	n.Server, n.URL = srv, srv.ClientURL()
	t.Cleanup(func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.Server != nil {
			n.Server.Shutdown()
		}
	})
	return n
}

// Stop shuts the server down, as a crash or a restart would.
func (n *NATS) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Server.Shutdown()
	n.Server = nil
}

// Start brings a stopped server back on the same address and storage.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	u, err := url.Parse(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := natsembed.Start(natsembed.Config{Listen: u.Host, StoreDir: n.storeDir})
	if err != nil {
		t.Fatalf("testkit: restart nats-server: %v", err)
	}
	n.Server = srv
}

// Connect opens a client connection, closed when the test ends.
func (n *NATS) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatalf("testkit: connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("testkit: jetstream: %v", err)
	}
	return nc, js
}
