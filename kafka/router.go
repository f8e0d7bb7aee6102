package kafka

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

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

// legalTopic reports whether Kafka allows s as (part of) a topic name:
// 1 to 249 of [a-zA-Z0-9._-]. A loop, not a regexp: it runs per record.
func legalTopic(s string) bool {
	if len(s) == 0 || len(s) > 249 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Router maps a message to its topic.
type Router struct {
	parts []string // literal, or a variable name prefixed by "\x00"
	// routes caches the topic of each (aggregatetype, type) seen, up to
	// maxRoutes of them: a relay sees a handful, and each record asks.
	routes  sync.Map // routeKey → string
	nroutes atomic.Int32
}

type routeKey struct{ aggregateType, typ string }

const maxRoutes = 4096

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
		if !strings.HasPrefix(p, "\x00") && !legalTopic(p) {
			return nil, fmt.Errorf("%w: TopicTemplate %q has characters Kafka does not allow in a topic", ErrInvalidTemplate, template)
		}
	}
	return r, nil
}

// Topic returns m's topic, or a permanent ErrUnroutable error.
func (r *Router) Topic(m outbox.Message) (string, error) {
	key := routeKey{m.AggregateType, m.Type}
	if topic, ok := r.routes.Load(key); ok {
		return topic.(string), nil
	}
	topic, err := r.route(m)
	if err == nil && r.nroutes.Load() < maxRoutes {
		if _, loaded := r.routes.LoadOrStore(key, topic); !loaded {
			r.nroutes.Add(1)
		}
	}
	return topic, err
}

func (r *Router) route(m outbox.Message) (string, error) {
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
	if !legalTopic(topic) || topic == "." || topic == ".." {
		return "", outbox.Permanent(fmt.Errorf("%w: event %s routes to illegal topic %q", ErrUnroutable, m.ID, topic))
	}
	return topic, nil
}
