package mailer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/smtptest"
	"github.com/latchkey/latchkey/internal/testkit"
)

// smtps against smtptest, which speaks plain SMTP only, through a
// TLS-terminating proxy: this is the path where our dialler does the
// handshake and go-mail must still see a *tls.Conn.
func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	srv := smtptest.NewStarted(t, smtptest.Config{})
	cert, roots := selfSigned(t)
	proxy := tlsProxy(t, cert, srv.Addr())

	newSender := func(t *testing.T) *Sender {
		u, err := url.Parse("smtps://mailer:s3cret@" + proxy)
		if err != nil {
			t.Fatal(err)
		}
		log, _ := testkit.NewLogger(t)
		s, err := New(Config{URL: u, Timeout: 5 * time.Second}, log)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	m := Message{FromAddress: "no-reply@latchkey.test", ToAddress: "ada@example.org", Subject: "s", Text: "t"}

	untrusting := newSender(t)
	err := untrusting.Send(t.Context(), m)
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); !ok {
		t.Errorf("send to an untrusted certificate: err = %v, want a verification error", err)
	}

	s := newSender(t)
	// The same *tls.Config go-mail was given, so this reaches every dial.
	s.tlsConfig.RootCAs = roots
	for range 2 {
		if err := s.Send(t.Context(), m); err != nil {
			t.Fatalf("send over TLS: %v", err)
		}
	}
	msgs := srv.Messages()
	if len(msgs) != 2 || msgs[0].AuthUser != "mailer" || msgs[0].ConnID != msgs[1].ConnID {
		t.Errorf("messages = %+v, want two on one authenticated connection", msgs)
	}
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "smtptest"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// tlsProxy accepts TLS on loopback and relays the plaintext to backend,
// until the test ends.
func tlsProxy(t *testing.T, cert tls.Certificate, backend string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	wg.Go(func() {
		for {
			front, err := ln.Accept()
			if err != nil {
				return
			}
			back, err := net.Dial("tcp", backend)
			if err != nil {
				_ = front.Close()
				continue
			}
			track(front)
			track(back)
			relay := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				_ = dst.Close()
				_ = src.Close()
			}
			wg.Go(func() { relay(back, front) })
			wg.Go(func() { relay(front, back) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
