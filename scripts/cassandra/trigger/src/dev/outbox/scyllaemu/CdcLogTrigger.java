package dev.outbox.scyllaemu;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Date;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ThreadLocalRandom;

import org.apache.cassandra.cql3.QueryProcessor;
import org.apache.cassandra.cql3.UntypedResultSet;
import org.apache.cassandra.db.DeletionTime;
import org.apache.cassandra.db.LivenessInfo;
import org.apache.cassandra.db.Mutation;
import org.apache.cassandra.db.marshal.BytesType;
import org.apache.cassandra.db.marshal.CollectionType;
import org.apache.cassandra.db.marshal.CompositeType;
import org.apache.cassandra.db.partitions.Partition;
import org.apache.cassandra.db.partitions.PartitionUpdate;
import org.apache.cassandra.db.rows.Cell;
import org.apache.cassandra.db.rows.ComplexColumnData;
import org.apache.cassandra.db.rows.Row;
import org.apache.cassandra.db.rows.Unfiltered;
import org.apache.cassandra.db.rows.UnfilteredRowIterator;
import org.apache.cassandra.exceptions.InvalidRequestException;
import org.apache.cassandra.schema.ColumnMetadata;
import org.apache.cassandra.schema.Schema;
import org.apache.cassandra.schema.TableMetadata;
import org.apache.cassandra.triggers.ITrigger;
import org.apache.cassandra.utils.TimeUUID;

/**
 * Emulates ScyllaDB's CDC log on Apache Cassandra, for tests only.
 *
 * <p>Attached (CREATE TRIGGER) to a base table whose log table
 * {@code <table>_scylla_cdc_log} exists in Scylla's layout, it adds the log
 * rows of every base write to the same mutation; Cassandra then applies
 * both through the batchlog, so a log row exists exactly when its base
 * write was applied. As in ScyllaDB:
 * <ul>
 * <li>one change per base partition and write timestamp, with one
 *     {@code cdc$time} derived from that timestamp (random low half);</li>
 * <li>its rows numbered by {@code cdc$batch_seq_no} in clustering order,
 *     the last marked {@code cdc$end_of_batch};</li>
 * <li>the stream is the one of the generation in force at the write's
 *     timestamp that owns the partition's token;</li>
 * <li>log rows expire after the log table's TTL (the cdc 'ttl' option).</li>
 * </ul>
 * Generations live in {@code scyllaemu.cdc_generation_timestamps} and
 * {@code scyllaemu.cdc_streams_descriptions_v2} (Scylla's layout), which the
 * test proxy shows to clients as {@code system_distributed}. Not emulated:
 * pre- and post-images, range deletions (refused), non-frozen UDTs
 * (refused).
 */
public final class CdcLogTrigger implements ITrigger {
    static final String EMULATION_KEYSPACE = "scyllaemu";
    static final String LOG_SUFFIX = "_scylla_cdc_log";

    static final byte UPDATE = 1, INSERT = 2, ROW_DELETE = 3, PARTITION_DELETE = 4;

    /** A generation's streams, sorted by the token each owns up to. */
    private static final class Generation {
        final long[] tokens;
        final ByteBuffer[] ids;

        Generation(long[] tokens, ByteBuffer[] ids) {
            this.tokens = tokens;
            this.ids = ids;
        }

        /** The stream owning token: the first whose token is not below it, wrapping around the ring. */
        ByteBuffer streamFor(long token) {
            int i = Arrays.binarySearch(tokens, token);
            if (i < 0) {
                i = -i - 1;
            }
            if (i == tokens.length) {
                i = 0;
            }
            return ids[i].duplicate();
        }
    }

    // A generation's streams never change once its timestamp is published
    // (they are written first), so they are cached by generation time.
    private final Map<Long, Generation> generations = new ConcurrentHashMap<>();

    /** One log row before it is numbered within its change. */
    private static final class LogRow {
        final byte operation;
        final Map<String, Object> values = new TreeMap<>();
        Long ttl;

        LogRow(byte operation) {
            this.operation = operation;
        }
    }

    @Override
    public Collection<Mutation> augment(Partition partition) {
        TableMetadata base = partition.metadata();
        TableMetadata log = Schema.instance.getTableMetadata(base.keyspace, base.name + LOG_SUFFIX);
        if (log == null) {
            throw new InvalidRequestException("scyllaemu: " + base.keyspace + "." + base.name
                    + " has the CDC trigger but no log table " + base.name + LOG_SUFFIX);
        }
        Map<String, ByteBuffer> key = partitionKey(base, partition.partitionKey().getKey());
        long token = partition.partitionKey().getToken().getLongValue();

        // Changes by write timestamp: ScyllaDB makes one change of each
        // timestamp a write carries.
        TreeMap<Long, List<LogRow>> changes = new TreeMap<>();
        DeletionTime partitionDeletion = partition.partitionLevelDeletion();
        if (!partitionDeletion.isLive()) {
            LogRow r = new LogRow(PARTITION_DELETE);
            r.values.putAll(key);
            changes.computeIfAbsent(partitionDeletion.markedForDeleteAt(), t -> new ArrayList<>()).add(r);
        }
        try (UnfilteredRowIterator it = partition.unfilteredIterator()) {
            Row statics = it.staticRow();
            if (statics != null && !statics.isEmpty()) {
                addRow(base, log, key, statics, changes);
            }
            while (it.hasNext()) {
                Unfiltered u = it.next();
                if (!u.isRow()) {
                    throw new InvalidRequestException("scyllaemu: range deletions are not emulated in the CDC log");
                }
                addRow(base, log, key, (Row) u, changes);
            }
        }

        List<Mutation> out = new ArrayList<>();
        int ttl = log.params.defaultTimeToLive;
        for (Map.Entry<Long, List<LogRow>> change : changes.entrySet()) {
            long ts = change.getKey();
            ByteBuffer stream = generationAt(ts).streamFor(token);
            long lsb = ThreadLocalRandom.current().nextLong() & 0x3fffffffffffffffL | 0x8000000000000000L;
            TimeUUID time = TimeUUID.atUnixMicrosWithLsb(ts, lsb);
            PartitionUpdate.SimpleBuilder b = PartitionUpdate.simpleBuilder(log, stream).timestamp(ts);
            if (ttl > 0) {
                b.ttl(ttl);
            }
            List<LogRow> rows = change.getValue();
            for (int seq = 0; seq < rows.size(); seq++) {
                LogRow r = rows.get(seq);
                Row.SimpleBuilder rb = b.row(time, seq).add("cdc$operation", r.operation);
                if (seq == rows.size() - 1) {
                    rb.add("cdc$end_of_batch", true);
                }
                if (r.ttl != null) {
                    rb.add("cdc$ttl", r.ttl);
                }
                for (Map.Entry<String, Object> v : r.values.entrySet()) {
                    if (log.getColumn(ByteBuffer.wrap(v.getKey().getBytes(java.nio.charset.StandardCharsets.UTF_8))) == null) {
                        throw new InvalidRequestException("scyllaemu: log table " + log.name + " has no column " + v.getKey()
                                + " (a column added to the base table after CDC was enabled?)");
                    }
                    rb.add(v.getKey(), v.getValue());
                }
            }
            out.add(b.buildAsMutation());
        }
        return out;
    }

    private static Map<String, ByteBuffer> partitionKey(TableMetadata base, ByteBuffer raw) {
        Map<String, ByteBuffer> key = new TreeMap<>();
        List<ColumnMetadata> cols = base.partitionKeyColumns();
        if (cols.size() == 1) {
            key.put(cols.get(0).name.toString(), raw.duplicate());
            return key;
        }
        ByteBuffer[] parts = ((CompositeType) base.partitionKeyType).split(raw);
        for (int i = 0; i < cols.size(); i++) {
            key.put(cols.get(i).name.toString(), parts[i]);
        }
        return key;
    }

    private static void addRow(TableMetadata base, TableMetadata log, Map<String, ByteBuffer> key, Row row, TreeMap<Long, List<LogRow>> changes) {
        LivenessInfo liveness = row.primaryKeyLivenessInfo();
        byte op;
        long ts;
        if (!row.deletion().isLive()) {
            op = ROW_DELETE;
            ts = row.deletion().time().markedForDeleteAt();
        } else if (!liveness.isEmpty()) {
            op = INSERT;
            ts = liveness.timestamp();
        } else {
            op = UPDATE;
            ts = maxTimestamp(row);
        }
        LogRow r = new LogRow(op);
        r.values.putAll(key);
        if (!row.isStatic()) {
            List<ColumnMetadata> clustering = base.clusteringColumns();
            for (int i = 0; i < clustering.size(); i++) {
                r.values.put(clustering.get(i).name.toString(), row.clustering().bufferAt(i));
            }
        }
        if (liveness.isExpiring()) {
            r.ttl = (long) liveness.ttl();
        }
        if (op != ROW_DELETE) {
            for (ColumnMetadata col : row.isStatic() ? base.staticColumns() : base.regularColumns()) {
                String name = col.name.toString();
                if (col.isSimple()) {
                    Cell<?> cell = row.getCell(col);
                    if (cell == null) {
                        continue;
                    }
                    if (cell.isTombstone()) {
                        r.values.put("cdc$deleted_" + name, true);
                    } else {
                        r.values.put(name, cell.buffer());
                        if (cell.isExpiring() && r.ttl == null) {
                            r.ttl = (long) cell.ttl();
                        }
                    }
                    continue;
                }
                ComplexColumnData data = row.getComplexColumnData(col);
                if (data == null) {
                    continue;
                }
                if (!(col.type instanceof CollectionType)) {
                    throw new InvalidRequestException("scyllaemu: non-frozen " + col.type.asCQL3Type() + " columns are not emulated in the CDC log");
                }
                CollectionType<?> type = (CollectionType<?>) col.type;
                if (!data.complexDeletion().isLive()) {
                    r.values.put("cdc$deleted_" + name, true);
                }
                List<ByteBuffer> added = new ArrayList<>();
                List<ByteBuffer> removed = new ArrayList<>();
                for (Cell<?> cell : data) {
                    ByteBuffer path = cell.path().get(0);
                    if (cell.isTombstone()) {
                        removed.add(path);
                        continue;
                    }
                    if (cell.isExpiring() && r.ttl == null) {
                        r.ttl = (long) cell.ttl();
                    }
                    switch (type.kind) {
                        case MAP:
                            added.add(path);
                            added.add(cell.buffer());
                            break;
                        case SET:
                            added.add(path);
                            break;
                        case LIST:
                            // ScyllaDB logs a list's added elements as a
                            // map from their timeuuid keys to values.
                            added.add(path);
                            added.add(cell.buffer());
                            break;
                    }
                }
                if (!added.isEmpty()) {
                    int n = type.kind == CollectionType.Kind.SET ? added.size() : added.size() / 2;
                    r.values.put(name, pack(added, n));
                }
                if (!removed.isEmpty()) {
                    r.values.put("cdc$deleted_elements_" + name, pack(removed, removed.size()));
                }
            }
        }
        changes.computeIfAbsent(ts, t -> new ArrayList<>()).add(r);
    }

    private static long maxTimestamp(Row row) {
        long ts = Long.MIN_VALUE;
        for (Cell<?> cell : row.cells()) {
            ts = Math.max(ts, cell.timestamp());
        }
        for (ColumnMetadata col : row.columns()) {
            if (col.isComplex()) {
                ComplexColumnData data = row.getComplexColumnData(col);
                if (data != null && !data.complexDeletion().isLive()) {
                    ts = Math.max(ts, data.complexDeletion().markedForDeleteAt());
                }
            }
        }
        return ts;
    }

    /** A frozen collection's value: its element count, then each element with its length (native protocol v3+ layout). */
    private static ByteBuffer pack(List<ByteBuffer> elements, int count) {
        int size = 4;
        for (ByteBuffer e : elements) {
            size += 4 + e.remaining();
        }
        ByteBuffer out = ByteBuffer.allocate(size);
        out.putInt(count);
        for (ByteBuffer e : elements) {
            out.putInt(e.remaining());
            out.put(e.duplicate());
        }
        out.flip();
        return out;
    }

    /** The generation in force at ts (microseconds): the latest one starting at or before it. */
    private Generation generationAt(long ts) {
        UntypedResultSet times = QueryProcessor.executeInternal(
                "SELECT time FROM " + EMULATION_KEYSPACE + ".cdc_generation_timestamps WHERE key = 'timestamps'");
        long best = Long.MIN_VALUE;
        for (UntypedResultSet.Row row : times) {
            long start = row.getTimestamp("time").getTime();
            if (start * 1000 <= ts && start > best) {
                best = start;
            }
        }
        if (best == Long.MIN_VALUE) {
            throw new InvalidRequestException("scyllaemu: no CDC generation starts at or before the write's timestamp (" + ts
                    + " µs); ScyllaDB would refuse this write too");
        }
        return generations.computeIfAbsent(best, CdcLogTrigger::loadGeneration);
    }

    private static Generation loadGeneration(long start) {
        UntypedResultSet rows = QueryProcessor.executeInternal(
                "SELECT streams FROM " + EMULATION_KEYSPACE + ".cdc_streams_descriptions_v2 WHERE time = ?", new Date(start));
        TreeMap<Long, ByteBuffer> byToken = new TreeMap<>();
        for (UntypedResultSet.Row row : rows) {
            for (ByteBuffer id : row.getFrozenSet("streams", BytesType.instance)) {
                byToken.put(id.getLong(id.position()), id);
            }
        }
        if (byToken.isEmpty()) {
            throw new InvalidRequestException("scyllaemu: CDC generation " + start + " has no streams");
        }
        long[] tokens = new long[byToken.size()];
        ByteBuffer[] ids = new ByteBuffer[byToken.size()];
        int i = 0;
        for (Map.Entry<Long, ByteBuffer> e : byToken.entrySet()) {
            tokens[i] = e.getKey();
            ids[i++] = e.getValue();
        }
        return new Generation(tokens, ids);
    }
}
