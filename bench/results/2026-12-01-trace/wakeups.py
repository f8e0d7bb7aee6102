#!/usr/bin/env python3
"""Counts, in `go tool trace -d=parsed` output, the goroutines created (by
the function each starts in) and the goroutines made runnable (by the first
three non-runtime frames of the stack that did it; a stack of runtime
frames only is the network poller, a timer or the scheduler)."""
import collections
import sys

lines = open(sys.argv[1]).read().split('\n')
created, unblocked = collections.Counter(), collections.Counter()
for i, line in enumerate(lines):
    if 'NotExist->Runnable' not in line and 'Waiting->Runnable' not in line:
        continue
    stacks, cur, j = {'TransitionStack=': [], 'Stack=': []}, None, i + 1
    while j < len(lines) and not lines[j].startswith('M='):
        if lines[j] in stacks:
            cur = stacks[lines[j]]
        elif lines[j].startswith('\t') and not lines[j].startswith('\t\t') and cur is not None:
            cur.append(lines[j].strip().split(' @')[0])
        j += 1
    if 'NotExist->Runnable' in line:
        start = stacks['TransitionStack='][:1] or ['?']
        created[start[0]] += 1
    else:
        frames = [f for f in stacks['Stack='] if not f.startswith('runtime.')][:3]
        unblocked[' < '.join(frames) or '(only runtime frames: network poller, timers, scheduler)'] += 1
print('goroutines created, by the function each starts in')
for k, c in created.most_common(12):
    print(f'{c:8d} {k}')
print('goroutines made runnable, by who')
for k, c in unblocked.most_common(12):
    print(f'{c:8d} {k}')
