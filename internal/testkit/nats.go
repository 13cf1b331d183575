package testkit

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/latchkey/latchkey/internal/natsembed"
)

// NATS is an in-process nats-server with JetStream storing in a temp dir.
type NATS struct {
	Server *natsembed.Server
	URL    string
}

// NewNATS starts a server on a free loopback port, stopped when the test ends.
func NewNATS(t testing.TB) *NATS {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("testkit: start nats-server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	return &NATS{Server: srv, URL: srv.ClientURL()}
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
