package config_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/latchkey/latchkey/internal/config"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	cfg, err := config.Load(env(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResetTTL != 30*time.Minute || cfg.WelcomeTTL != 72*time.Hour || cfg.PasswordMinLength != 8 ||
		cfg.PasswordMaxLength != 64 || cfg.PINMinLength != 4 || cfg.PINMaxLength != 10 ||
		cfg.Disclosure != config.DisclosureExplicit || cfg.UnlockOnReset || !cfg.LoginAfterReset ||
		cfg.NATSURL != "" || cfg.LogFormat != "json" || cfg.MaxBodyBytes != 64<<10 {
		t.Fatalf("defaults = %+v", cfg)
	}
	if cfg.RateLimitPerAccount != (config.Rate{Count: 5, Window: 15 * time.Minute}) {
		t.Fatalf("rate = %v", cfg.RateLimitPerAccount)
	}
}

func TestLegacyAliasesAndPrecedence(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{
		"DELTACONTROL_RESET_TIMEOUT":        "45",
		"DELTACONTROL_RESET_UNLOCK_ACCOUNT": "YES",
		"APPSERVER_BASEURL":                 "http://netscaler_host:666/",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ResetTTL != 45*time.Minute || !cfg.UnlockOnReset || cfg.PublicBaseURL.String() != "http://netscaler_host:666" {
		t.Fatalf("aliases: ttl %v unlock %v base %v", cfg.ResetTTL, cfg.UnlockOnReset, cfg.PublicBaseURL)
	}
	// The LATCHKEY_ variable wins over the alias, and a flag over both.
	cfg, err = config.Load(env(map[string]string{"DELTACONTROL_RESET_TIMEOUT": "45", "LATCHKEY_RESET_TTL": "10m"}), nil)
	if err != nil || cfg.ResetTTL != 10*time.Minute {
		t.Fatalf("LATCHKEY_RESET_TTL over alias: %v %v", cfg.ResetTTL, err)
	}
	cfg, err = config.Load(env(map[string]string{"LATCHKEY_RESET_TTL": "10m"}), map[string]string{"RESET_TTL": "20m"})
	if err != nil || cfg.ResetTTL != 20*time.Minute {
		t.Fatalf("flag over env: %v %v", cfg.ResetTTL, err)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"LATCHKEY_RESET_TTL": "soon"}, "LATCHKEY_RESET_TTL"},
		{map[string]string{"LATCHKEY_DISCLOSURE": "loud"}, "LATCHKEY_DISCLOSURE"},
		{map[string]string{"LATCHKEY_PASSWORD_MIN_LENGTH": "ten"}, "LATCHKEY_PASSWORD_MIN_LENGTH"},
		{map[string]string{"LATCHKEY_PASSWORD_MIN_LENGTH": "70"}, "LATCHKEY_PASSWORD_MIN_LENGTH"},
		{map[string]string{"LATCHKEY_RATE_LIMIT_PER_ACCOUNT": "5 per hour"}, "LATCHKEY_RATE_LIMIT_PER_ACCOUNT"},
		{map[string]string{"LATCHKEY_PUBLIC_BASE_URL": "ftp://x"}, "LATCHKEY_PUBLIC_BASE_URL"},
		{map[string]string{"LATCHKEY_PUBLIC_BASE_URL": "/relative"}, "LATCHKEY_PUBLIC_BASE_URL"},
		{map[string]string{"LATCHKEY_SMTP_URL": "http://mail"}, "LATCHKEY_SMTP_URL"},
		{map[string]string{"LATCHKEY_MAIL_FROM_ADDRESS": "Latchkey <x@y>"}, "LATCHKEY_MAIL_FROM_ADDRESS"},
		{map[string]string{"LATCHKEY_HTTP_ADDR": "8080"}, "LATCHKEY_HTTP_ADDR"},
		{map[string]string{"LATCHKEY_ADMIN_TOKEN": "short"}, "LATCHKEY_ADMIN_TOKEN"},
		{map[string]string{"LATCHKEY_LOG_LEVEL": "verbose"}, "LATCHKEY_LOG_LEVEL"},
		{map[string]string{"DELTACONTROL_RESET_TIMEOUT": "thirty"}, "DELTACONTROL_RESET_TIMEOUT"},
		{map[string]string{"DELTACONTROL_RESET_UNLOCK_ACCOUNT": "maybe"}, "DELTACONTROL_RESET_UNLOCK_ACCOUNT"},
		{map[string]string{"LATCHKEY_PIN_MIN_LENGTH": "8", "LATCHKEY_PIN_MAX_LENGTH": "6"}, "LATCHKEY_PIN_MIN_LENGTH"},
		// Settings that contradict each other or what login accepts.
		{map[string]string{"LATCHKEY_PASSWORD_MAX_LENGTH": "1025"}, "LATCHKEY_PASSWORD_MAX_LENGTH"},
		{map[string]string{"LATCHKEY_PASSWORD_MAX_LENGTH": "1024", "LATCHKEY_MAX_BODY_BYTES": "16384"}, "LATCHKEY_MAX_BODY_BYTES"},
	}
	for _, c := range cases {
		_, err := config.Load(env(c.env), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v does not name %s", c.env, err, c.want)
		}
	}
}

func TestSecretsAreNotEchoedInErrors(t *testing.T) {
	_, err := config.Load(env(map[string]string{
		"LATCHKEY_SMTP_URL":    "http://user:hunter2secret@mail",
		"LATCHKEY_ADMIN_TOKEN": "tooshort",
	}), nil)
	if err == nil {
		t.Fatal("bad values accepted")
	}
	if strings.Contains(err.Error(), "hunter2secret") || strings.Contains(err.Error(), "tooshort") {
		t.Fatalf("error leaks a secret: %v", err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]config.Rate{"5/15m": {5, 15 * time.Minute}, "100/1s": {100, time.Second}} {
		got, err := config.ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "5", "0/1m", "-1/1m", "5/0s", "x/1m", "5/1ms"} {
		if _, err := config.ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) accepted", in)
		}
	}
}

// The README documents every setting; a new one must be added there too.
func TestEverySettingIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range config.Settings() {
		if !strings.Contains(string(readme), "`"+s.Env()+"`") {
			t.Errorf("README.md does not document %s", s.Env())
		}
	}
}
