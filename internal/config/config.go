// Package config reads Latchkey's configuration from LATCHKEY_* environment
// variables (and the legacy servlet's aliases), with command-line flags taking
// precedence. Every setting is declared once in the settings table below, so
// parsing, validation, flags and the README's table cannot drift apart.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/latchkey/latchkey/internal/credential"
)

// Prefix is put in front of every setting's name to make its environment variable.
const Prefix = "LATCHKEY_"

// Disclosure says whether the recovery endpoints tell a caller that an
// account does not exist.
type Disclosure string

const (
	DisclosureExplicit Disclosure = "explicit"
	DisclosureUniform  Disclosure = "uniform"
)

// Rate is an allowance of N events per window.
type Rate struct {
	Count  int
	Window time.Duration
}

func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Count, r.Window) }

// Config is the whole configuration of one Latchkey process.
type Config struct {
	DatabaseURL string
	DBMaxConns  int
	NATSURL     string // empty: run nats-server embedded in the process
	NATSListen  string // where the embedded nats-server listens
	DataDir     string

	StreamReplicas  int
	StreamMaxAge    time.Duration
	EventAckWait    time.Duration
	EventMaxDeliver int

	HTTPAddr      string
	OpsAddr       string
	PprofAddr     string
	SMTPPool      int
	SMTPTimeout   time.Duration
	PublicBaseURL *url.URL
	MaxBodyBytes  int64

	SMTPURL         *url.URL
	MailFromName    string
	MailFromAddress string

	ResetTTL   time.Duration
	WelcomeTTL time.Duration
	SessionTTL time.Duration

	PasswordMinLength int
	PasswordMaxLength int
	PINMinLength      int
	PINMaxLength      int

	Disclosure          Disclosure
	LockoutThreshold    int
	LockoutDuration     time.Duration
	UnlockOnReset       bool
	LoginAfterReset     bool
	LegacyConfirmPage   bool
	RateLimitPerAccount Rate
	RateLimitPerAddress Rate
	TrustedProxies      []netip.Prefix // peers whose X-Forwarded-For is believed

	AdminToken string

	LogLevel  string
	LogFormat string

	ShutdownTimeout time.Duration
	DevMailboxURL   string

	// defaulted holds the names of the settings that took their default:
	// neither a flag, nor the variable, nor an alias set them.
	defaulted map[string]bool
}

// IsDefault reports whether the setting name (without Prefix) took its
// default value, so a command may derive a better one (latchkey dev derives
// PUBLIC_BASE_URL from the address it listens on).
func (c Config) IsDefault(name string) bool { return c.defaulted[name] }

// Part is a piece of a process that reads settings. Each setting says which
// parts read it and each command which parts it runs, so a command's help
// lists only the settings it uses.
type Part uint16

const (
	PartLog      Part = 1 << iota // logging: every command
	PartDatabase                  // a PostgreSQL connection: every command but version
	PartPool                      // a pool of PostgreSQL connections: every command but bench
	PartService                   // a long-running process with NATS JetStream: serve, worker, dev
	PartIngress                   // the HTTP API: serve, dev
	PartWorkers                   // the worker roles: worker, dev
	PartOps                       // the health and metrics listener of worker processes
	PartDev                       // latchkey dev only
)

// Setting describes one configuration variable.
type Setting struct {
	Name    string // without Prefix
	Type    string // what the value is, as help shows it: int, duration, bool, url, explicit|uniform…
	Used    Part   // the parts of a process that read it
	Default string
	Help    string
	Secret  bool
	// Aliases are legacy variable names honoured when the LATCHKEY_ one is
	// unset; convert turns the legacy value into this setting's format.
	Aliases []Alias
	set     func(*Config, string) error
}

// Alias is a legacy environment variable that feeds a setting.
type Alias struct {
	Env     string
	convert func(string) (string, error)
}

// Env is the setting's environment variable.
func (s Setting) Env() string { return Prefix + s.Name }

// Flag is the setting's command-line flag name, e.g. http-addr.
func (s Setting) Flag() string { return strings.ToLower(strings.ReplaceAll(s.Name, "_", "-")) }

// SettingsOf lists the settings that the given parts read, in the order of
// Settings.
func SettingsOf(parts Part) []Setting {
	var out []Setting
	for _, s := range Settings() {
		if s.Used&parts != 0 {
			out = append(out, s)
		}
	}
	return out
}

// Settings lists every setting, in the order the README documents them.
func Settings() []Setting {
	return []Setting{
		{Name: "DATABASE_URL", Type: "url", Used: PartDatabase, Default: "postgres://postgres@127.0.0.1:55432/latchkey?sslmode=disable", Secret: true,
			Help: "PostgreSQL connection URL (the default is the private cluster of `make run`/`make test`).",
			set:  func(c *Config, v string) error { c.DatabaseURL = v; return requireNonEmpty(v) }},
		{Name: "DB_MAX_CONNS", Type: "int", Used: PartPool, Default: "16",
			Help: "PostgreSQL connections per process. Workers handle events concurrently and the ingress serves many requests at once; pgx's own default (4) starves both.",
			set:  func(c *Config, v string) (err error) { c.DBMaxConns, err = parseIntRange(v, 1, 1000); return }},
		{Name: "NATS_URL", Type: "urls", Used: PartService, Default: "",
			Help: "NATS server URLs, comma-separated. Empty runs nats-server with JetStream inside the process.",
			set:  func(c *Config, v string) error { c.NATSURL = v; return nil }},
		{Name: "NATS_LISTEN", Type: "host:port", Used: PartService, Default: "127.0.0.1:4222",
			Help: "Where the embedded nats-server listens, so separate worker processes can join it. Port 0 picks a free one.",
			set:  func(c *Config, v string) error { c.NATSListen = v; return parseHostPort(v) }},
		{Name: "DATA_DIR", Type: "path", Used: PartService, Default: "data",
			Help: "Local state: the embedded nats-server's JetStream storage.",
			set:  func(c *Config, v string) error { c.DataDir = v; return requireNonEmpty(v) }},
		{Name: "STREAM_REPLICAS", Type: "int", Used: PartService, Default: "1",
			Help: "Replicas of the JetStream stream (1 locally, 3 in a cluster).",
			set:  func(c *Config, v string) (err error) { c.StreamReplicas, err = parseIntRange(v, 1, 5); return }},
		{Name: "STREAM_MAX_AGE", Type: "duration", Used: PartService, Default: "168h",
			Help: "How long the stream keeps events.",
			set:  func(c *Config, v string) (err error) { c.StreamMaxAge, err = parseDuration(v, time.Minute); return }},
		{Name: "EVENT_ACK_WAIT", Type: "duration", Used: PartWorkers, Default: "30s",
			Help: "How long a worker may hold an event before JetStream redelivers it.",
			set:  func(c *Config, v string) (err error) { c.EventAckWait, err = parseDuration(v, time.Second); return }},
		{Name: "EVENT_MAX_DELIVER", Type: "int", Used: PartWorkers, Default: "8",
			Help: "Deliveries of one event before it becomes a dead letter.",
			set:  func(c *Config, v string) (err error) { c.EventMaxDeliver, err = parseIntRange(v, 1, 100); return }},
		{Name: "HTTP_ADDR", Type: "host:port", Used: PartIngress, Default: "127.0.0.1:8080",
			Help: "Listen address of the HTTP API.",
			set:  func(c *Config, v string) error { c.HTTPAddr = v; return parseHostPort(v) }},
		{Name: "OPS_ADDR", Type: "host:port", Used: PartOps, Default: "",
			Help: "Listen address for /healthz, /readyz and /metrics in processes without the HTTP API (workers). Empty: off.",
			set: func(c *Config, v string) error {
				c.OpsAddr = v
				if v == "" {
					return nil
				}
				return parseHostPort(v)
			}},
		{Name: "PPROF_ADDR", Type: "host:port", Used: PartService, Default: "",
			Help: "Listen address for Go's /debug/pprof profiles. Empty: off. Never expose it publicly.",
			set: func(c *Config, v string) error {
				c.PprofAddr = v
				if v == "" {
					return nil
				}
				return parseHostPort(v)
			}},
		{Name: "PUBLIC_BASE_URL", Type: "url", Used: PartWorkers, Default: "http://127.0.0.1:8080",
			Help:    "Base of every link in email. Links are never built from request headers.",
			Aliases: []Alias{{Env: "APPSERVER_BASEURL", convert: identity}},
			set:     func(c *Config, v string) (err error) { c.PublicBaseURL, err = parseBaseURL(v); return }},
		{Name: "MAX_BODY_BYTES", Type: "int", Used: PartIngress, Default: "65536",
			Help: "Largest request body accepted; larger ones get 413.",
			set: func(c *Config, v string) error {
				n, err := parseIntRange(v, 1024, 1<<24)
				c.MaxBodyBytes = int64(n)
				return err
			}},
		{Name: "SMTP_URL", Type: "url", Used: PartWorkers, Default: "smtp://127.0.0.1:1025", Secret: true,
			Help: "SMTP server: `smtp://[user:pass@]host:port` (STARTTLS when offered; `?starttls=required` to insist) or `smtps://` for implicit TLS.",
			set:  func(c *Config, v string) (err error) { c.SMTPURL, err = parseSMTPURL(v); return }},
		{Name: "SMTP_POOL", Type: "int", Used: PartWorkers, Default: "8",
			Help: "Persistent SMTP connections per mailer process; also how many emails it sends at once.",
			set:  func(c *Config, v string) (err error) { c.SMTPPool, err = parseIntRange(v, 1, 256); return }},
		{Name: "SMTP_TIMEOUT", Type: "duration", Used: PartWorkers, Default: "15s",
			Help: "How long one email may take over SMTP (connecting if need be, then MAIL FROM to the end of DATA). A delivery being sent is leased to its worker for at least 4 of these.",
			set:  func(c *Config, v string) (err error) { c.SMTPTimeout, err = parseDuration(v, time.Second); return }},
		{Name: "MAIL_FROM_NAME", Type: "string", Used: PartWorkers, Default: "Latchkey",
			Help: "Sender name of every email (a per-domain override is possible).",
			set:  func(c *Config, v string) error { c.MailFromName = v; return rejectControl(v) }},
		{Name: "MAIL_FROM_ADDRESS", Type: "email", Used: PartWorkers, Default: "no-reply@latchkey.localhost",
			Help: "Sender address of every email (a per-domain override is possible).",
			set:  func(c *Config, v string) error { c.MailFromAddress = v; return parseAddress(v) }},
		{Name: "RESET_TTL", Type: "duration", Used: PartWorkers, Default: "30m",
			Help:    "Lifetime of a password-reset link (and of a legacy confirmation link).",
			Aliases: []Alias{{Env: "DELTACONTROL_RESET_TIMEOUT", convert: minutesToDuration}},
			set:     func(c *Config, v string) (err error) { c.ResetTTL, err = parseDuration(v, time.Minute); return }},
		{Name: "WELCOME_TTL", Type: "duration", Used: PartWorkers, Default: "72h",
			Help: "Lifetime of a welcome (setup) link.",
			set:  func(c *Config, v string) (err error) { c.WelcomeTTL, err = parseDuration(v, time.Minute); return }},
		{Name: "SESSION_TTL", Type: "duration", Used: PartIngress, Default: "12h",
			Help: "Lifetime of a login session.",
			set:  func(c *Config, v string) (err error) { c.SessionTTL, err = parseDuration(v, time.Minute); return }},
		{Name: "PASSWORD_MIN_LENGTH", Type: "int", Used: PartIngress, Default: "8",
			Help: "Shortest password accepted, in characters.",
			set: func(c *Config, v string) (err error) {
				c.PasswordMinLength, err = parseIntRange(v, 1, credential.MaxSecretLength)
				return
			}},
		{Name: "PASSWORD_MAX_LENGTH", Type: "int", Used: PartIngress, Default: "64",
			Help: "Longest password accepted, in characters.",
			set: func(c *Config, v string) (err error) {
				c.PasswordMaxLength, err = parseIntRange(v, 1, credential.MaxSecretLength)
				return
			}},
		{Name: "PIN_MIN_LENGTH", Type: "int", Used: PartIngress, Default: "4",
			Help: "Shortest voicemail PIN accepted, in digits.",
			set:  func(c *Config, v string) (err error) { c.PINMinLength, err = parseIntRange(v, 1, 64); return }},
		{Name: "PIN_MAX_LENGTH", Type: "int", Used: PartIngress, Default: "10",
			Help: "Longest voicemail PIN accepted, in digits.",
			set:  func(c *Config, v string) (err error) { c.PINMaxLength, err = parseIntRange(v, 1, 64); return }},
		{Name: "DISCLOSURE", Type: "explicit|uniform", Used: PartIngress, Default: "explicit",
			Help: "`explicit`: recovery endpoints say when an account is unknown or ambiguous. `uniform`: they always answer alike.",
			set: func(c *Config, v string) error {
				switch Disclosure(v) {
				case DisclosureExplicit, DisclosureUniform:
					c.Disclosure = Disclosure(v)
					return nil
				}
				return errors.New("must be explicit or uniform")
			}},
		{Name: "LOCKOUT_THRESHOLD", Type: "int", Used: PartIngress | PartWorkers, Default: "5",
			Help: "Failed logins in a row that lock an account.",
			set:  func(c *Config, v string) (err error) { c.LockoutThreshold, err = parseIntRange(v, 1, 1000); return }},
		{Name: "LOCKOUT_DURATION", Type: "duration", Used: PartIngress | PartWorkers, Default: "15m",
			Help: "How long a locked account stays locked.",
			set:  func(c *Config, v string) (err error) { c.LockoutDuration, err = parseDuration(v, time.Second); return }},
		{Name: "UNLOCK_ON_RESET", Type: "bool", Used: PartWorkers, Default: "false",
			Help:    "A password-reset request unlocks a locked account.",
			Aliases: []Alias{{Env: "DELTACONTROL_RESET_UNLOCK_ACCOUNT", convert: boolText}},
			set:     func(c *Config, v string) (err error) { c.UnlockOnReset, err = ParseBool(v); return }},
		{Name: "LOGIN_AFTER_RESET", Type: "bool", Used: PartIngress, Default: "true",
			Help: "A successful password reset answers with a session (the user is logged in).",
			set:  func(c *Config, v string) (err error) { c.LoginAfterReset, err = ParseBool(v); return }},
		{Name: "LEGACY_CONFIRM_PAGE", Type: "bool", Used: PartIngress, Default: "false",
			Help: "The legacy confirm link shows a page whose button confirms, for sites whose mail scanners click links.",
			set:  func(c *Config, v string) (err error) { c.LegacyConfirmPage, err = ParseBool(v); return }},
		{Name: "RATE_LIMIT_PER_ACCOUNT", Type: "N/duration", Used: PartIngress | PartWorkers, Default: "5/15m",
			Help: "Recovery requests allowed per account, as `N/duration`. Shared by every ingress process (state in PostgreSQL).",
			set:  func(c *Config, v string) (err error) { c.RateLimitPerAccount, err = ParseRate(v); return }},
		{Name: "RATE_LIMIT_PER_ADDRESS", Type: "N/duration", Used: PartIngress, Default: "30/15m",
			Help: "Recovery and login requests allowed per client address (an IPv6 client counts by its /64), as `N/duration`; login and recovery count separately. Shared by every ingress process (state in PostgreSQL).",
			set:  func(c *Config, v string) (err error) { c.RateLimitPerAddress, err = ParseRate(v); return }},
		{Name: "TRUSTED_PROXIES", Type: "CIDRs", Used: PartIngress, Default: "",
			Help: "Proxies in front of the HTTP API, as comma-separated CIDR ranges or addresses (e.g. `10.244.0.0/16`). Only from these peers is `X-Forwarded-For` believed when picking the client address for rate limits, audit and logs. Empty: none; the client is the TCP peer.",
			set:  func(c *Config, v string) (err error) { c.TrustedProxies, err = ParsePrefixes(v); return }},
		{Name: "ADMIN_TOKEN", Type: "string", Used: PartIngress, Default: "", Secret: true,
			Help: "Bootstrap admin credential (at least 16 characters). Empty: only keys from `latchkey admin-key create` work.",
			set: func(c *Config, v string) error {
				c.AdminToken = v
				if v != "" && len(v) < 16 {
					return errors.New("must be at least 16 characters long")
				}
				return nil
			}},
		{Name: "LOG_LEVEL", Type: "debug|info|warn|error", Used: PartLog, Default: "info",
			Help: "debug, info, warn or error.",
			set: func(c *Config, v string) error {
				switch v {
				case "debug", "info", "warn", "error":
					c.LogLevel = v
					return nil
				}
				return errors.New("must be debug, info, warn or error")
			}},
		{Name: "LOG_FORMAT", Type: "json|console", Used: PartLog, Default: "json",
			Help: "json, or console for people.",
			set: func(c *Config, v string) error {
				switch v {
				case "json", "console":
					c.LogFormat = v
					return nil
				}
				return errors.New("must be json or console")
			}},
		{Name: "SHUTDOWN_TIMEOUT", Type: "duration", Used: PartService, Default: "30s",
			Help: "How long a stopping process waits for in-flight work.",
			set:  func(c *Config, v string) (err error) { c.ShutdownTimeout, err = parseDuration(v, time.Second); return }},
		{Name: "DEV_MAILBOX_URL", Type: "url", Used: PartDev, Default: "",
			Help: "Printed by `latchkey dev` as the web mailbox of the local SMTP sink.",
			set:  func(c *Config, v string) error { c.DevMailboxURL = v; return nil }},
	}
}

// Load builds the configuration. lookup reads the environment (os.LookupEnv);
// overrides holds flag values by setting name and wins over the environment.
// The error names the variable at fault.
func Load(lookup func(string) (string, bool), overrides map[string]string) (Config, error) {
	cfg := Config{defaulted: map[string]bool{}}
	var errs []error
	for _, s := range Settings() {
		value, source, err := resolve(s, lookup, overrides)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if source == defaultSource(s) {
			cfg.defaulted[s.Name] = true
		}
		if err := s.set(&cfg, value); err != nil {
			errs = append(errs, fmt.Errorf("%s: invalid value %s: %w", source, quoteUnlessSecret(s, value), err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, cfg.crossCheck()...)
	}
	return cfg, errors.Join(errs...)
}

func resolve(s Setting, lookup func(string) (string, bool), overrides map[string]string) (value, source string, err error) {
	if v, ok := overrides[s.Name]; ok {
		return v, "--" + s.Flag(), nil
	}
	if v, ok := lookup(s.Env()); ok {
		return v, s.Env(), nil
	}
	for _, a := range s.Aliases {
		if v, ok := lookup(a.Env); ok {
			converted, err := a.convert(v)
			if err != nil {
				return "", "", fmt.Errorf("%s: invalid value %q: %w", a.Env, v, err)
			}
			return converted, a.Env, nil
		}
	}
	return s.Default, defaultSource(s), nil
}

func defaultSource(s Setting) string { return s.Env() + " (default)" }

func (c *Config) crossCheck() []error {
	var errs []error
	if c.PasswordMinLength > c.PasswordMaxLength {
		errs = append(errs, fmt.Errorf("%sPASSWORD_MIN_LENGTH (%d) must not exceed %sPASSWORD_MAX_LENGTH (%d)",
			Prefix, c.PasswordMinLength, Prefix, c.PasswordMaxLength))
	}
	// The longest password, escaped the longest way JSON allows (\uXXXX\uXXXX,
	// 12 bytes a code point) twice (new and confirm), must fit in a body,
	// or it could be accepted by the policy yet never sent.
	if need := 2*12*int64(c.PasswordMaxLength) + 1024; c.MaxBodyBytes < need {
		errs = append(errs, fmt.Errorf("%sMAX_BODY_BYTES (%d) is too small for passwords of %sPASSWORD_MAX_LENGTH (%d) characters: it must be at least %d",
			Prefix, c.MaxBodyBytes, Prefix, c.PasswordMaxLength, need))
	}
	if c.PINMinLength > c.PINMaxLength {
		errs = append(errs, fmt.Errorf("%sPIN_MIN_LENGTH (%d) must not exceed %sPIN_MAX_LENGTH (%d)",
			Prefix, c.PINMinLength, Prefix, c.PINMaxLength))
	}
	return errs
}

func quoteUnlessSecret(s Setting, v string) string {
	if s.Secret {
		return "(redacted)"
	}
	return strconv.Quote(v)
}

func identity(v string) (string, error) { return v, nil }

func minutesToDuration(v string) (string, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 {
		return "", errors.New("must be a whole number of minutes, at least 1")
	}
	return (time.Duration(n) * time.Minute).String(), nil
}

// boolText converts the legacy servlet's YES/NO (or any boolean ParseBool
// accepts) to this setting's format.
func boolText(v string) (string, error) {
	b, err := ParseBool(v)
	return strconv.FormatBool(b), err
}

// ParseBool reads a boolean the way people write one: true/false, yes/no,
// 1/0, in any case, with surrounding spaces ignored; t/f too, which earlier
// versions accepted (strconv.ParseBool). Every boolean setting, alias and
// flag is read with it.
func ParseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "1", "t":
		return true, nil
	case "false", "no", "0", "f":
		return false, nil
	}
	return false, errors.New("must be true or false (yes/no and 1/0 work too)")
}

func requireNonEmpty(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func rejectControl(v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return errors.New("must not contain line breaks")
	}
	return nil
}

func parseIntRange(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, errors.New("must be a whole number")
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("must be between %d and %d", lo, hi)
	}
	return n, nil
}

func parseDuration(v string, least time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, errors.New("must be a duration such as 30m or 72h")
	}
	if d < least {
		return 0, fmt.Errorf("must be at least %s", least)
	}
	return d, nil
}

func parseHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return errors.New("must be host:port, e.g. 127.0.0.1:8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

func parseBaseURL(v string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil {
		return nil, errors.New("must be an absolute http or https URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("must be an absolute http or https URL")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("must not carry a query, fragment or credentials")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

func parseSMTPURL(v string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(v))
	if err != nil {
		// url.Parse's error repeats the URL, which may hold a password.
		return nil, errors.New("must be smtp://host:port or smtps://host:port")
	}
	if (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Hostname() == "" {
		return nil, errors.New("must be smtp://host:port or smtps://host:port")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, errors.New("port must be a number from 1 to 65535")
		}
	}
	switch u.Query().Get("starttls") {
	case "", "opportunistic", "required", "off":
	default:
		return nil, errors.New("starttls must be opportunistic, required or off")
	}
	return u, nil
}

func parseAddress(v string) error {
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v {
		return errors.New("must be a plain email address such as no-reply@example.com")
	}
	return nil
}

// ParseRate reads `N/duration`, e.g. 5/15m.
func ParseRate(v string) (Rate, error) {
	count, window, ok := strings.Cut(strings.TrimSpace(v), "/")
	if !ok {
		return Rate{}, errors.New("must be N/duration, e.g. 5/15m")
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		return Rate{}, errors.New("must be N/duration with N at least 1, e.g. 5/15m")
	}
	d, err := time.ParseDuration(window)
	if err != nil || d < time.Second {
		return Rate{}, errors.New("must be N/duration with a duration of at least 1s, e.g. 5/15m")
	}
	return Rate{Count: n, Window: d}, nil
}

// ParsePrefixes reads a comma-separated list of CIDR ranges or single
// addresses (a single address is its own /32 or /128). An IPv4-mapped IPv6
// range becomes the IPv4 range, as client addresses are compared unmapped.
// A range with host bits set (10.0.0.1/8) is refused rather than guessed.
func ParsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(item, "/") {
			var err error
			if p, err = netip.ParsePrefix(item); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR range such as 10.0.0.0/8 or fd00::/8", item)
			}
		} else {
			a, err := netip.ParseAddr(item)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not an IP address (without zone) or CIDR range", item)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("%q has host bits set; did you mean %s?", item, p.Masked())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p)
	}
	return out, nil
}
