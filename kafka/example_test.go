package kafka_test

import (
	"fmt"

	"github.com/outbox-dev/outbox/kafka"
	"github.com/outbox-dev/outbox/outbox"
)

func ExampleRouter() {
	m := outbox.Message{AggregateType: "order", Type: "OrderCreated"}
	for _, template := range []string{kafka.TopicPerEventType, kafka.TopicPerAggregateType} {
		r, _ := kafka.NewRouter(template)
		topic, _ := r.Topic(m)
		fmt.Println(topic)
	}
	// Output:
	// OrderCreated
	// outbox.event.order
}
