package mailer

import (
	"bytes"
	"cmp"
	"fmt"
	"mime"
	netmail "net/mail"
	"net/textproto"
	"strings"
	"unicode"
	"unicode/utf8"

	mail "github.com/wneessen/go-mail"
	"golang.org/x/net/idna"
)

// Message is one email to one recipient.
type Message struct {
	FromName    string
	FromAddress string
	ToName      string
	ToAddress   string
	Subject     string
	// Text and HTML are the two renderings of the body; with both the mail
	// is multipart/alternative, with one it is that part alone.
	Text string
	HTML string
	// MessageID becomes the Message-ID header, with or without the angle
	// brackets. Deriving it from the delivery makes a resend after an
	// ambiguous failure recognisable as the same mail. Empty lets go-mail
	// make a random one.
	MessageID string
	// Headers are added as they are, e.g. X-Latchkey-Delivery. They cannot
	// replace the headers Message sets or the MIME structure.
	Headers map[string]string
}

const (
	// maxMessageIDLen keeps a Message-ID well inside one header line.
	maxMessageIDLen = 250
	// maxNameLen bounds a display name; encoded, it still fits one line.
	maxNameLen = 256
)

// prepared is a validated message rendered to its final bytes, so nothing
// about its content can fail once a connection is in use.
type prepared struct {
	// intl is the message as given: its envelope and its From and To
	// headers may hold UTF-8 addresses (RFC 6531, RFC 6532), which only a
	// server offering SMTPUTF8 may be sent.
	intl form
	// ascii is the same message with every address's domain written as its
	// A-label (RFC 5890: anna@xn--bcher-kva.example), for a server without
	// SMTPUTF8. It is nil when an address's local part is not ASCII: such a
	// mailbox has no ASCII name, and only SMTPUTF8 can reach it; asciiErr
	// then says which address. When every address is ASCII, ascii is &intl.
	ascii    *form
	asciiErr error
	// domain is the recipient's domain, the only part of the address that
	// is logged.
	domain string
}

// form is one rendering of a message: the envelope addresses, in the
// "<addr>" form that go-mail's MAIL and RCPT commands expect, and the data.
type form struct {
	from, to string
	data     []byte
}

// formFor picks the rendering a server can take: the message as given when
// it offers SMTPUTF8, else the A-label one. The error wraps ErrNeedsSMTPUTF8
// when the message has no ASCII rendering.
func (p *prepared) formFor(smtputf8 bool) (*form, error) {
	switch {
	case smtputf8:
		return &p.intl, nil
	case p.ascii == nil:
		return nil, p.asciiErr
	default:
		return p.ascii, nil
	}
}

// prepare validates m and renders it. Every error wraps ErrInvalidMessage
// and names the field but never its value, since errors end up in logs.
func (m Message) prepare() (*prepared, error) {
	from, err := parseAddress("from address", m.FromAddress)
	if err != nil {
		return nil, err
	}
	to, err := parseAddress("to address", m.ToAddress)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct{ field, value string }{
		{"from name", m.FromName},
		{"to name", m.ToName},
		{"subject", m.Subject},
	} {
		if err := checkHeaderValue(f.field, f.value); err != nil {
			return nil, err
		}
	}
	// Names go out unfolded (see addressHeader); this keeps their header
	// lines far from the 998-octet limit.
	if len(m.FromName) > maxNameLen || len(m.ToName) > maxNameLen {
		return nil, invalid(fmt.Sprintf("name longer than %d bytes", maxNameLen))
	}
	if m.Text == "" && m.HTML == "" {
		return nil, invalid("no text or HTML body")
	}
	if !utf8.ValidString(m.Text) || !utf8.ValidString(m.HTML) {
		return nil, invalid("body is not valid UTF-8")
	}
	msgID, err := normaliseMessageID(m.MessageID)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(m.Headers))
	for name, value := range m.Headers {
		if err := checkHeaderName(name); err != nil {
			return nil, err
		}
		// Header names are case-insensitive: "x-a" and "X-A" would be
		// one header sent twice.
		canon := textproto.CanonicalMIMEHeaderKey(name)
		if seen[canon] {
			return nil, invalid("header " + name + " is given twice")
		}
		seen[canon] = true
		if err := checkHeaderValue("header "+name, value); err != nil {
			return nil, err
		}
	}

	p := &prepared{domain: domainOf(to.Address)}
	if p.intl, err = m.render(from.Address, to.Address, msgID); err != nil {
		return nil, err
	}
	asciiFrom, fromErr, err := asciiAddress("from address", from.Address)
	if err != nil {
		return nil, err
	}
	asciiTo, toErr, err := asciiAddress("to address", to.Address)
	if err != nil {
		return nil, err
	}
	switch {
	case fromErr != nil || toErr != nil:
		// The sender's first: it is configuration, and fails every mail.
		p.asciiErr = cmp.Or(fromErr, toErr)
	case asciiFrom == from.Address && asciiTo == to.Address:
		p.ascii = &p.intl
	default:
		f, err := m.render(asciiFrom, asciiTo, msgID)
		if err != nil {
			return nil, err
		}
		p.ascii = &f
	}
	return p, nil
}

// render writes the message with the given envelope and header addresses.
func (m Message) render(from, to, msgID string) (form, error) {
	// The default User-Agent would advertise the library and its version
	// to every recipient for no benefit.
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	// From and To are rendered here rather than by go-mail, which would
	// use net/mail's rendering as is (see addressHeader). The envelope does
	// not come from these headers: transact is given it directly.
	msg.SetGenHeaderPreformatted(mail.Header(mail.HeaderFrom), addressHeader(m.FromName, from))
	msg.SetGenHeaderPreformatted(mail.Header(mail.HeaderTo), addressHeader(m.ToName, to))
	msg.Subject(m.Subject)
	if msgID != "" {
		msg.SetMessageIDWithValue(msgID)
	}
	for name, value := range m.Headers {
		msg.SetGenHeader(mail.Header(name), value)
	}
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	case m.Text != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
	default:
		msg.SetBodyString(mail.TypeTextHTML, m.HTML)
	}

	var buf bytes.Buffer
	if _, err := msg.WriteTo(&buf); err != nil {
		return form{}, fmt.Errorf("mailer: %w: render: %w", ErrInvalidMessage, err)
	}
	return form{from: envelopeAddress(from), to: envelopeAddress(to), data: buf.Bytes()}, nil
}

// asciiAddress returns addr with its domain as an A-label, converted by the
// IDNA2008 lookup profile (UTS #46 mapping: "Bücher.example" and
// "bücher.example" are both xn--bcher-kva.example). An ASCII addr, domain
// literals included, is returned as it is. needs is set instead, wrapping
// ErrNeedsSMTPUTF8, when the local part is not ASCII; err, wrapping
// ErrInvalidMessage, when the domain has no A-label (a disallowed
// character, a label beginning with a hyphen): no server could route it.
func asciiAddress(field, addr string) (ascii string, needs, err error) {
	if isASCII(addr) {
		return addr, nil, nil
	}
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if !isASCII(local) {
		return "", fmt.Errorf("%s: %w", field, ErrNeedsSMTPUTF8), nil
	}
	aDomain, err := idna.Lookup.ToASCII(domain)
	if err != nil {
		return "", nil, invalid(field + " has a domain with no ASCII form (IDNA)")
	}
	return local + "@" + aDomain, nil, nil
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func invalid(reason string) error {
	return fmt.Errorf("mailer: %w: %s", ErrInvalidMessage, reason)
}

// parseAddress accepts a bare addr-spec only: a display name belongs in the
// name field, and anything net/mail would rewrite is not what the caller
// meant to send to.
func parseAddress(field, v string) (*netmail.Address, error) {
	if v == "" {
		return nil, invalid(field + " is empty")
	}
	a, err := netmail.ParseAddress(v)
	if err != nil {
		return nil, fmt.Errorf("mailer: %w: %s: %w", ErrInvalidMessage, field, err)
	}
	if a.Name != "" || a.Address != v {
		return nil, invalid(field + " is not a plain address such as user@example.com")
	}
	return a, nil
}

// checkHeaderValue refuses CR and LF, which would end the header and start
// another one (header injection), and the other control characters, which
// have no business in a name or subject.
func checkHeaderValue(field, v string) error {
	if !utf8.ValidString(v) {
		return invalid(field + " is not valid UTF-8")
	}
	if strings.ContainsAny(v, "\r\n") {
		return invalid(field + " contains CR or LF")
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r != '\t' && unicode.IsControl(r) }) {
		return invalid(field + " contains a control character")
	}
	return nil
}

// checkHeaderName accepts RFC 5322 field names, except those Message sets
// itself or that would change how the mail is addressed or parsed.
func checkHeaderName(name string) error {
	if name == "" {
		return invalid("empty header name")
	}
	for i := range len(name) {
		if c := name[i]; c < '!' || c > '~' || c == ':' {
			return invalid("header name is not a valid field name")
		}
	}
	switch canon := textproto.CanonicalMIMEHeaderKey(name); {
	case strings.HasPrefix(canon, "Content-"), mail.IsAddrHeader(canon):
		return invalid("header " + name + " cannot be set through Headers")
	default:
		switch canon {
		case "From", "To", "Cc", "Bcc", "Sender", "Reply-To", "Return-Path",
			"Subject", "Message-Id", "Date", "Mime-Version":
			return invalid("header " + name + " cannot be set through Headers")
		}
	}
	return nil
}

// normaliseMessageID returns the id without angle brackets, checked to be
// the dot-atom-ish left@right a Message-ID holds.
func normaliseMessageID(id string) (string, error) {
	if id == "" {
		return "", nil
	}
	if strings.HasPrefix(id, "<") && strings.HasSuffix(id, ">") {
		id = id[1 : len(id)-1]
	}
	left, right, ok := strings.Cut(id, "@")
	if !ok || left == "" || right == "" || strings.Contains(right, "@") || len(id) > maxMessageIDLen {
		return "", invalid("message id is not of the form left@right")
	}
	for i := range len(id) {
		if c := id[i]; c < '!' || c > '~' || c == '<' || c == '>' {
			return "", invalid("message id contains a character it cannot hold")
		}
	}
	return id, nil
}

// addressHeader renders `name <addr>` for a From or To header. It is
// net/mail's rendering (quoted-string for ASCII names, RFC 2047 for the
// rest) with one gap closed: net/mail Q-encodes a non-ASCII name that
// contains a backslash and leaves the backslash raw, which RFC 2047
// section 5 forbids in a display name and which net/mail's own parser then
// rejects. Such a name is base64-encoded instead, as net/mail already does
// for names holding quotes or parentheses.
func addressHeader(name, addr string) string {
	a := &netmail.Address{Name: name, Address: addr}
	if strings.ContainsRune(name, '\\') && strings.ContainsFunc(name, func(r rune) bool { return r >= utf8.RuneSelf }) {
		a.Name = ""
		return mime.BEncoding.Encode("utf-8", name) + " " + a.String()
	}
	return a.String()
}

// envelopeAddress formats an address for MAIL FROM / RCPT TO, quoting the
// local part when it needs it.
func envelopeAddress(addr string) string {
	return (&netmail.Address{Address: addr}).String()
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}
