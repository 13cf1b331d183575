package httpapi

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/latchkey/latchkey/internal/adminkeys"
	"github.com/latchkey/latchkey/internal/events"
	"github.com/latchkey/latchkey/internal/problem"
	"github.com/latchkey/latchkey/internal/store"
)

// IdempotencyHeader names the header of SPEC §5.9.
const IdempotencyHeader = "Idempotency-Key"

const (
	// IdempotencyTTL is how long a key's first answer is kept (SPEC §5.9).
	IdempotencyTTL = 24 * time.Hour
	// idempotencyLease is how long a request holds its key. Past it the
	// holder is presumed dead (a crashed process) and a retry takes over,
	// under the same effect id. It is well above what a request may take:
	// the server's write timeout is 30 s.
	idempotencyLease = time.Minute
	// maxIdempotencyKeyLen follows common practice (Stripe's limit).
	maxIdempotencyKeyLen = 255
)

var (
	errIdempotencyKeyInvalid = problem.New(http.StatusBadRequest, "invalid_idempotency_key",
		"The Idempotency-Key header must be one value of 1 to 255 visible ASCII characters, such as a random UUID.")
	errIdempotencyKeyReused = problem.New(http.StatusUnprocessableEntity, "idempotency_key_reused",
		"This Idempotency-Key was used for another request. Use a new key for a new request.")
	errIdempotencyKeyInProgress = func() *problem.Problem {
		p := problem.New(http.StatusConflict, "idempotency_key_in_progress",
			"A request with this Idempotency-Key is still being processed. Try again shortly.")
		p.RetryAfter = 1
		return p
	}()
)

// idempotent makes a route honour Idempotency-Key (SPEC §5.9): the first
// request with a key runs, and its answer, if it succeeded (2xx), is kept
// for IdempotencyTTL; a retry with the same key and the same request
// (method, path and body, byte for byte) gets that answer again, status,
// headers and body, marked with "Idempotent-Replayed: true", and causes
// nothing. The same key with another request is 422
// idempotency_key_reused; a retry while the first still runs is 409
// idempotency_key_in_progress with Retry-After, never a second run. A
// request without the header runs as usual.
//
// Keys are scoped to the caller, who must be resolved before: the admin key
// for admin routes, else the client address (so a retry from another
// address is a new request), and to the route. A refusal (4xx) did nothing
// and is not kept: the key is free again, and storing refusals would let
// anyone fill the table with one row per request. An answer that says
// "try again" or leaves the outcome unknown (5xx, 429, a client gone)
// releases the key: the retry runs again, and its events get the same ids,
// derived from the key's record (events.WithIDSeed), so a request whose
// publish was stored but whose PubAck was lost is not repeated by the
// retry: JetStream drops the copy, and the workers recognise it after
// JetStream's window.
func (s *Server) idempotent(next handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		values := r.Header.Values(IdempotencyHeader)
		if len(values) == 0 {
			return next(w, r)
		}
		key, ok := idempotencyKey(values)
		if !ok {
			return errIdempotencyKeyInvalid
		}
		body, err := s.readRawBody(w, r)
		if err != nil {
			return err
		}
		req := newIdempotentRequest(idempotencyScope(r), r.Pattern, key, r.Method, r.URL.EscapedPath(), body)
		holder := uuid.New()
		st, err := s.deps.Store.ClaimIdempotencyKey(r.Context(), store.IdempotencyClaim{
			Key: req.lookup, Fingerprint: req.fingerprint, Holder: holder, Lease: idempotencyLease, TTL: IdempotencyTTL,
		}, s.now())
		switch {
		case err != nil:
			return err
		case st.Reused:
			return errIdempotencyKeyReused
		case st.InProgress:
			return errIdempotencyKeyInProgress
		case st.Answered:
			a, err := req.open(st.Answer)
			if err != nil {
				return fmt.Errorf("open the stored answer of an idempotency key: %w", err)
			}
			logger(r.Context()).Debug().Str("route", r.Pattern).Int("status", a.Status).Msg("idempotent replay")
			a.write(w, true)
			return nil
		}

		rec := &answerRecorder{header: http.Header{}}
		finished := false
		defer func() {
			// A panic: the key must not stay held for the whole lease.
			if !finished {
				s.releaseIdempotencyKey(r.Context(), req, holder)
			}
		}()
		r = r.WithContext(events.WithIDSeed(r.Context(), st.EffectID))
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := next(rec, r); err != nil {
			s.writeError(rec, r, err)
		}
		a := rec.answer()
		switch outcomeOf(a.Status, st.Fresh) {
		case outcomeKeep:
			s.keepIdempotentAnswer(r.Context(), req, holder, a)
		case outcomeForget:
			s.forgetIdempotencyKey(r.Context(), req, holder)
		default:
			s.releaseIdempotencyKey(r.Context(), req, holder)
		}
		finished = true
		a.write(w, false)
		return nil
	}
}

// outcome is what becomes of a key once its request has answered.
type outcome int

const (
	// outcomeKeep stores the answer for every retry: the request was done.
	outcomeKeep outcome = iota
	// outcomeForget deletes the record: the request was refused (4xx), so
	// nothing was done; the same key may carry a corrected request.
	outcomeForget
	// outcomeRelease keeps the record without an answer: the outcome is
	// unknown (5xx, the client gone) or the client is to try again (429),
	// and the retry runs under the same effect id.
	outcomeRelease
)

// outcomeOf decides by the status. fresh says that no earlier try ran
// under the record; a refusal after one that failed (a lost PubAck, then
// 429 on the retry) must keep its effect id for the next.
func outcomeOf(status int, fresh bool) outcome {
	switch {
	case status >= 200 && status < 300:
		return outcomeKeep
	case status >= 400 && status < 500 && fresh &&
		status != http.StatusRequestTimeout && status != http.StatusTooManyRequests && status != 499:
		return outcomeForget
	default:
		return outcomeRelease
	}
}

// idempotencyKey accepts exactly one header value of 1 to 255 visible ASCII
// characters, taken as it is (a quoted sf-string, as the IETF draft writes
// it, included).
func idempotencyKey(values []string) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	v := values[0]
	if v == "" || len(v) > maxIdempotencyKeyLen {
		return "", false
	}
	for i := range len(v) {
		if v[i] < '!' || v[i] > '~' {
			return "", false
		}
	}
	return v, true
}

// idempotencyScope is whose keys a request's key is among: the admin key's
// (admin routes run this after authentication), else the client address's.
func idempotencyScope(r *http.Request) string {
	if p, ok := r.Context().Value(principalKey).(adminkeys.Principal); ok {
		return "admin:" + p.KeyID
	}
	return "client:" + clientAddr(r)
}

// readRawBody reads the body within Config.MaxBodyBytes, whatever it holds
// (an empty one included: some routes take none), with readBody's answers
// for a body too large or not received whole.
func (s *Server) readRawBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooLarge := problem.New(http.StatusRequestEntityTooLarge, "body_too_large",
		fmt.Sprintf("The request body must be at most %d bytes.", s.cfg.MaxBodyBytes))
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return nil, tooLarge
	}
	if err != nil {
		return nil, &bodyReadError{err: err}
	}
	return body, nil
}

// keepIdempotentAnswer stores the answer. The effect has happened, so this
// outlives a client that went away; if it fails, the key stays held until
// its lease ends and a retry then runs again under the same effect id.
func (s *Server) keepIdempotentAnswer(ctx context.Context, req idempotentRequest, holder uuid.UUID, a answer) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	sealed, err := req.seal(a)
	if err == nil {
		var held bool
		held, err = s.deps.Store.AnswerIdempotencyKey(ctx, req.lookup, holder, a.Status, sealed)
		if err == nil && !held {
			logger(ctx).Warn().Msg("idempotency key taken over by a retry after its lease; its answer is the retry's")
		}
	}
	if err != nil {
		logger(ctx).Warn().Err(err).Msg("store the answer of an idempotency key; a retry after the lease runs again")
	}
}

func (s *Server) forgetIdempotencyKey(ctx context.Context, req idempotentRequest, holder uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.deps.Store.ForgetIdempotencyKey(ctx, req.lookup, holder); err != nil {
		logger(ctx).Warn().Err(err).Msg("forget an idempotency key; a retry waits for its lease")
	}
}

func (s *Server) releaseIdempotencyKey(ctx context.Context, req idempotentRequest, holder uuid.UUID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.deps.Store.ReleaseIdempotencyKey(ctx, req.lookup, holder); err != nil {
		logger(ctx).Warn().Err(err).Msg("release an idempotency key; a retry waits for its lease")
	}
}

func (s *Server) now() time.Time {
	if s.deps.Now != nil {
		return s.deps.Now()
	}
	return time.Now()
}

// idempotentRequest holds what is derived from a client's key and request.
// Nothing in it is the key or the request in clear.
type idempotentRequest struct {
	// lookup is the record's primary key: SHA-256 of scope, route and key.
	lookup []byte
	// fingerprint and sealKey come from HKDF-SHA-256 over the key and the
	// request (method, path, body), salted with lookup. The database holds
	// the fingerprint; reversing it means guessing the key and the body
	// together, so a random key (a UUID) also protects a body that holds a
	// password. sealKey never leaves the process: a stored answer (a
	// session token) opens only for a request that carries the same key
	// and body again.
	fingerprint, sealKey []byte
}

func newIdempotentRequest(scope, route, key, method, path string, body []byte) idempotentRequest {
	// NUL separates parts none of which can hold one: scopes, routes, keys
	// (visible ASCII), methods and escaped paths; the body comes last.
	lookup := sha256.Sum256([]byte("latchkey idempotency key\x00" + scope + "\x00" + route + "\x00" + key))
	ikm := make([]byte, 0, len(key)+len(method)+len(path)+len(body)+3)
	ikm = append(ikm, key...)
	ikm = append(ikm, 0)
	ikm = append(ikm, method...)
	ikm = append(ikm, 0)
	ikm = append(ikm, path...)
	ikm = append(ikm, 0)
	ikm = append(ikm, body...)
	// hkdf.Key fails only for a length beyond 255 hash sizes.
	fp, _ := hkdf.Key(sha256.New, ikm, lookup[:], "latchkey idempotency fingerprint", sha256.Size)
	sk, _ := hkdf.Key(sha256.New, ikm, lookup[:], "latchkey idempotency answer", 32)
	return idempotentRequest{lookup: lookup[:], fingerprint: fp, sealKey: sk}
}

// answer is an HTTP answer as stored for replay.
type answer struct {
	Status int         `json:"status"`
	Header http.Header `json:"header"`
	Body   []byte      `json:"body"`
}

// seal encrypts a with AES-256-GCM under the request's sealKey, bound to
// the record's lookup: nonce, then ciphertext.
func (q idempotentRequest) seal(a answer) ([]byte, error) {
	plain, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encode answer: %w", err)
	}
	gcm, err := q.aead()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plain)+gcm.Overhead())
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails
	return gcm.Seal(nonce, nonce, plain, q.lookup), nil
}

func (q idempotentRequest) open(sealed []byte) (answer, error) {
	gcm, err := q.aead()
	if err != nil {
		return answer{}, err
	}
	if len(sealed) < gcm.NonceSize() {
		return answer{}, errors.New("sealed answer is too short")
	}
	plain, err := gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], q.lookup)
	if err != nil {
		return answer{}, fmt.Errorf("unseal answer: %w", err)
	}
	var a answer
	if err := json.Unmarshal(plain, &a); err != nil {
		return answer{}, fmt.Errorf("decode answer: %w", err)
	}
	return a, nil
}

func (q idempotentRequest) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(q.sealKey)
	if err != nil {
		return nil, fmt.Errorf("answer cipher: %w", err)
	}
	return cipher.NewGCM(block)
}

// write sends the answer; replayed marks it as a stored one.
func (a answer) write(w http.ResponseWriter, replayed bool) {
	h := w.Header()
	for name, values := range a.Header {
		h[name] = values
	}
	if replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(a.Status)
	_, _ = w.Write(a.Body)
}

// answerRecorder captures a handler's answer for storing and sending.
type answerRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rec *answerRecorder) Header() http.Header { return rec.header }

func (rec *answerRecorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

func (rec *answerRecorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.body.Write(p)
}

// answer is what was recorded, without the headers that describe this
// connection rather than the answer.
func (rec *answerRecorder) answer() answer {
	h := rec.header.Clone()
	h.Del("Connection")
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	return answer{Status: status, Header: h, Body: rec.body.Bytes()}
}
