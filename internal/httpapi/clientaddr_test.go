package httpapi

import (
	"net/netip"
	"strings"
	"testing"
)

var testProxies = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("fd00::/8"),
}

func TestResolveClientAddr(t *testing.T) {
	cases := []struct {
		name    string
		peer    string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{"no proxies configured: the peer, whatever it sends", "127.0.0.1:5000", []string{"203.0.113.9"}, nil, "127.0.0.1"},
		{"untrusted peer: its header is ignored", "198.51.100.4:5000", []string{"203.0.113.9"}, testProxies, "198.51.100.4"},
		{"trusted peer without header", "127.0.0.1:5000", nil, testProxies, "127.0.0.1"},
		{"one proxy", "127.0.0.1:5000", []string{"203.0.113.9"}, testProxies, "203.0.113.9"},
		{"the client's own prefix is not believed", "127.0.0.1:5000", []string{"192.0.2.66, 203.0.113.9"}, testProxies, "203.0.113.9"},
		{"a forged trusted entry left of the client is not reached", "127.0.0.1:5000", []string{"10.1.1.1, 203.0.113.9"}, testProxies, "203.0.113.9"},
		{"two trusted hops", "127.0.0.1:5000", []string{"203.0.113.9, 10.2.3.4"}, testProxies, "203.0.113.9"},
		{"several header lines are one list", "127.0.0.1:5000", []string{"192.0.2.66", "203.0.113.9, 10.2.3.4", "10.9.9.9"}, testProxies, "203.0.113.9"},
		{"every hop trusted: the leftmost is the client", "127.0.0.1:5000", []string{"10.7.7.7, 10.2.3.4"}, testProxies, "10.7.7.7"},
		{"malformed rightmost entry: the peer", "127.0.0.1:5000", []string{"203.0.113.9, garbage"}, testProxies, "127.0.0.1"},
		{"malformed entry stops the walk at the hop that wrote it", "127.0.0.1:5000", []string{"203.0.113.9, unknown, 10.2.3.4"}, testProxies, "10.2.3.4"},
		{"malformed entry beyond the client is never reached", "127.0.0.1:5000", []string{"<script>, 203.0.113.9"}, testProxies, "203.0.113.9"},
		{"empty entry is malformed", "127.0.0.1:5000", []string{"203.0.113.9,,10.2.3.4"}, testProxies, "10.2.3.4"},
		{"empty header is malformed", "127.0.0.1:5000", []string{""}, testProxies, "127.0.0.1"},
		{"unspecified address is malformed", "127.0.0.1:5000", []string{"203.0.113.9, 0.0.0.0"}, testProxies, "127.0.0.1"},
		{"IPv6 client", "[fd00::1]:5000", []string{"2001:db8:1:2::99"}, testProxies, "2001:db8:1:2::99"},
		{"IPv4-mapped peer is IPv4", "[::ffff:127.0.0.1]:5000", []string{"203.0.113.9"}, testProxies, "203.0.113.9"},
		{"IPv4-mapped client is IPv4", "127.0.0.1:5000", []string{"::ffff:203.0.113.9"}, testProxies, "203.0.113.9"},
		{"IPv4-mapped trusted hop", "127.0.0.1:5000", []string{"203.0.113.9, ::ffff:10.2.3.4"}, testProxies, "203.0.113.9"},
		{"entries with ports and brackets", "127.0.0.1:5000", []string{"[2001:db8::7]:443, 10.2.3.4:8080"}, testProxies, "2001:db8::7"},
		{"bracketed IPv6 without port", "127.0.0.1:5000", []string{"[2001:db8::7]"}, testProxies, "2001:db8::7"},
		{"zone dropped", "127.0.0.1:5000", []string{"fe80::1%eth0"}, testProxies, "fe80::1"},
		{"peer without port", "127.0.0.1", []string{"203.0.113.9"}, testProxies, "203.0.113.9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := resolveClientAddr(c.peer, c.xff, c.trusted)
			if got.String() != c.want {
				t.Fatalf("resolveClientAddr(%q, %q) = %s, want %s", c.peer, c.xff, got, c.want)
			}
		})
	}
	if got := resolveClientAddr("@", []string{"203.0.113.9"}, testProxies); got.IsValid() {
		t.Fatalf("an unparsable peer resolved to %s; want invalid (and the header ignored)", got)
	}
}

// FuzzResolveClientAddr checks the properties that make the address safe
// to key a rate limit by, for any header a client or proxy may send: an
// untrusted peer is always the client; otherwise the client is the peer or
// one of the entries, and every entry to its right is a valid trusted hop.
func FuzzResolveClientAddr(f *testing.F) {
	f.Add("127.0.0.1:5000", "203.0.113.9, 10.2.3.4", "10.9.9.9")
	f.Add("198.51.100.4:1", "203.0.113.9", "")
	f.Add("[fd00::1]:5000", "[2001:db8::7]:443,,garbage", "::ffff:10.0.0.1")
	f.Add("127.0.0.1:5000", "10.1.1.1", "fe80::1%eth0, 0.0.0.0")
	f.Fuzz(func(t *testing.T, peer, line1, line2 string) {
		xff := []string{line1, line2}
		got := resolveClientAddr(peer, xff, testProxies)
		p := parseHop(peer)
		if !p.IsValid() || !isTrusted(p, testProxies) {
			if got != p {
				t.Fatalf("untrusted peer %q: client %s, want the peer", peer, got)
			}
			return
		}
		if !got.IsValid() {
			t.Fatalf("trusted peer %q gave an invalid client", peer)
		}
		if got == p {
			return
		}
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			h := parseHop(strings.TrimSpace(hops[i]))
			if h == got {
				return
			}
			if !h.IsValid() || !isTrusted(h, testProxies) {
				t.Fatalf("client %s lies beyond entry %q, which is not a valid trusted hop (xff %q)", got, hops[i], xff)
			}
		}
		t.Fatalf("client %s is neither the peer nor an entry of %q", got, xff)
	})
}
