package config_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/latchkey/latchkey/internal/config"
)

func TestTrustedProxies(t *testing.T) {
	cfg, err := config.Load(env(nil), nil)
	if err != nil || len(cfg.TrustedProxies) != 0 {
		t.Fatalf("default trusts %v (%v); want no proxy", cfg.TrustedProxies, err)
	}
	cfg, err = config.Load(env(map[string]string{
		"LATCHKEY_TRUSTED_PROXIES": " 10.244.0.0/16, 192.0.2.7,fd00::/8 ,::ffff:198.51.100.0/120,",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("198.51.100.0/24"),
	}
	if !slices.Equal(cfg.TrustedProxies, want) {
		t.Fatalf("TrustedProxies = %v, want %v", cfg.TrustedProxies, want)
	}
	for _, bad := range []string{"10.0.0.1/8", "10.0.0.0/33", "proxy.example", "fe80::1%eth0", "10.0.0.0/8;10.1.0.0/16"} {
		_, err := config.Load(env(map[string]string{"LATCHKEY_TRUSTED_PROXIES": bad}), nil)
		if err == nil || !strings.Contains(err.Error(), "LATCHKEY_TRUSTED_PROXIES") {
			t.Errorf("%q: error %v does not name LATCHKEY_TRUSTED_PROXIES", bad, err)
		}
	}
}
