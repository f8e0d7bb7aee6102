package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

// errorClass is what the relay does with a failed publish.
type errorClass int

const (
	transient     errorClass = iota // back-pressure: hold the checkpoint, retry
	permanent                       // dead-letter the record, park its aggregate
	authorization                   // back-pressure, and say the relay is not allowed in
)

func (c errorClass) String() string {
	return [...]string{"transient", "permanent", "transient (authorization)"}[c]
}

func classOf(err error) errorClass {
	switch {
	case outbox.IsPermanent(err):
		return permanent
	case errors.Is(err, kafka.ErrAuthorization):
		return authorization
	}
	return transient
}

func TestClassify(t *testing.T) {
	future := &kerr.Error{Message: "SOME_FUTURE_ERROR", Code: 32000, Description: "A code this client does not know."}
	for _, tc := range []struct {
		name string
		err  error
		want errorClass
	}{
		// Kafka's own Retriable flag.
		{"retriable corrupt message", kerr.CorruptMessage, transient},
		{"retriable not enough replicas", kerr.NotEnoughReplicas, transient},
		{"retriable not leader", kerr.NotLeaderForPartition, transient},
		{"retriable request timed out", kerr.RequestTimedOut, transient},
		{"retriable unknown topic", kerr.UnknownTopicOrPartition, transient},
		{"retriable storage error", kerr.KafkaStorageError, transient},
		{"retriable throttled", kerr.ThrottlingQuotaExceeded, transient},

		// The record as it is can never be written.
		{"record too large", kerr.MessageTooLarge, permanent},
		{"record batch too large", kerr.RecordListTooLarge, permanent},
		{"record invalid", kerr.InvalidRecord, permanent},
		{"record timestamp out of range", kerr.InvalidTimestamp, permanent},
		{"record routed to an invalid topic", kerr.InvalidTopicException, permanent},
		{"record's topic refused by policy", kerr.PolicyViolation, permanent},
		{"already permanent", outbox.Permanent(errors.New("unroutable")), permanent},

		// The relay is not allowed in: every record would fail alike.
		{"topic authorization", kerr.TopicAuthorizationFailed, authorization},
		{"cluster authorization", kerr.ClusterAuthorizationFailed, authorization},
		{"transactional id authorization", kerr.TransactionalIDAuthorizationFailed, authorization},
		{"group authorization", kerr.GroupAuthorizationFailed, authorization},
		{"sasl authentication", fmt.Errorf("%w: Authentication failed due to invalid credentials with SASL mechanism SCRAM-SHA-256", kerr.SaslAuthenticationFailed), authorization},
		{"sasl mechanism refused", kerr.UnsupportedSaslMechanism, authorization},
		{"sasl state", kerr.IllegalSaslState, authorization},

		// Not the record's fault and not retriable in Kafka's eyes: a
		// client, producer-state or broker configuration problem that an
		// operator or the client's own recovery fixes.
		{"invalid required acks", kerr.InvalidRequiredAcks, transient},
		{"message format too old for headers", kerr.UnsupportedForMessageFormat, transient},
		{"unknown server error", kerr.UnknownServerError, transient},
		{"invalid request", kerr.InvalidRequest, transient},
		{"out of order sequence", kerr.OutOfOrderSequenceNumber, transient},
		{"code unknown to kerr", future, transient},

		// Not from the broker at all.
		{"record timeout", kgo.ErrRecordTimeout, transient},
		{"deadline", context.DeadlineExceeded, transient},
		{"connection refused", errors.New("dial tcp: connection refused"), transient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := kafka.Classify(fmt.Errorf("kafka: publish e1 to t: %w", tc.err))
			if c := classOf(got); c != tc.want {
				t.Fatalf("Classify(%v) is %s, want %s", tc.err, c, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Fatalf("classification lost the cause: %v", got)
			}
			if again := kafka.Classify(got); classOf(again) != tc.want || again.Error() != got.Error() {
				t.Fatalf("classifying twice changed %q to %q", got, again)
			}
		})
	}
	if kafka.Classify(nil) != nil {
		t.Fatal("Classify(nil) is not nil")
	}
}

// TestClassifyNeverDeadLettersARetriableCode walks every code kerr knows:
// a code Kafka calls retriable must never park an aggregate.
func TestClassifyNeverDeadLettersARetriableCode(t *testing.T) {
	for code := int16(-1); code < 1000; code++ {
		ke := kerr.TypedErrorForCode(code)
		if ke == nil || (ke == kerr.UnknownServerError && code != -1) {
			continue
		}
		if ke.Retriable && classOf(kafka.Classify(ke)) != transient {
			t.Errorf("%s (%d) is retriable in Kafka but classified %s", ke.Message, code, classOf(kafka.Classify(ke)))
		}
	}
}

// TestBrokerAnswersAreClassified has the embedded broker answer a produce
// with each error and checks what the Publisher returns.
func TestBrokerAnswersAreClassified(t *testing.T) {
	e := embedded(t)
	p := publisher(t, e.Addrs(), kafka.Config{TopicTemplate: kafka.TopicPerAggregateType, RecordRetries: kafka.NoRecordRetries})
	for i, tc := range []struct {
		code *kerr.Error
		want errorClass
	}{
		{kerr.CorruptMessage, transient},
		{kerr.NotEnoughReplicas, transient},
		{kerr.InvalidTimestamp, permanent},
		{kerr.InvalidRecord, permanent},
		{kerr.TopicAuthorizationFailed, authorization},
		{kerr.ClusterAuthorizationFailed, authorization},
		{kerr.UnknownServerError, transient},
	} {
		t.Run(tc.code.Message, func(t *testing.T) {
			aggType := fmt.Sprintf("class%d", i)
			// Create the topic first, so the fault meets a produce and not
			// the topic's auto-creation.
			if err := p.Publish(ctx(t), msg(t, aggType, "warm", "X", 1, "x")); err != nil {
				t.Fatal(err)
			}
			h := e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "outbox.event." + aggType, Err: tc.code, Count: -1})
			err := p.Publish(ctx(t), msg(t, aggType, "a", "X", 1, "x"))
			h.Remove()
			if !errors.Is(err, tc.code) {
				t.Fatalf("publish: %v, want the broker's %s", err, tc.code.Message)
			}
			if c := classOf(err); c != tc.want {
				t.Fatalf("%s from the broker is %s, want %s: %v", tc.code.Message, c, tc.want, err)
			}
			if err := p.Publish(ctx(t), msg(t, aggType, "a", "X", 1, "x")); err != nil {
				t.Fatalf("publisher did not recover once the broker accepted again: %v", err)
			}
		})
	}
}

// TestRefusedSASLAuthenticationIsAnAuthorizationError: a relay the broker
// will not let in is back-pressure with an alert, not a dead letter per
// event. Apache Kafka answers bad credentials with SASL_AUTHENTICATION_FAILED
// (kfake just closes the connection), so the broker is made to answer so.
func TestRefusedSASLAuthenticationIsAnAuthorizationError(t *testing.T) {
	e, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Opts: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", saslUser, saslPassword)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	e.Cluster().Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.SASLAuthenticate}, Err: kerr.SaslAuthenticationFailed, Count: -1})
	p := publisher(t, e.Addrs(), kafka.Config{
		TopicTemplate: "secure.{aggregatetype}",
		Security:      kafka.Security{SASLMechanism: "SCRAM-SHA-256", SASLUser: saslUser, SASLPassword: wrongPass},
	})
	bounded, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = p.Publish(bounded, msg(t, "order", "o1", "OrderCreated", 1, "x"))
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("publish refused authentication: %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	if c := classOf(err); c != authorization {
		t.Fatalf("refused authentication is %s, want %s: %v", c, authorization, err)
	}
}
