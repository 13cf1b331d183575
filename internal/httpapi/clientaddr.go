package httpapi

import (
	"context"
	"net/http"
	"net/netip"
	"strings"
)

// resolveClientAddr picks the client's address for rate limits, audit and
// logs (SPEC §5.9). The TCP peer is the client unless it is in trusted; then
// X-Forwarded-For (all its header lines, in order, as one list) is walked
// from the right, each trusted hop vouching for the entry to its left, and
// the first untrusted entry is the client. Only the right end of the list
// can be believed: a client may put anything at the left end, and each
// proxy appends the address it saw.
//
// When every entry is trusted, the leftmost is the client (a client inside
// a trusted range). A malformed entry stops the walk at the hop that wrote
// it, the nearest address still vouched for: the walk never believes what
// lies beyond an entry it cannot read. The result is unmapped (IPv4-mapped
// IPv6 becomes IPv4) and without zone; it is invalid only when the peer
// itself cannot be parsed.
func resolveClientAddr(remoteAddr string, forwardedFor []string, trusted []netip.Prefix) netip.Addr {
	client := parseHop(remoteAddr)
	if !client.IsValid() || !isTrusted(client, trusted) || len(forwardedFor) == 0 {
		return client
	}
	hops := strings.Split(strings.Join(forwardedFor, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := parseHop(strings.TrimSpace(hops[i]))
		if !hop.IsValid() {
			return client
		}
		client = hop
		if !isTrusted(hop, trusted) {
			return hop
		}
	}
	return client
}

// parseHop reads an address as proxies write it: bare (192.0.2.1,
// 2001:db8::1), bracketed ([2001:db8::1]) or with a port (192.0.2.1:443,
// [2001:db8::1]:443). The unspecified address is no client's, and is
// refused like anything else that does not parse.
func parseHop(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(s); perr == nil {
			a, err = ap.Addr(), nil
		} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
			a, err = netip.ParseAddr(s[1 : len(s)-1])
		}
	}
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

type clientAddrKey struct{}

// withClientAddr resolves the request's client address once, for every
// later use in the request.
func (s *Server) withClientAddr(r *http.Request) *http.Request {
	a := resolveClientAddr(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), s.cfg.TrustedProxies)
	return r.WithContext(context.WithValue(r.Context(), clientAddrKey{}, a))
}

// clientIP is the client address the middleware resolved (invalid when the
// peer address could not be parsed).
func clientIP(ctx context.Context) netip.Addr {
	a, _ := ctx.Value(clientAddrKey{}).(netip.Addr)
	return a
}
