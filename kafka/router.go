package kafka

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/outbox-dev/outbox/outbox"
)

// Topic templates offered by name.
const (
	// TopicPerEventType is the design's routing: OrderCreated, OrderUpdated, ...
	TopicPerEventType = "{type}"
	// TopicPerAggregateType is Debezium's default routing; it keeps each
	// aggregate in one partition of one topic.
	TopicPerAggregateType = "outbox.event.{aggregatetype}"
)

// ErrInvalidTemplate is wrapped by every template error.
var ErrInvalidTemplate = errors.New("invalid topic template")

// ErrUnroutable marks a message whose routed topic is not a legal name.
var ErrUnroutable = errors.New("unroutable message")

var legalTopic = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// Router maps a message to its topic.
type Router struct {
	parts []string // literal, or a variable name prefixed by "\x00"
}

// NewRouter parses a template made of literal text and the variables
// {type} and {aggregatetype}.
func NewRouter(template string) (*Router, error) {
	if template == "" {
		return nil, fmt.Errorf("%w: TopicTemplate is empty", ErrInvalidTemplate)
	}
	r := &Router{}
	rest := template
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		if close := strings.IndexByte(rest, '}'); close >= 0 && (open < 0 || close < open) {
			return nil, fmt.Errorf("%w: TopicTemplate %q has an unmatched '}'", ErrInvalidTemplate, template)
		}
		if open < 0 {
			r.parts = append(r.parts, rest)
			break
		}
		if open > 0 {
			r.parts = append(r.parts, rest[:open])
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%w: TopicTemplate %q has an unclosed '{'", ErrInvalidTemplate, template)
		}
		name := rest[open+1 : open+end]
		switch name {
		case "type", "aggregatetype":
		default:
			return nil, fmt.Errorf("%w: TopicTemplate %q uses unknown variable {%s} (known: {type}, {aggregatetype})",
				ErrInvalidTemplate, template, name)
		}
		r.parts = append(r.parts, "\x00"+name)
		rest = rest[open+end+1:]
	}
	for _, p := range r.parts {
		if !strings.HasPrefix(p, "\x00") && !legalTopic.MatchString(p) {
			return nil, fmt.Errorf("%w: TopicTemplate %q has characters Kafka does not allow in a topic", ErrInvalidTemplate, template)
		}
	}
	return r, nil
}

// Topic returns m's topic, or a permanent ErrUnroutable error.
func (r *Router) Topic(m outbox.Message) (string, error) {
	var b strings.Builder
	for _, p := range r.parts {
		switch p {
		case "\x00type":
			b.WriteString(m.Type)
		case "\x00aggregatetype":
			b.WriteString(m.AggregateType)
		default:
			b.WriteString(p)
		}
	}
	topic := b.String()
	if !legalTopic.MatchString(topic) || topic == "." || topic == ".." {
		return "", outbox.Permanent(fmt.Errorf("%w: event %s routes to illegal topic %q", ErrUnroutable, m.ID, topic))
	}
	return topic, nil
}
