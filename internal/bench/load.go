package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// client is an HTTP client sized for thousands of requests in flight.
func newClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 4096,
			IdleConnTimeout:     time.Minute,
		},
	}
}

func post(ctx context.Context, c *http.Client, url string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Latency summarises durations in milliseconds.
type Latency struct {
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

func summarise(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q * float64(len(ds)-1))
		return float64(ds[i].Microseconds()) / 1000
	}
	return Latency{P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: at(1)}
}

// PipelinePhase is one open-loop run of the reset pipeline at a fixed rate.
type PipelinePhase struct {
	Rate        int     `json:"rate_per_s"`
	Seconds     float64 `json:"seconds"`
	Sent        int     `json:"sent"`
	Accepted    int     `json:"accepted"`
	Errors      int     `json:"errors"`
	Late        int     `json:"late"`
	Received    int     `json:"received"`
	Lost        int     `json:"lost"`
	Duplicates  int     `json:"duplicates"`
	AchievedRPS float64 `json:"achieved_rps"`
	EmailsPerS  float64 `json:"emails_per_s"`
	Latency     Latency `json:"request_to_email"`
	Passed      bool    `json:"passed"`
	// CPU is per email, over the whole phase: sending, then working off
	// what was accepted.
	CPU CPUShare `json:"cpu"`
}

// runPipeline sends forgot-password requests at rate for d, open-loop: each
// request leaves at its scheduled time whether or not earlier ones were
// answered, so a slow system cannot slow the load down and hide its latency.
// Latency runs from sending the request to the sink accepting the email.
func (s *stack) runPipeline(ctx context.Context, rate int, d time.Duration) (PipelinePhase, error) {
	n := int(float64(rate) * d.Seconds())
	first, err := s.takeUsers(n)
	if err != nil {
		return PipelinePhase{}, err
	}
	client := newClient()
	defer client.CloseIdleConnections()
	acceptedBefore, duplicatesBefore := s.sink.accepted.Load(), s.sink.duplicates.Load()
	cpuBefore := s.cpuTimes()
	sentAt := make([]time.Time, n)
	var accepted, errs, late atomic.Int64
	const maxInFlight = 4096
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case slots <- struct{}{}:
		default:
			late.Add(1) // the system is so far behind that the client gave up
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			body := fmt.Appendf(nil, `{"identifier":"u%d@%s"}`, first+i, benchDomain)
			sentAt[i] = time.Now()
			code, err := post(ctx, client, s.apiURL+"/v1/password/forgot", body)
			if err != nil || code != http.StatusAccepted {
				errs.Add(1)
				sentAt[i] = time.Time{}
				return
			}
			accepted.Add(1)
		}()
	}
	wg.Wait()
	sendTime := time.Since(start)

	// Wait for the emails: until all arrived, or none arrived for a while.
	want := int(accepted.Load())
	lastGot, lastChange := int64(-1), time.Now()
	for {
		got := s.sink.accepted.Load() - acceptedBefore
		if got >= int64(want) {
			break
		}
		if got != lastGot {
			lastGot, lastChange = got, time.Now()
		}
		if time.Since(lastChange) > 10*time.Second {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpuAfter := s.cpuTimes()
	var lat []time.Duration
	var lastArrival time.Time
	for i := range n {
		at, ok := s.sink.arrival(first + i)
		if !ok || sentAt[i].IsZero() {
			continue
		}
		lat = append(lat, at.Sub(sentAt[i]))
		if at.After(lastArrival) {
			lastArrival = at
		}
	}
	p := PipelinePhase{
		Rate: rate, Seconds: d.Seconds(), Sent: n, Accepted: want, Errors: int(errs.Load()), Late: int(late.Load()),
		Received: len(lat), Lost: want - len(lat), Duplicates: int(s.sink.duplicates.Load() - duplicatesBefore),
		AchievedRPS: float64(want) / sendTime.Seconds(), Latency: summarise(lat),
		CPU: share(cpuBefore, cpuAfter, len(lat), elapsed, runtime.NumCPU()),
	}
	if !lastArrival.IsZero() {
		p.EmailsPerS = float64(len(lat)) / lastArrival.Sub(start).Seconds()
	}
	p.Passed = p.Errors == 0 && p.Late == 0 && p.Lost == 0 && p.Duplicates == 0 && p.Latency.P99 < 1000
	return p, nil
}

// ClosedLoop is a run of concurrent clients each sending as fast as answered.
type ClosedLoop struct {
	Clients     int      `json:"clients"`
	Seconds     float64  `json:"seconds"`
	Requests    int      `json:"requests"`
	Errors      int      `json:"errors"`
	PerSecond   float64  `json:"per_second"`
	Latency     Latency  `json:"latency"`
	Description string   `json:"description"`
	CPU         CPUShare `json:"cpu"`
}

// runClosedLoop runs clients that each send the next request as soon as the
// previous one is answered; body(i) builds request i.
func (s *stack) runClosedLoop(ctx context.Context, clients int, d time.Duration, path string, okStatus int, body func(i int) []byte) ClosedLoop {
	client := newClient()
	defer client.CloseIdleConnections()
	var next, errs atomic.Int64
	lats := make([][]time.Duration, clients)
	cpuBefore := s.cpuTimes()
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				i := int(next.Add(1) - 1)
				t0 := time.Now()
				code, err := post(ctx, client, s.apiURL+path, body(i))
				if err != nil || code != okStatus {
					errs.Add(1)
					continue
				}
				lats[c] = append(lats[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpuAfter := s.cpuTimes()
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	return ClosedLoop{
		Clients: clients, Seconds: elapsed.Seconds(), Requests: len(all), Errors: int(errs.Load()),
		PerSecond: float64(len(all)) / elapsed.Seconds(), Latency: summarise(all),
		CPU: share(cpuBefore, cpuAfter, len(all), elapsed, runtime.NumCPU()),
	}
}
