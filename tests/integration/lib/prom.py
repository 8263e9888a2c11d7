#!/usr/bin/env python3
"""Reads the Prometheus text exposition format (version 0.0.4) strictly, for
the tests: every line a HELP, a TYPE or a sample; a sample's family typed
before it; names and labels well formed; counters end in _total; no series
twice; a histogram's buckets cumulative, +Inf equal to _count.

  prom.py scrape URL OUT          fetch URL into OUT (HTTP 200, the content type)
  prom.py check FILE              is FILE well formed (exit 1 with why)
  prom.py value FILE SERIES       the value of one series, labels in any order
  prom.py same FILE1 FILE2        the two hold the same series and values
  prom.py expect OLD NEW SERIES=+D ...   each series grew by exactly D
  prom.py histogram OLD NEW NAME V       one observation V went in: the first
                                  bucket with le >= V and those after grew by
                                  one, those before did not; _count +1, _sum +V
"""
import re
import sys
import urllib.request

NAME = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')
TYPES = {'counter', 'gauge', 'histogram', 'summary', 'untyped'}


class Bad(Exception):
    pass


def key(name, labels):
    return name + '{' + ','.join('%s="%s"' % kv for kv in sorted(labels.items())) + '}'


def parse_labels(text, where):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        if not m:
            raise Bad('%s: bad labels {%s}' % (where, text))
        if m.group(1) in labels:
            raise Bad('%s: label %s twice' % (where, m.group(1)))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def family_of(name, types):
    for suffix in ('_bucket', '_sum', '_count'):
        base = name[:-len(suffix)]
        if name.endswith(suffix) and types.get(base) in ('histogram', 'summary'):
            return base
    return name


def parse(text):
    """{series key: float}, after checking every rule above."""
    if not text.endswith('\n'):
        raise Bad('the text does not end with a newline')
    types, helps, series, seen_families = {}, {}, {}, []
    for n, line in enumerate(text.split('\n')[:-1], 1):
        where = 'line %d' % n
        if line.startswith('#'):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ('HELP', 'TYPE'):
                if not NAME.match(parts[2]):
                    raise Bad('%s: bad metric name %r' % (where, parts[2]))
                table = helps if parts[1] == 'HELP' else types
                if parts[2] in table:
                    raise Bad('%s: a second %s for %s' % (where, parts[1], parts[2]))
                if parts[1] == 'TYPE':
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise Bad('%s: bad TYPE line %r' % (where, line))
                    if parts[2] in seen_families:
                        raise Bad('%s: TYPE of %s after its samples' % (where, parts[2]))
                table[parts[2]] = parts[3] if len(parts) == 4 else ''
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$', line)
        if not m:
            raise Bad('%s: not a sample: %r' % (where, line))
        name, labels = m.group(1), parse_labels(m.group(3) or '', where)
        try:
            value = float(m.group(4))
        except ValueError:
            raise Bad('%s: bad value %r' % (where, m.group(4)))
        fam = family_of(name, types)
        if fam not in types:
            raise Bad('%s: %s has no TYPE before it' % (where, name))
        if types[fam] == 'counter' and not name.endswith('_total'):
            raise Bad('%s: counter %s does not end in _total' % (where, name))
        if types[fam] == 'counter' and value < 0:
            raise Bad('%s: counter %s is negative' % (where, name))
        if fam not in seen_families:
            seen_families.append(fam)
        elif seen_families[-1] != fam:
            raise Bad('%s: the samples of %s are not together' % (where, fam))
        k = key(name, labels)
        if k in series:
            raise Bad('%s: %s twice' % (where, k))
        series[k] = value
    for fam, t in types.items():
        if t == 'histogram':
            check_histogram(fam, series)
    return series


def buckets(fam, series):
    out = []
    for k, v in series.items():
        m = re.match(re.escape(fam) + r'_bucket\{le="([^"]+)"\}$', k)
        if m:
            out.append((float(m.group(1)), v))
    return sorted(out)


def check_histogram(fam, series):
    b = buckets(fam, series)
    if not b or b[-1][0] != float('inf'):
        raise Bad('histogram %s has no +Inf bucket' % fam)
    for (_, lo), (le, hi) in zip(b, b[1:]):
        if hi < lo:
            raise Bad('histogram %s: bucket le=%g holds fewer than the one before' % (fam, le))
    count = series.get(fam + '_count{}')
    if count is None or fam + '_sum{}' not in series:
        raise Bad('histogram %s lacks _sum or _count' % fam)
    if count != b[-1][1]:
        raise Bad('histogram %s: _count %g, +Inf bucket %g' % (fam, count, b[-1][1]))


def load(path):
    with open(path) as f:
        return parse(f.read())


def norm(s):
    """A series as written on the command line, as key() writes it."""
    m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?$', s)
    if not m:
        raise Bad('bad series %r' % s)
    return key(m.group(1), parse_labels(m.group(3) or '', 'argument'))


def get(series, s):
    k = norm(s)
    if k not in series:
        raise Bad('no series %s' % k)
    return series[k]


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ''
    if cmd == 'scrape' and len(argv) == 4:
        with urllib.request.urlopen(argv[2], timeout=20) as r:
            ctype = r.headers.get('Content-Type', '')
            if r.status != 200 or not ctype.startswith('text/plain; version=0.0.4'):
                raise Bad('HTTP %d, Content-Type %r' % (r.status, ctype))
            body = r.read().decode('utf-8')
        with open(argv[3], 'w') as f:
            f.write(body)
    elif cmd == 'check' and len(argv) == 3:
        s = load(argv[2])
        print('%d series' % len(s))
    elif cmd == 'value' and len(argv) == 4:
        print('%.17g' % get(load(argv[2]), argv[3]))
    elif cmd == 'same' and len(argv) == 4:
        a, b = load(argv[2]), load(argv[3])
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            raise Bad('they differ in ' + '; '.join(
                '%s: %s vs %s' % (k, a.get(k), b.get(k)) for k in diff[:6]))
    elif cmd == 'expect' and len(argv) >= 5:
        old, new = load(argv[2]), load(argv[3])
        wrong = []
        for arg in argv[4:]:
            s, _, d = arg.rpartition('=')
            grew = get(new, s) - get(old, s)
            if abs(grew - float(d)) > 1e-9:
                wrong.append('%s grew by %.17g, not %s' % (norm(s), grew, d))
        if wrong:
            raise Bad('; '.join(wrong))
    elif cmd == 'histogram' and len(argv) == 6:
        old, new, fam, v = load(argv[2]), load(argv[3]), argv[4], float(argv[5])
        bo, bn = buckets(fam, old), buckets(fam, new)
        for (le, a), (_, b) in zip(bo, bn):
            want = 1 if v <= le else 0
            if b - a != want:
                raise Bad('bucket le=%g grew by %g, not %d, for %g' % (le, b - a, want, v))
        if get(new, fam + '_count') - get(old, fam + '_count') != 1:
            raise Bad('%s_count did not grow by one' % fam)
        if abs(get(new, fam + '_sum') - get(old, fam + '_sum') - v) > 1e-6:
            raise Bad('%s_sum did not grow by %g' % (fam, v))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv))
    except (Bad, OSError) as e:
        print('prom.py: %s' % e)
        sys.exit(1)
