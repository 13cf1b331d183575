// Package natsembed runs nats-server with JetStream inside the process: the
// local default when no external NATS is configured, and the real server the
// tests run against.
package natsembed

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures the embedded server.
type Config struct {
	// Listen is host:port; port 0 picks a free one.
	Listen string
	// StoreDir holds JetStream's file storage.
	StoreDir string
	// ServerName names the server in JetStream metadata.
	ServerName string
}

// Server is a running embedded nats-server.
type Server struct {
	srv *server.Server
}

// Start starts the server and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	host, portText, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen port %q: %w", portText, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		// nats-server reports a port it cannot bind only to its log (off
		// here), and readiness fails after the whole wait below; find out
		// first, so the caller hears "address already in use" at once.
		probe, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats-server: %w", err)
		}
		if err := probe.Close(); err != nil {
			return nil, fmt.Errorf("embedded nats-server: probe %s: %w", cfg.Listen, err)
		}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "latchkey-embedded"
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		// No HTTP monitoring port: nothing listens that was not asked for.
		HTTPPort: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("create embedded nats-server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats-server did not become ready within 10s")
	}
	return &Server{srv: srv}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
}
