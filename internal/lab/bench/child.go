package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/outbox-dev/outbox/internal/lab/labcli"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The backlog curve and the fixed-rate stages run the product's relay,
// `outbox relay`, as a child process: its CPU (the sum of its threads'
// run time, /proc/PID/task/*/schedstat) and its peak RSS (VmHWM in
// /proc/PID/status) are then its own, not the bench's writers' and
// readers'. On SQLite the fixed-rate stages keep the relay in this
// process: a database file has one writing process (outbox serve), and
// writers in another process than the relay's get SQLITE_BUSY.

type childRelay struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
	err    error
}

// startChild runs `outbox relay` on the stage's store.
func (e *benchEnv) startChild(ctx context.Context, st *stage) (*childRelay, error) {
	if e.exe == "" {
		exe, cleanup, err := labcli.OutboxBinary(ctx, e.opts.outbox, "bench", e.stderr)
		if err != nil {
			return nil, err
		}
		e.exe, e.cleanups = exe, append(e.cleanups, cleanup)
	}
	args := e.childArgs(st)
	c := &childRelay{cmd: exec.Command(e.exe, args...), stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	c.cmd.Stderr, c.cmd.Stdout = c.stderr, io.Discard
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start outbox relay: %w", err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	return c, nil
}

// failed reports the child's exit, if it exited.
func (c *childRelay) failed() error {
	select {
	case <-c.exited:
		return fmt.Errorf("outbox relay exited: %v\n%s", c.err, c.stderr.String())
	default:
		return nil
	}
}

// stop ends the child with SIGTERM (SIGKILL after 10 s).
func (c *childRelay) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// cpu is the child's CPU time so far: its threads' run time (0 for no
// child).
func (c *childRelay) cpu() time.Duration {
	if c == nil {
		return 0
	}
	dir := fmt.Sprintf("/proc/%d/task", c.cmd.Process.Pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var ns int64
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			ns += n
		}
	}
	return time.Duration(ns)
}

// peakRSS is the child's peak resident set (VmHWM), in bytes.
func (c *childRelay) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// published counts the records on topic: the sum of its partitions'
// end offsets.
func published(ctx context.Context, adm *kadm.Client, topic string) (int64, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var n int64
	var unknown bool
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			unknown = true
			return
		}
		n += o.Offset
	})
	if unknown && n == 0 {
		return 0, nil // not created yet
	}
	return n, nil
}

func (e *benchEnv) kafkaClient(opts ...kgo.Opt) (*kgo.Client, error) {
	sec, err := e.cfg.KafkaSecurity().Opts()
	if err != nil {
		return nil, err
	}
	return kgo.NewClient(append(append(sec, kgo.SeedBrokers(e.brokers...)), opts...)...)
}

// rawProducer is the baselines' plain franz-go producer, with the
// relay's acks and linger: a baseline that sent each record at once would
// count a lingering relay's batching to the relay's credit.
func (e *benchEnv) rawProducer() (*kgo.Client, error) {
	return e.kafkaClient(kgo.AllowAutoTopicCreation(), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(e.cfg.KafkaLinger))
}

// partitionCount is how many partitions topic has.
func partitionCount(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
	td, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, err
	}
	d, ok := td[topic]
	if !ok || d.Err != nil || len(d.Partitions) == 0 {
		return 0, fmt.Errorf("partitions of %s: %v", topic, d.Err)
	}
	return len(d.Partitions), nil
}

// createTopic makes topic with the broker's defaults and configs, before
// a consumer subscribes to it; one that exists already is fine.
func createTopic(ctx context.Context, adm *kadm.Client, topic string, configs map[string]*string) error {
	res, err := adm.CreateTopics(ctx, -1, -1, configs, topic)
	if err != nil {
		return err
	}
	for _, r := range res {
		if r.Err != nil && !strings.Contains(r.Err.Error(), "TOPIC_ALREADY_EXISTS") {
			return fmt.Errorf("create topic %s: %w", topic, r.Err)
		}
	}
	return nil
}

var errChildTimeout = errors.New("the relay did not drain the backlog in 30 minutes")

// childArgs is the child relay's command line: the stage's store and
// topics, and the settings given to bench that shape the relay.
func (e *benchEnv) childArgs(st *stage) []string {
	args := []string{"relay", "--store", st.cfg.Store, "--source", e.source, "--brokers", strings.Join(e.brokers, ","),
		"--topic-template", st.topic, "--retention", "0s", "--log-level", "error", "--poll-interval", e.cfg.PollInterval.String()}
	if strings.HasPrefix(st.cfg.Store, "postgres") {
		args = append(args, "--slot", st.cfg.Slot)
	}
	// Always: the child inherits the environment, OUTBOX_KAFKA_LINGER too.
	args = append(args, "--kafka-linger", e.cfg.KafkaLinger.String())
	if e.cfg.KafkaCAFile != "" || e.cfg.KafkaTLS {
		args = append(args, "--kafka-tls")
	}
	for flag, v := range map[string]string{"--kafka-ca-file": e.cfg.KafkaCAFile, "--kafka-cert-file": e.cfg.KafkaCertFile,
		"--kafka-key-file": e.cfg.KafkaKeyFile, "--kafka-sasl-mechanism": e.cfg.KafkaSASL, "--kafka-sasl-user": e.cfg.KafkaSASLUser} {
		if v != "" {
			args = append(args, flag, v)
		}
	}
	return args
}
