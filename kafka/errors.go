package kafka

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outbox-dev/outbox/outbox"
)

// ErrAuthorization marks a broker's refusal of the relay itself: its
// credentials (SASL) or its ACLs. Such an error is transient, because every
// record would fail alike and dead-lettering them all would empty the
// outbox into the dead-letter store; it is marked so that health checks,
// alerts and logs can say the relay is not authorized rather than that
// Kafka is down.
var ErrAuthorization = errors.New("kafka: the relay is not authorized")

// recordCodes are the broker answers, not retriable in Kafka, that concern
// the record as it is (its size, content, timestamp or the topic its
// routing names): no retry and no operator action on the broker lets that
// record through, so it is dead-lettered.
var recordCodes = map[int16]bool{
	kerr.MessageTooLarge.Code:       true,
	kerr.RecordListTooLarge.Code:    true,
	kerr.InvalidRecord.Code:         true,
	kerr.InvalidTimestamp.Code:      true,
	kerr.InvalidTopicException.Code: true,
	kerr.PolicyViolation.Code:       true,
}

// authCodes refuse the relay rather than the record.
var authCodes = map[int16]bool{
	kerr.TopicAuthorizationFailed.Code:           true,
	kerr.GroupAuthorizationFailed.Code:           true,
	kerr.ClusterAuthorizationFailed.Code:         true,
	kerr.TransactionalIDAuthorizationFailed.Code: true,
	kerr.DelegationTokenAuthorizationFailed.Code: true,
	kerr.SaslAuthenticationFailed.Code:           true,
	kerr.UnsupportedSaslMechanism.Code:           true,
	kerr.IllegalSaslState.Code:                   true,
}

// Classify says what a failed publish means for the relay:
//   - Kafka calls the code retriable: transient.
//   - an authorization or authentication refusal: transient, wrapped with
//     ErrAuthorization.
//   - a code in recordCodes: permanent (outbox.Permanent).
//   - any other code, known or not, and any error that is not a broker
//     answer (timeouts, lost connections): transient.
//
// Transient is the default because dead-lettering is for records that can
// never be published as they are, and a wrong guess costs very differently
// either way: a record held back by a transient error waits, visibly, for
// an operator or a retry; a healthy record dead-lettered parks its
// aggregate until someone replays it. The non-retriable codes left to the
// default are about the client, the producer's state or the broker's
// configuration (INVALID_REQUIRED_ACKS, UNSUPPORTED_FOR_MESSAGE_FORMAT for
// an old message format that cannot carry the headers every outbox record
// has, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_REQUEST, UNKNOWN_SERVER_ERROR
// and codes newer than this client): they would fail every record alike.
func Classify(err error) error {
	if err == nil || outbox.IsPermanent(err) || errors.Is(err, ErrAuthorization) {
		return err
	}
	ke, ok := errors.AsType[*kerr.Error](err)
	switch {
	case !ok:
		return err
	case authCodes[ke.Code]:
		return fmt.Errorf("%w: %w", ErrAuthorization, err)
	case ke.Retriable:
		return err
	case recordCodes[ke.Code]:
		return outbox.Permanent(err)
	}
	return err
}
