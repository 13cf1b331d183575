package smtptest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Message is one message the server accepted.
type Message struct {
	// From is the envelope sender (MAIL FROM).
	From string
	// To are the envelope recipients (RCPT TO) the server accepted.
	To []string
	// SMTPUTF8 reports that MAIL FROM carried the SMTPUTF8 parameter
	// (RFC 6531), which only a server with Config.SMTPUTF8 accepts.
	SMTPUTF8 bool
	// Data is the message exactly as received: headers, blank line, body,
	// with CRLF line endings and dot-stuffing removed.
	Data []byte
	// ReceivedAt is when the end of data arrived, from Config.Now.
	ReceivedAt time.Time
	// ConnID identifies the connection that delivered the message; IDs start
	// at 1 and increase per accepted connection.
	ConnID uint64
	// AuthUser is the username the client authenticated as, "" without AUTH.
	AuthUser string
}

func (m Message) clone() Message {
	m.To = slices.Clone(m.To)
	m.Data = slices.Clone(m.Data)
	return m
}

// Parsed is a Message's content, decoded for assertions.
type Parsed struct {
	// Header is the top-level header, values as sent (possibly RFC 2047
	// encoded); use Get for decoded values.
	Header mail.Header
	// Subject is the decoded Subject header.
	Subject string
	// Text is the first text/plain part that is not an attachment, decoded
	// from its transfer encoding and charset, with line endings as "\n".
	Text string
	// HTML is the first text/html part, decoded like Text.
	HTML string
	// Parts are all leaf parts in order (a single-part message has one), with
	// bodies decoded from their transfer encoding only.
	Parts []Part
}

// Part is one leaf MIME part.
type Part struct {
	Header textproto.MIMEHeader
	// MediaType is the lower-case media type, e.g. "text/plain".
	MediaType string
	// Params are the Content-Type parameters, e.g. charset.
	Params map[string]string
	// Filename comes from Content-Disposition (or the Content-Type name).
	Filename string
	// Attachment reports Content-Disposition: attachment.
	Attachment bool
	// Body is the content after undoing the Content-Transfer-Encoding.
	Body []byte
}

// Get returns the named top-level header with RFC 2047 encoded-words decoded.
func (p *Parsed) Get(key string) string {
	return decodeHeader(p.Header.Get(key))
}

// Addresses parses an address-list header such as To or Cc.
func (p *Parsed) Addresses(key string) ([]*mail.Address, error) {
	list, err := p.Header.AddressList(key)
	if err != nil {
		return nil, fmt.Errorf("smtptest: parse %s addresses: %w", key, err)
	}
	return list, nil
}

// Parse decodes the message: headers, subject, and the text and HTML bodies
// however they are nested in multipart/mixed, alternative or related.
func (m Message) Parse() (*Parsed, error) {
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		return nil, fmt.Errorf("smtptest: read message: %w", err)
	}
	p := &Parsed{
		Header:  msg.Header,
		Subject: decodeHeader(msg.Header.Get("Subject")),
	}
	if err := p.walk(textproto.MIMEHeader(msg.Header), msg.Body, 0); err != nil {
		return nil, err
	}
	for _, part := range p.Parts {
		if part.Attachment {
			continue
		}
		switch part.MediaType {
		case "text/plain":
			if p.Text == "" {
				if p.Text, err = part.text(); err != nil {
					return nil, err
				}
			}
		case "text/html":
			if p.HTML == "" {
				if p.HTML, err = part.text(); err != nil {
					return nil, err
				}
			}
		}
	}
	return p, nil
}

// maxDepth stops a hostile or broken message from recursing without end.
const maxDepth = 16

func (p *Parsed) walk(h textproto.MIMEHeader, body io.Reader, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("smtptest: MIME nesting deeper than %d", maxDepth)
	}
	mediaType, params := "text/plain", map[string]string{"charset": "us-ascii"}
	if ct := h.Get("Content-Type"); ct != "" {
		var err error
		mediaType, params, err = mime.ParseMediaType(ct)
		if err != nil {
			return fmt.Errorf("smtptest: parse Content-Type %q: %w", ct, err)
		}
	}

	if strings.HasPrefix(mediaType, "multipart/") {
		boundary := params["boundary"]
		if boundary == "" {
			return fmt.Errorf("smtptest: %s without boundary", mediaType)
		}
		mr := multipart.NewReader(body, boundary)
		for {
			// NextRawPart, because NextPart silently decodes only
			// quoted-printable; leaves decode every encoding in one place.
			part, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("smtptest: read %s part: %w", mediaType, err)
			}
			if err := p.walk(part.Header, part, depth+1); err != nil {
				return err
			}
		}
	}

	decoded, err := decodeTransfer(h.Get("Content-Transfer-Encoding"), body)
	if err != nil {
		return err
	}
	leaf := Part{Header: h, MediaType: mediaType, Params: params, Body: decoded}
	if cd := h.Get("Content-Disposition"); cd != "" {
		disp, dparams, err := mime.ParseMediaType(cd)
		if err != nil {
			return fmt.Errorf("smtptest: parse Content-Disposition %q: %w", cd, err)
		}
		leaf.Attachment = disp == "attachment"
		leaf.Filename = decodeHeader(dparams["filename"])
	}
	if leaf.Filename == "" {
		leaf.Filename = decodeHeader(params["name"])
	}
	p.Parts = append(p.Parts, leaf)
	return nil
}

func decodeTransfer(cte string, body io.Reader) ([]byte, error) {
	switch enc := strings.ToLower(strings.TrimSpace(cte)); enc {
	case "", "7bit", "8bit", "binary":
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		// NewDecoder skips the CRLFs that wrap base64 bodies at 76 columns.
		body = base64.NewDecoder(base64.StdEncoding, body)
	default:
		return nil, fmt.Errorf("smtptest: unsupported Content-Transfer-Encoding %q", cte)
	}
	out, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("smtptest: decode %q body: %w", cte, err)
	}
	return out, nil
}

// text decodes a text part's charset. Only the charsets a Go sender emits
// are supported; anything else is an error rather than silent mojibake.
func (part Part) text() (string, error) {
	var s string
	switch cs := strings.ToLower(part.Params["charset"]); cs {
	case "", "utf-8", "utf8", "us-ascii", "ascii":
		if !utf8.Valid(part.Body) {
			return "", fmt.Errorf("smtptest: %s part declared %q is not valid UTF-8", part.MediaType, cs)
		}
		s = string(part.Body)
	case "iso-8859-1", "latin1":
		runes := make([]rune, len(part.Body))
		for i, b := range part.Body {
			runes[i] = rune(b) // Latin-1 bytes are the first 256 code points.
		}
		s = string(runes)
	default:
		return "", fmt.Errorf("smtptest: unsupported charset %q in %s part", cs, part.MediaType)
	}
	return strings.ReplaceAll(s, "\r\n", "\n"), nil
}

// decodeHeader undoes RFC 2047; a malformed value is returned as sent,
// which is what a test asserting on it needs to see.
func decodeHeader(v string) string {
	var dec mime.WordDecoder
	out, err := dec.DecodeHeader(v)
	if err != nil {
		return v
	}
	return out
}
