package mapping_test

import (
	"fmt"

	"github.com/outbox-dev/outbox/mapping"
)

// A Debezium EventRouter configuration, its "transforms.outbox." prefix
// dropped, read as it is: the relay then reads the table through it and
// publishes with the topic template it gives.
func ExampleParse() {
	m, err := mapping.Parse(map[string]string{
		"table.name":                        "public.payment_events",
		"table.field.event.id":              "event_id",
		"table.field.event.key":             "payment_id",
		"table.field.event.payload":         "body",
		"table.field.event.timestamp":       "created_at",
		"route.by.field":                    "aggregate",
		"route.topic.replacement":           "payments.${routedByValue}",
		"table.fields.additional.placement": "tenant:header,type:header:eventType",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("topic template:", m.TopicTemplate())
	fmt.Println("aggregate type column:", m.AggregateType)
	for _, a := range m.Additional {
		fmt.Printf("%s → %s %q\n", a.Column, a.Placement, a.Alias)
	}

	// A key Debezium has and outbox cannot honour is refused, not ignored.
	_, err = mapping.Parse(map[string]string{"table.name": "t", "table.fields.additional.placement": "shard:partition"})
	fmt.Println(err)
	// Output:
	// topic template: payments.{aggregatetype}
	// aggregate type column: aggregate
	// tenant → header "tenant"
	// type → header "eventType"
	// mapping: invalid outbox table mapping: not supported: table.fields.additional.placement: shard:partition: records are partitioned by their key, the aggregate id, which keeps each aggregate in order
}

// The same mapping written in Go; zero fields take Debezium's defaults.
func ExampleMapping_Normalize() {
	m, err := mapping.Mapping{
		Table:     "payment_events",
		EventID:   "event_id",
		EventKey:  "payment_id",
		Payload:   "body",
		Sequence:  "version",
		Timestamp: "created_at",
	}.Normalize()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.EventType, m.RouteBy, m.AggregateType, m.TopicTemplate())
	// Output: type aggregatetype aggregatetype outbox.event.{aggregatetype}
}
