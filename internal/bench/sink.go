package bench

import (
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// sink is an SMTP server that keeps only what the harness measures: which
// user each message was for and when its data was accepted. Keeping whole
// messages, as the test server does, would cost gigabytes at 100k emails.
type sink struct {
	srv     *smtp.Server
	ln      net.Listener
	mu      sync.Mutex
	arrived map[int]time.Time // user index → acceptance time
	other   int               // messages for recipients not from the harness
	done    chan struct{}
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k := &sink{ln: ln, arrived: map[int]time.Time{}, done: make(chan struct{})}
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

// received returns the acceptance time of each user's message so far.
func (k *sink) received() map[int]time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[int]time.Time, len(k.arrived))
	for i, t := range k.arrived {
		out[i] = t
	}
	return out
}

func (k *sink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{k: k}, nil }

type sinkSession struct {
	k  *sink
	to []string
}

func (s *sinkSession) AuthPlain(string, string) error            { return nil }
func (s *sinkSession) Mail(string, *smtp.MailOptions) error      { return nil }
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = append(s.to, to); return nil }
func (s *sinkSession) Reset()                                    { s.to = nil }
func (s *sinkSession) Logout() error                             { return nil }
func (s *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	now := time.Now()
	s.k.mu.Lock()
	defer s.k.mu.Unlock()
	for _, to := range s.to {
		if i, ok := userIndex(to); ok {
			s.k.arrived[i] = now
		} else {
			s.k.other++
		}
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
	return i, err == nil
}
