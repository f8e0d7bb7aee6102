package kafka

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/outbox-dev/outbox/outbox"
)

// permanentCodes are broker answers that no retry changes: the record as it
// is, or our right to write it, is refused.
var permanentCodes = map[int16]bool{
	kerr.MessageTooLarge.Code:                    true,
	kerr.RecordListTooLarge.Code:                 true,
	kerr.InvalidRecord.Code:                      true,
	kerr.CorruptMessage.Code:                     true,
	kerr.InvalidTopicException.Code:              true,
	kerr.TopicAuthorizationFailed.Code:           true,
	kerr.ClusterAuthorizationFailed.Code:         true,
	kerr.TransactionalIDAuthorizationFailed.Code: true,
	kerr.UnsupportedForMessageFormat.Code:        true,
	kerr.PolicyViolation.Code:                    true,
	kerr.InvalidRequiredAcks.Code:                true,
}

// Classify marks err permanent when the broker refused the record for
// good; anything else (timeouts, lost connections, leader moves, unknown
// server errors) stays transient.
func Classify(err error) error {
	if err == nil || outbox.IsPermanent(err) {
		return err
	}
	var ke *kerr.Error
	if errors.As(err, &ke) && permanentCodes[ke.Code] {
		return outbox.Permanent(err)
	}
	return err
}
