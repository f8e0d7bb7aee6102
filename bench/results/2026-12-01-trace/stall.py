#!/usr/bin/env python3
"""For `go tool trace -d=parsed` output: the gaps longer than 15 ms between
franz-go starting a sink.drain goroutine (about one per produce request at
these rates; one drain may send several), at their times on the trace
clock (the monotonic clock, as the Sync event's Trace and Mono show), and,
for the longest, from 0.5 ms before it to its end, the events grouped by
(the goroutine they ran on, the first frame of their stack): the time of
the first, how many. The frame says what happened: syscall.write a
request sent; syscall.read or doSequenced.func1 on a connection's
handleResps goroutine an answer read; for a goroutine's creation it is
the new goroutine's start function."""
import collections
import re
import sys

lines = open(sys.argv[1]).read().split('\n')
starts = []
for i, line in enumerate(lines):
    if 'NotExist->Runnable' in line and i + 2 < len(lines) and 'sink).drain' in lines[i + 2]:
        starts.append(int(re.search(r'Time=(\d+)', line).group(1)))
starts.sort()
gaps = [(b - a, a) for a, b in zip(starts, starts[1:]) if b - a > 15e6]
print(f'{len(starts)} sink.drain starts over {(starts[-1] - starts[0]) / 1e9:.2f} s')
print(f'first at {starts[0] / 1e9:.6f} s')
for d, a in gaps:
    print(f'gap of {d / 1e6:.1f} ms from {a / 1e9:.6f} to {(a + d) / 1e9:.6f} s ({(a - starts[0]) / 1e6:.1f} ms after the first)')
if not gaps:
    sys.exit()
d, t0 = max(gaps)
count, first = collections.Counter(), {}
for i, line in enumerate(lines):
    m = re.search(r'Time=(\d+)', line)
    if not m or not t0 - 500_000 <= int(m.group(1)) <= t0 + d:
        continue
    frames = [x.strip().split(' @')[0] for x in lines[i + 1:i + 4] if x.startswith('\t') and not x.startswith('\t\t')]
    key = (re.search(r' G=(-?\d+)', line).group(1), frames[0] if frames else '')
    count[key] += 1
    first.setdefault(key, (int(m.group(1)) - t0) / 1e6)
print(f'the longest gap, from {d / 1e6:.1f} ms before the next drain start: ms, events, (goroutine, first frame)')
for k in sorted(count, key=first.get):
    print(f'{first[k]:8.3f} {count[k]:5d} {k}')
