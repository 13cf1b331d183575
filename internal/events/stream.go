package events

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamName is the one stream holding every subject of the service.
const StreamName = "LATCHKEY"

// StreamConfig configures the stream.
type StreamConfig struct {
	Replicas int
	MaxAge   time.Duration
	// DuplicateWindow is how long JetStream remembers message ids for
	// de-duplication.
	DuplicateWindow time.Duration
}

// EnsureStream creates the stream or brings its configuration up to date; it
// is safe to call from every process at start-up.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if cfg.DuplicateWindow == 0 {
		cfg.DuplicateWindow = 10 * time.Minute
	}
	want := jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Latchkey credential lifecycle events",
		Subjects:    []string{SubjectPrefix + ">"},
		// Limits retention keeps events after they are acked, so a dead
		// letter can still be read from the stream and audits can replay.
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.MaxAge,
		Duplicates:  cfg.DuplicateWindow,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	}
	stream, err := ensureStream(ctx, js, want)
	if err != nil {
		return nil, err
	}
	// Created with the events stream, by every process, so advisories are
	// kept from the first consumer on, whether a worker runs or not.
	if _, err := ensureStream(ctx, js, advisoryStreamConfig(want)); err != nil {
		return nil, err
	}
	return stream, nil
}

// ensureStream creates the stream or updates its configuration to want.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	// Every process calls this at start-up; an update when nothing changed
	// is needless work on the server, and nats-server (v2.15) races a
	// stream update against another process's consumer creation.
	if stream, err := js.Stream(ctx, want.Name); err == nil {
		if info := stream.CachedInfo(); info != nil && sameStreamConfig(info.Config, want) {
			return stream, nil
		}
	}
	stream, err := js.CreateOrUpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", want.Name, err)
	}
	return stream, nil
}

// sameStreamConfig compares the settings EnsureStream manages.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) && have.Retention == want.Retention &&
		have.Storage == want.Storage && have.Replicas == want.Replicas && have.MaxAge == want.MaxAge &&
		have.Duplicates == want.Duplicates && have.Discard == want.Discard && have.AllowDirect == want.AllowDirect &&
		have.Description == want.Description
}

// ConsumerSpec declares a durable pull consumer.
type ConsumerSpec struct {
	Name          string
	Types         []string // event types it receives
	AckWait       time.Duration
	MaxDeliver    int
	MaxAckPending int
	Replicas      int
}

// EnsureConsumer creates the durable consumer or updates it; safe to call
// from every worker process at start-up.
func EnsureConsumer(ctx context.Context, stream jetstream.Stream, spec ConsumerSpec) (jetstream.Consumer, error) {
	subjects := make([]string, len(spec.Types))
	for i, t := range spec.Types {
		subjects[i] = SubjectPrefix + t
	}
	cfg := jetstream.ConsumerConfig{
		Durable:        spec.Name,
		Description:    "Latchkey worker " + spec.Name,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        spec.AckWait,
		MaxDeliver:     spec.MaxDeliver,
		MaxAckPending:  spec.MaxAckPending,
		Replicas:       spec.Replicas,
		FilterSubjects: subjects,
	}
	if len(subjects) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = subjects[0], nil
	}
	consumer, err := stream.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", spec.Name, err)
	}
	return consumer, nil
}
