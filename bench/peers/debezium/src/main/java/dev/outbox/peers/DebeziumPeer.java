package dev.outbox.peers;

import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.ChangeEvent;
import io.debezium.embedded.Connect;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

/**
 * The Debezium peer of bench/peers: Debezium's embedded engine (PostgreSQL
 * connector, pgoutput) with the outbox EventRouter SMT, and a Kafka producer
 * (acks=all, enable.idempotence=true) that publishes what the engine hands
 * over. It is one OS process, so the driver can read its CPU time.
 *
 * <p>The sink follows Debezium Server's Kafka sink (debezium-server-kafka,
 * KafkaChangeConsumer): send every record of a batch, wait for all the
 * broker's acknowledgements, then mark the records processed and the batch
 * finished, so offsets only move past what Kafka acknowledged
 * (at-least-once).
 *
 * <p>Arguments are key=value pairs: host, port, dbname, user, password,
 * slot, publication, topic (the routed topic's prefix: records go to
 * TOPIC.${aggregatetype}), brokers, offsets (the offset file) and
 * optionally poll.interval.ms (omitted: Debezium's default).
 */
public final class DebeziumPeer {

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("argument must be key=value: " + arg);
            }
            a.put(arg.substring(0, eq), arg.substring(eq + 1));
        }

        Properties producerProps = new Properties();
        producerProps.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, need(a, "brokers"));
        producerProps.put(ProducerConfig.ACKS_CONFIG, "all");
        producerProps.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        producerProps.put(ProducerConfig.CLIENT_ID_CONFIG, "debezium-peer");
        producerProps.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        producerProps.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        // linger.ms, batch.size, compression: the client's defaults (Kafka
        // 4.x: linger.ms=5, no compression).
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(producerProps);

        Properties props = new Properties();
        props.setProperty("name", "peers-outbox");
        props.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        props.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
        props.setProperty("offset.storage.file.filename", need(a, "offsets"));
        props.setProperty("database.hostname", need(a, "host"));
        props.setProperty("database.port", need(a, "port"));
        props.setProperty("database.user", need(a, "user"));
        props.setProperty("database.password", a.getOrDefault("password", ""));
        props.setProperty("database.dbname", need(a, "dbname"));
        props.setProperty("topic.prefix", "peers");
        props.setProperty("plugin.name", "pgoutput");
        props.setProperty("slot.name", need(a, "slot"));
        props.setProperty("publication.name", need(a, "publication"));
        // The connector creates its publication for the captured tables
        // only (the outbox table), and captures nothing else.
        props.setProperty("publication.autocreate.mode", "filtered");
        props.setProperty("table.include.list", "public.outbox");
        // Our outbox table's txid column is xid8, which the connector does
        // not know; it carries nothing the event router uses.
        props.setProperty("column.exclude.list", "public.outbox.txid");
        // Outbox rows are only inserted; a delete must not become a
        // tombstone (the outbox event router page's example).
        props.setProperty("tombstones.on.delete", "false");
        if (a.containsKey("poll.interval.ms")) {
            props.setProperty("poll.interval.ms", a.get("poll.interval.ms"));
        }
        // The outbox event router: route by aggregatetype, key = aggregateid,
        // value = payload, header id = the event id (all its defaults), onto
        // TOPIC.${routedByValue} instead of outbox.event.${routedByValue}.
        props.setProperty("transforms", "outbox");
        props.setProperty("transforms.outbox.type", "io.debezium.transforms.outbox.EventRouter");
        props.setProperty("transforms.outbox.route.by.field", "aggregatetype");
        props.setProperty("transforms.outbox.table.field.event.key", "aggregateid");
        props.setProperty("transforms.outbox.table.field.event.id", "id");
        props.setProperty("transforms.outbox.table.field.event.payload", "payload");
        props.setProperty("transforms.outbox.route.topic.replacement", need(a, "topic") + ".${routedByValue}");

        CountDownLatch done = new CountDownLatch(1);
        DebeziumEngine<ChangeEvent<SourceRecord, SourceRecord>> engine = DebeziumEngine.create(Connect.class)
                .using(props)
                .notifying(new KafkaSink(producer))
                .using((success, message, error) -> {
                    if (!success) {
                        System.err.println("debezium-peer: engine stopped: " + message);
                        if (error != null) {
                            error.printStackTrace();
                        }
                    }
                    done.countDown();
                })
                .build();

        ExecutorService executor = Executors.newSingleThreadExecutor();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                engine.close();
                executor.shutdown();
                executor.awaitTermination(30, TimeUnit.SECONDS);
            }
            catch (Exception e) {
                e.printStackTrace();
            }
            finally {
                producer.close();
            }
        }));
        executor.execute(engine);
        done.await();
        // The engine stopped by itself (an error): exit non-zero so the
        // driver notices.
        System.exit(2);
    }

    private static String need(Map<String, String> a, String key) {
        String v = a.get(key);
        if (v == null) {
            throw new IllegalArgumentException("missing argument " + key + "=...");
        }
        return v;
    }

    /** Publishes a batch, waits for every acknowledgement, then commits it. */
    static final class KafkaSink implements DebeziumEngine.ChangeConsumer<ChangeEvent<SourceRecord, SourceRecord>> {
        private final KafkaProducer<byte[], byte[]> producer;

        KafkaSink(KafkaProducer<byte[], byte[]> producer) {
            this.producer = producer;
        }

        @Override
        public void handleBatch(List<ChangeEvent<SourceRecord, SourceRecord>> records,
                                DebeziumEngine.RecordCommitter<ChangeEvent<SourceRecord, SourceRecord>> committer)
                throws InterruptedException {
            List<Future<RecordMetadata>> sent = new ArrayList<>(records.size());
            for (ChangeEvent<SourceRecord, SourceRecord> event : records) {
                SourceRecord r = event.value(); // the Connect format: the record itself
                if (r == null || r.topic() == null || r.value() == null) {
                    continue; // nothing to publish (e.g. a filtered record)
                }
                RecordHeaders headers = new RecordHeaders();
                for (Header h : r.headers()) {
                    if (h.value() != null) {
                        headers.add(h.key(), String.valueOf(h.value()).getBytes(StandardCharsets.UTF_8));
                    }
                }
                byte[] key = r.key() == null ? null : String.valueOf(r.key()).getBytes(StandardCharsets.UTF_8);
                byte[] value = String.valueOf(r.value()).getBytes(StandardCharsets.UTF_8);
                sent.add(producer.send(new ProducerRecord<>(r.topic(), null, key, value, headers)));
            }
            for (Future<RecordMetadata> f : sent) {
                try {
                    f.get();
                }
                catch (java.util.concurrent.ExecutionException e) {
                    // Fail the engine: nothing of this batch is committed,
                    // so a restart publishes it again.
                    throw new RuntimeException("publish failed", e.getCause());
                }
            }
            for (ChangeEvent<SourceRecord, SourceRecord> event : records) {
                committer.markProcessed(event);
            }
            committer.markBatchFinished();
        }
    }
}
