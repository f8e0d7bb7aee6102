package kafka

import (
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// EmbeddedConfig configures the in-process broker. Its zero value works.
type EmbeddedConfig struct {
	// Port to listen on, on 127.0.0.1 (0: any free port).
	Port int
	// Partitions of auto-created topics (default 3).
	Partitions int
	// DataDir persists the log across restarts when set.
	DataDir string
	// Opts are appended last, for SASL, TLS or test controls.
	Opts []kfake.Opt
}

// Embedded is franz-go's kfake: a Kafka-protocol broker in this process,
// which any Kafka client can reach on 127.0.0.1.
type Embedded struct {
	cluster *kfake.Cluster
	once    sync.Once
}

// StartEmbedded starts the broker.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("kafka: embedded broker Port %d is out of range", cfg.Port)
	}
	if cfg.Partitions < 0 {
		return nil, fmt.Errorf("kafka: embedded broker Partitions must not be negative, got %d", cfg.Partitions)
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 3
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(cfg.Port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(cfg.Partitions),
	}
	if cfg.DataDir != "" {
		opts = append(opts, kfake.DataDir(cfg.DataDir))
	}
	c, err := kfake.NewCluster(append(opts, cfg.Opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: start embedded broker on port %d: %w", cfg.Port, err)
	}
	return &Embedded{cluster: c}, nil
}

// Addrs are the broker's listen addresses.
func (e *Embedded) Addrs() []string { return e.cluster.ListenAddrs() }

// Cluster exposes kfake for fault injection (ControlKey) in tests.
func (e *Embedded) Cluster() *kfake.Cluster { return e.cluster }

// Close stops the broker; it is safe to call more than once.
func (e *Embedded) Close() error {
	e.once.Do(e.cluster.Close)
	return nil
}
