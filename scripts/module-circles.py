#!/usr/bin/env python3
"""Import circles between slct's modules.

Every file under src/ (but main.rs) is a module; its references are every `crate::a::b`
path in its text (use lines and inline paths, grouped `use crate::{..}` trees expanded),
`super::..` paths, and `child::..` paths to modules it declares. `#[cfg(test)]` blocks
are left out only with --no-tests. A reference resolves to the longest module prefix.

Reported: for every pair of sibling modules (children of one parent, at any depth,
a folder standing for everything under it), whether each side refers to the other.
Parent <-> child references (a child using its parent's items) are listed apart.
"""
import os, re, sys, itertools
ROOT = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith('-') else 'src'
NO_TESTS = '--no-tests' in sys.argv

def modpath(rel):
    parts = rel[:-3].split('/')
    if parts[-1] in ('mod', 'lib'):
        parts = parts[:-1]
    return tuple(['crate'] + parts)

files = {}
for d, _, fs in os.walk(ROOT):
    for f in fs:
        if f.endswith('.rs'):
            rel = os.path.relpath(os.path.join(d, f), ROOT)
            if rel == 'main.rs':
                continue
            files[modpath(rel)] = os.path.join(d, f)
mods = set(files)

def strip_comments(s):
    s = re.sub(r'/\*.*?\*/', '', s, flags=re.S)
    return re.sub(r'//[^\n]*', '', s)

def strip_tests(s):
    # drop `#[cfg(test)] mod x { ... }` by brace matching
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub\s+)?mod\s+\w+\s*\{', s):
        if m.start() < i:
            continue
        out.append(s[i:m.start()])
        depth, j = 1, m.end()
        while depth and j < len(s):
            depth += {'{': 1, '}': -1}.get(s[j], 0)
            j += 1
        i = j
    out.append(s[i:])
    return ''.join(out)

def expand(tree):
    """'a::{b, c::{d, e}}' -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    m = re.match(r'^(.*?)\{(.*)\}$', tree, re.S)
    if not m:
        return [re.sub(r'\s+as\s+\w+$', '', tree)]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ''
    for ch in inner:
        if ch == ',' and depth == 0:
            items.append(cur); cur = ''
            continue
        depth += ch == '{'
        depth -= ch == '}'
        cur += ch
    items.append(cur)
    return [p for it in items if it.strip() for p in expand(prefix + it.strip())]

def resolve(segs):
    for n in range(len(segs), 0, -1):
        if tuple(segs[:n]) in mods:
            return tuple(segs[:n])
    return None

edges = {}
for mod, path in files.items():
    src = strip_comments(open(path).read())
    if NO_TESTS:
        src = strip_tests(src)
    children = {m[-1] for m in mods if m[:-1] == mod}
    paths = []
    for m in re.finditer(r'\buse\s+([^;]+);', src):
        paths += expand(m.group(1))
    paths += re.findall(r'\b((?:crate|super)(?:::\w+)+)', src)
    paths += [p for p in re.findall(r'(?<![:\w])(\w+(?:::\w+)+)', src) if p.split('::')[0] in children]
    for p in paths:
        segs = [x for x in re.split(r'\s*::\s*', p.strip()) if x]
        if not segs:
            continue
        if segs[0] == 'crate':
            full = segs
        elif segs[0] == 'super':
            base = list(mod)
            while segs and segs[0] == 'super':
                base = base[:-1]; segs = segs[1:]
            full = base + segs
        elif segs[0] == 'self':
            full = list(mod) + segs[1:]
        elif segs[0] in children:
            full = list(mod) + segs
        else:
            continue
        t = resolve(full)
        if t and t != mod:
            edges.setdefault(mod, set()).add(t)

def under(a, b):
    return a[:len(b)] == b

pairs, upward = set(), set()
for a, ts in edges.items():
    for b in ts:
        if under(a, b) or under(b, a):
            if under(a, b):
                upward.add((a, b))
            continue
        k = 0
        while a[k] == b[k]:
            k += 1
        sa, sb = a[:k + 1], b[:k + 1]
        pairs.add((sa, sb))

show = lambda m: '::'.join(m[1:]) or 'crate'
circles = sorted({tuple(sorted((a, b))) for a, b in pairs if (b, a) in pairs})
print(f'{len(files)} modules, {sum(map(len, edges.values()))} references')
print('sibling circles:', len(circles))
for a, b in circles:
    why = lambda x, y: sorted(show(s) + '->' + show(t) for s, ts in edges.items() for t in ts if under(s, x) and under(t, y))
    print(f'  {show(a)} <-> {show(b)}')
    print('     ', '; '.join(why(a, b)[:6]))
    print('     ', '; '.join(why(b, a)[:6]))
if '-v' in sys.argv:
    print('child -> ancestor references:')
    for a, b in sorted(upward):
        print(f'  {show(a)} -> {show(b)}')
sys.exit(1 if circles else 0)
