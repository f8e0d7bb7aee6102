package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// env is what every run shares: the server's superuser connection and a
// Kafka admin client.
type env struct {
	o     *options
	runID string
	admin *pgxpool.Pool
	kcl   *kgo.Client
	kadm  *kadm.Client
	pgURL *url.URL
}

func newEnv(ctx context.Context, o *options, runID string) (*env, error) {
	u, err := url.Parse(o.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("-pg: %w", err)
	}
	admin, err := pgxpool.New(ctx, o.pgDSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := admin.Ping(ctx); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	kcl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(o.brokers, ",")...))
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	e := &env{o: o, runID: runID, admin: admin, kcl: kcl, kadm: kadm.NewClient(kcl), pgURL: u}
	if _, err := e.kadm.ListBrokers(ctx); err != nil {
		e.close()
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return e, nil
}

func (e *env) close() {
	e.kcl.Close()
	e.admin.Close()
}

// dsn is the server's DSN with another database.
func (e *env) dsn(db string) string {
	u := *e.pgURL
	u.Path = "/" + db
	return u.String()
}

// postmasterStart is when the server last started: a change during a run
// means something restarted it.
func (e *env) postmasterStart(ctx context.Context) string {
	var t time.Time
	for i := 0; i < 60; i++ {
		if err := e.admin.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&t); err == nil {
			return t.UTC().Format(time.RFC3339Nano)
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Second)
	}
	return "unknown"
}

func (e *env) createDB(ctx context.Context, db string) error {
	_, err := e.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize())
	return err
}

// dropDB drops a run's database after dropping the replication slots that
// live in it (a slot, active or not, keeps DROP DATABASE from working).
func (e *env) dropDB(ctx context.Context, db string) error {
	var last error
	for i := 0; i < 20; i++ {
		_, _ = e.admin.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, db)
		_, _ = e.admin.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, db)
		_, last = e.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
		if last == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return last
}

func (e *env) createTopic(ctx context.Context, topic string) error {
	resp, err := e.kadm.CreateTopics(ctx, int32(e.o.partitions), 1, nil, topic)
	if err != nil {
		return err
	}
	return resp.Error()
}

func (e *env) deleteTopic(ctx context.Context, topic string) {
	if _, err := e.kadm.DeleteTopics(ctx, topic); err != nil {
		logf("delete topic %s: %v", topic, err)
	}
}

// conditions are the exact conditions of a run, gathered from the machine
// and the servers rather than assumed.
type conditions struct {
	Date        string            `json:"date"`
	Host        string            `json:"host"`
	NProc       int               `json:"nproc"`
	MemTotal    string            `json:"mem_total"`
	CPUModel    string            `json:"cpu_model"`
	Kernel      string            `json:"kernel"`
	Go          string            `json:"go"`
	Java        string            `json:"java"`
	PostgreSQL  string            `json:"postgresql"`
	PGSettings  map[string]string `json:"pg_settings"`
	Kafka       string            `json:"kafka"`
	KafkaBroker map[string]string `json:"kafka_broker_config"`
	KafkaJVM    string            `json:"kafka_jvm"`
	OtherLoad   string            `json:"other_load"`
	// InheritedEnv: Go runtime settings in the driver's environment, which
	// every relay process inherits (a GOMAXPROCS there would apply to the
	// baselines as well as to the -1cpu system).
	InheritedEnv   map[string]string `json:"inherited_env"`
	LoadAvgAtStart string            `json:"loadavg_at_start"`
	OutboxCommit   string            `json:"outbox_commit"`
	PeerVersions   map[string]string `json:"peer_versions"`
}

func gatherConditions(ctx context.Context, e *env) conditions {
	c := conditions{Date: time.Now().UTC().Format(time.RFC3339), NProc: runtime.NumCPU(), Go: runtime.Version(),
		PGSettings: map[string]string{}, KafkaBroker: map[string]string{}}
	c.Host, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if m := regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindSubmatch(b); m != nil {
			var kb int64
			fmt.Sscan(string(m[1]), &kb)
			c.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/1024/1024)
		}
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if m := regexp.MustCompile(`model name\s*:\s*(.*)`).FindSubmatch(b); m != nil {
			c.CPUModel = strings.TrimSpace(string(m[1]))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		c.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		c.LoadAvgAtStart = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("java", "-version").CombinedOutput(); err == nil {
		c.Java = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	}
	c.OutboxCommit = e.o.outboxRev
	_ = e.admin.QueryRow(ctx, "SELECT version()").Scan(&c.PostgreSQL)
	for _, s := range []string{"server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers", "max_wal_senders", "max_replication_slots", "wal_sender_timeout"} {
		var v string
		if err := e.admin.QueryRow(ctx, "SELECT current_setting($1)", s).Scan(&v); err == nil {
			c.PGSettings[s] = v
		}
	}
	c.Kafka, c.KafkaJVM = kafkaVersion(e.o.brokers)
	if brokers, err := e.kadm.ListBrokers(ctx); err == nil && len(brokers) > 0 {
		if rc, err := e.kadm.DescribeBrokerConfigs(ctx, brokers[0].NodeID); err == nil {
			for _, r := range rc {
				for _, cfg := range r.Configs {
					switch cfg.Key {
					case "log.flush.interval.messages", "log.flush.interval.ms", "num.partitions", "default.replication.factor",
						"min.insync.replicas", "auto.create.topics.enable", "num.network.threads", "num.io.threads", "log.segment.bytes", "compression.type":
						c.KafkaBroker[cfg.Key] = cfg.MaybeValue()
					}
				}
			}
		}
		c.KafkaBroker["brokers"] = fmt.Sprint(len(brokers))
	}
	c.PeerVersions = peerVersions(e.o.forwarderBin)
	c.OtherLoad = otherLoad()
	c.InheritedEnv = map[string]string{}
	for _, k := range []string{"GOMAXPROCS", "GODEBUG", "GOGC", "GOMEMLIMIT"} {
		if v, ok := os.LookupEnv(k); ok {
			c.InheritedEnv[k] = v
		}
	}
	return c
}

// kafkaVersion finds the broker process listening on the first broker's
// port and reads the Kafka version from the jar on its class path, and its
// JVM heap and GC flags.
func kafkaVersion(brokers string) (version, jvm string) {
	version, jvm = "unknown", "unknown"
	addr := strings.Split(brokers, ",")[0]
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return
	}
	out, err := exec.Command("ss", "-ltnpH", "sport = :"+addr[i+1:]).Output()
	if err != nil {
		return
	}
	m := regexp.MustCompile(`pid=(\d+)`).FindSubmatch(out)
	if m == nil {
		return
	}
	cmdline, err := os.ReadFile("/proc/" + string(m[1]) + "/cmdline")
	if err != nil {
		return
	}
	args := strings.Split(string(cmdline), "\x00")
	var flags []string
	for j, a := range args {
		if strings.HasPrefix(a, "-Xm") || strings.HasPrefix(a, "-XX:+Use") {
			flags = append(flags, a)
		}
		if (a == "-cp" || a == "-classpath") && j+1 < len(args) {
			for _, dir := range strings.Split(args[j+1], ":") {
				matches, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "kafka_2.13-*.jar"))
				for _, mm := range matches {
					if v := regexp.MustCompile(`kafka_2\.13-([0-9.]+)\.jar$`).FindStringSubmatch(mm); v != nil {
						version = "Apache Kafka " + v[1] + " (KRaft, one node)"
					}
				}
			}
		}
	}
	jvm = strings.Join(flags, " ")
	return
}

func peerVersions(forwarderBin string) map[string]string {
	v := map[string]string{
		"debezium":        "3.6.1.Final (debezium-embedded, debezium-connector-postgres, pgoutput)",
		"watermill":       "v1.5.1",
		"watermill-sql":   "v4.1.2",
		"watermill-kafka": "v3.0.6",
	}
	// The forwarder binary's own record of what it was built with.
	if out, err := exec.Command("go", "version", "-m", forwarderBin).Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && f[0] == "dep" && f[1] == "github.com/IBM/sarama" {
				v["sarama"] = f[2]
			}
		}
	}
	if info, ok := readBuildInfo(); ok {
		for _, d := range info {
			if d[0] == "github.com/twmb/franz-go" {
				v["franz-go (driver's consumer)"] = d[1]
			}
		}
	}
	return v
}

// otherLoad lists the heaviest other processes, so that a reader sees what
// shared the machine (the comparison's own processes included).
func otherLoad() string {
	out, err := exec.Command("ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers").Output()
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > 6 {
		lines = lines[:6]
	}
	for i := range lines {
		lines[i] = strings.Join(strings.Fields(lines[i]), " ")
	}
	return strings.Join(lines, "; ")
}
