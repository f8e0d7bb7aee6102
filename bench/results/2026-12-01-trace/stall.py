#!/usr/bin/env python3
"""For `go tool trace -d=parsed` output: the gaps between produce requests
(franz-go starting a sink.drain goroutine) longer than 15 ms, and for the
longest, each goroutine's first event in it and how many it had (its first
frame names what it did: syscall.write a request sent, syscall.read under
handleResps the broker's answer read)."""
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
print(f'{len(starts)} produce requests over {(starts[-1] - starts[0]) / 1e9:.2f} s')
for d, a in gaps:
    print(f'gap of {d / 1e6:.1f} ms at {(a - starts[0]) / 1e6:.1f} ms')
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
print(f'the longest gap, from {d / 1e6:.1f} ms before the next request: ms, events, (goroutine, first frame)')
for k in sorted(count, key=first.get):
    print(f'{first[k]:8.3f} {count[k]:5d} {k}')
