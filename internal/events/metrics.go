package events

import "github.com/prometheus/client_golang/prometheus"

type outcome string

const (
	outcomeDone       outcome = "done"
	outcomeRetry      outcome = "retry"
	outcomeDeadLetter outcome = "dead_letter"
	// outcomeStuck counts events whose handler ran past StuckAfter; they
	// are counted again by the outcome they end with.
	outcomeStuck outcome = "stuck"
)

// Metrics counts what the runners did with events.
type Metrics struct {
	handled *prometheus.CounterVec
}

// NewMetrics registers the event metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{handled: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "latchkey",
		Name:      "events_handled_total",
		Help:      "Events handled by workers, by consumer and outcome (done, retry, dead_letter; stuck: the handler ran past its limit and was abandoned).",
	}, []string{"consumer", "outcome"})}
	reg.MustRegister(m.handled)
	return m
}

func (m *Metrics) observe(consumer string, o outcome) {
	if m == nil {
		return
	}
	m.handled.WithLabelValues(consumer, string(o)).Inc()
}
