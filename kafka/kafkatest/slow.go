package kafkatest

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// SlowBroker is a two-broker kfake cluster whose topic has partitions led
// by each broker; between Hold and Release, produce requests to one of
// them, Slow, wait. The other answers at once: one broker slow without
// failing.
type SlowBroker struct {
	*kfake.Cluster
	Slow    int32 // the node held
	Release func()
	holding atomic.Bool
}

// Hold makes produce requests to the slow broker wait until Release.
func (s *SlowBroker) Hold() { s.holding.Store(true) }

// NewSlowBroker starts the cluster with topic in partitions (at least 2).
func NewSlowBroker(topic string, partitions int32) (*SlowBroker, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(2), kfake.SeedTopics(partitions, topic))
	if err != nil {
		return nil, err
	}
	// Leaders are placed at random: make sure both brokers lead one.
	slow := c.LeaderFor(topic, 0)
	other := int32(-1)
	for p := int32(1); p < partitions && other < 0; p++ {
		if n := c.LeaderFor(topic, p); n != slow {
			other = n
		}
	}
	if other < 0 {
		if err := c.MoveTopicPartition(topic, 1, 1-slow); err != nil {
			c.Close()
			return nil, fmt.Errorf("kafkatest: spread the leaders of %s: %w", topic, err)
		}
	}
	release := make(chan struct{})
	s := &SlowBroker{Cluster: c, Slow: slow, Release: sync.OnceFunc(func() { close(release) })}
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if s.holding.Load() && c.CurrentNode() == slow {
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	return s, nil
}

// Close releases what is held and stops the cluster.
func (s *SlowBroker) Close() {
	s.Release()
	s.Cluster.Close()
}
