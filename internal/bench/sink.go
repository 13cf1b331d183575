package bench

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is an SMTP server that keeps only what the harness measures: when
// each seeded user's message was accepted. Keeping whole messages, as the
// test server does, would cost gigabytes at 100k emails; a slot per user,
// written once, lets the harness read arrivals without locks or copies
// while the system under test is still sending.
type sink struct {
	srv        *smtp.Server
	ln         net.Listener
	arrived    []atomic.Int64 // user index → acceptance time (Unix ns), 0 until then
	accepted   atomic.Int64   // messages for seeded users, duplicates included
	duplicates atomic.Int64   // messages for a user who already had one
	done       chan struct{}
	// gate, when set, holds every new message at MAIL FROM until it is
	// closed (freeze, thaw); held counts the sessions it holds.
	gate atomic.Pointer[chan struct{}]
	held atomic.Int64
	// inFlight counts messages past MAIL FROM whose data is not yet
	// accepted: after a freeze it drains to zero.
	inFlight atomic.Int64
	// delay, in nanoseconds, is how long the sink takes to accept a
	// message's data, as a slow relay would.
	delay atomic.Int64
}

// freeze holds every message about to start at MAIL FROM, before any of it
// is accepted: what a crash drill needs to know that no email is half
// accepted while it kills a worker.
func (k *sink) freeze() {
	ch := make(chan struct{})
	k.gate.Store(&ch)
}

// thaw lets held messages go on; a message whose client died meanwhile
// never reaches DATA and is not counted.
func (k *sink) thaw() {
	if g := k.gate.Swap(nil); g != nil {
		close(*g)
	}
}

func startSink(users int) (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &sink{ln: ln, arrived: make([]atomic.Int64, users), done: make(chan struct{})}
	k.srv = smtp.NewServer(k)
	k.srv.Domain = "bench.localhost"
	k.srv.AllowInsecureAuth = true
	k.srv.ReadTimeout = time.Minute
	k.srv.WriteTimeout = time.Minute
	go func() { defer close(k.done); _ = k.srv.Serve(ln) }()
	return k, nil
}

func (k *sink) URL() string { return "smtp://" + k.ln.Addr().String() }

func (k *sink) Close() {
	_ = k.srv.Close()
	<-k.done
}

// arrival is when user i's first message was accepted.
func (k *sink) arrival(i int) (time.Time, bool) {
	ns := k.arrived[i].Load()
	return time.Unix(0, ns), ns != 0
}

func (k *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{k: k}, nil }

type sinkSession struct {
	k    *sink
	to   []string
	open bool // counted in k.inFlight
}

// settle ends the session's message in k.inFlight, once.
func (s *sinkSession) settle() {
	if s.open {
		s.open = false
		s.k.inFlight.Add(-1)
	}
}

func (s *sinkSession) AuthPlain(string, string) error { return nil }
func (s *sinkSession) Mail(string, *smtp.MailOptions) error {
	if g := s.k.gate.Load(); g != nil {
		s.k.held.Add(1)
		<-*g
		s.k.held.Add(-1)
	}
	s.open = true
	s.k.inFlight.Add(1)
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }
func (s *sinkSession) Reset()                                    { s.to = nil; s.settle() }
func (s *sinkSession) Logout() error                             { s.settle(); return nil }
func (s *sinkSession) Data(r io.Reader) error {
	defer s.settle()
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	time.Sleep(time.Duration(s.k.delay.Load()))
	now := time.Now().UnixNano()
	for _, to := range s.to {
		i, ok := userIndex(to)
		if !ok || i >= len(s.k.arrived) {
			continue // not a seeded user: nothing to measure
		}
		if !s.k.arrived[i].CompareAndSwap(0, now) {
			s.k.duplicates.Add(1)
		}
		s.k.accepted.Add(1)
	}
	s.to = nil
	return nil
}

// userIndex reads i from the address u<i>@bench.example.
func userIndex(addr string) (int, bool) {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || domain != emailDomain || !strings.HasPrefix(local, "u") {
		return 0, false
	}
	i, err := strconv.Atoi(local[1:])
	return i, err == nil && i >= 0
}
