#!/usr/bin/env python3
"""Summarises `perf script` output of a call-graph profile (see profile_leader.sh).

Usage: perf script -i perf.data --no-inline -F comm,tid,time,period,ip,sym,dso > s.txt
       benches/perf_summary.py s.txt [TOP]

Prints, weighting samples by period:
  - samples by thread name (tokio workers, sled's io threads, ...);
  - self time by group: the group of the leaf frame; a kernel leaf is filed under the
    system call it is in (the outermost __x64_sys_* frame), interrupts or the scheduler;
  - inclusive time by group: the share of samples with a frame of that group anywhere
    in the stack (serde_json 20% = a fifth of the time is in or under serde_json);
  - the top symbols by self and by children (inclusive) time.
"""

import collections
import re
import sys

# Leaf groups of user-space symbols, first match wins (matched on the crate or name).
GROUPS = [
    ("allocator", re.compile(
        r"^(malloc|free|cfree|calloc|realloc|_int_(malloc|free|realloc)|malloc_consolidate|"
        r"unlink_chunk|sysmalloc|tcache_|__libc_(malloc|free|calloc|realloc)|"
        r"__rust_(alloc|dealloc|realloc)|__rdl_|alloc::alloc::|_mid_memalign|"
        r"__default_morecore|arena_|alloc_perturb|_?mi_\w+|mimalloc::)")),
    ("libc mem*/str* (copies)", re.compile(r"^__(mem|str)\w*")),
    ("serde/serde_json", re.compile(r"^(serde_json|serde|serde_core)::")),
    ("sled + crossbeam", re.compile(r"^(sled|crossbeam_\w+|crossbeam)::")),
    ("openraft", re.compile(r"^openraft::")),
    ("slct (own code)", re.compile(r"^slct::")),
    ("hyper/tokio/axum (runtime, HTTP)", re.compile(
        r"^(tokio|hyper|hyper_util|h2|mio|axum|axum_core|tower|tower_http|tower_layer|"
        r"tower_service|reqwest|http|http_body|http_body_util|httparse|want|futures_\w+|"
        r"futures|tracing|tracing_core|tracing_subscriber|matchit|parking_lot|"
        r"parking_lot_core|bytes|pin_project_lite)::")),
    ("Rust std/core", re.compile(r"^(core|alloc|std)::")),
    ("other crates", re.compile(r"^[a-z_][a-z0-9_]*::")),
    ("libc/vdso (other)", re.compile(r".")),
]
INCLUSIVE = [
    ("serde/serde_json", re.compile(r"^(serde_json|serde|serde_core)::")),
    ("sled + crossbeam", re.compile(r"^(sled|crossbeam_\w+|crossbeam)::")),
    ("openraft", re.compile(r"^openraft::")),
    ("slct (own code)", re.compile(r"^slct::")),
    ("  slct::engine", re.compile(r"^slct::engine::")),
    ("  slct::storage", re.compile(r"^slct::storage::")),
    ("  slct::raft", re.compile(r"^slct::raft::")),
    ("  slct::api", re.compile(r"^slct::api::")),
    ("  slct::node", re.compile(r"^slct::node::")),
    ("hyper", re.compile(r"^(hyper|hyper_util|h2)::")),
    ("reqwest (Raft RPC client)", re.compile(r"^reqwest::")),
    ("axum", re.compile(r"^(axum|axum_core|matchit)::")),
    ("tokio", re.compile(r"^tokio::")),
    ("allocator", GROUPS[0][1]),
    ("tracing", re.compile(r"^tracing(_core|_subscriber)?::")),
    ("uuid/rand", re.compile(r"^(uuid|rand|rand_core|rand_chacha)::")),
]


def crate_of(sym):
    """`sled::tree::Tree::get` -> `sled::tree::Tree::get`; `<sled::Arc<T> as Drop>::drop`
    -> `sled::Arc...`; `<T as serde::Serialize>` -> `serde::Serialize...`."""
    if sym.startswith("<"):
        inner = sym[1:]
        head = re.split(r"[<>, ]", inner, 1)[0]
        if "::" not in head and " as " in inner:
            return inner.split(" as ", 1)[1]
        return inner
    return sym


def kernel_group(stack):
    """A kernel leaf's group: its system call, else interrupts or the scheduler."""
    syscall = None
    for sym, dso in stack:
        if dso != "kernel":
            break
        m = re.match(r"^(__x64_sys_|__do_sys_|__se_sys_)(\w+)", sym)
        if m:
            syscall = m.group(2)
    if syscall:
        return f"kernel: syscall {syscall}"
    names = [s for s, d in stack if d == "kernel"]
    if any("irq" in s or "sysvec" in s or "softirq" in s for s in names):
        return "kernel: interrupts/softirq (no syscall)"
    if any("schedule" in s or "finish_task_switch" in s for s in names):
        return "kernel: scheduler (no syscall)"
    return "kernel: other"


def parse(path):
    samples = []
    comm, period, stack = None, 0, []
    header = re.compile(r"^(\S.*?)\s+(\d+)\s+[\d.]+:\s+(\d+)")
    frame = re.compile(r"^\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)$")
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                samples.append((comm, period, stack))
            comm, stack = None, []
            continue
        m = header.match(line)
        if m and not line[0].isspace():
            if comm is not None:
                samples.append((comm, period, stack))
            comm, period, stack = m.group(1), int(m.group(3)), []
            continue
        m = frame.match(line)
        if m and comm is not None:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(2))
            dso = m.group(3)
            dso = "kernel" if "kernel" in dso else dso.rsplit("/", 1)[-1]
            stack.append((sym, dso))
    if comm is not None:
        samples.append((comm, period, stack))
    return samples


def leaf_group(stack):
    if not stack:
        return "no stack"
    sym, dso = stack[0]
    if dso == "kernel":
        return kernel_group(stack)
    if sym == "[unknown]":
        return f"unknown ({dso})"
    name = crate_of(sym)
    for group, pattern in GROUPS:
        if pattern.search(name) or pattern.search(sym):
            return group
    return "other"


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    samples = parse(path)
    total = sum(p for _, p, _ in samples) or 1
    pct = lambda w: 100.0 * w / total
    print(f"{len(samples)} samples, {total / 1e9:.2f} s of CPU (cpu-clock)")

    by_thread = collections.Counter()
    for comm, p, _ in samples:
        by_thread[re.sub(r"\d+$", "N", comm)] += p
    print("\nby thread:")
    for name, w in by_thread.most_common():
        print(f"  {pct(w):5.1f}%  {name}")

    groups = collections.Counter()
    kernel = 0
    ctx = 0
    for _, p, stack in samples:
        g = leaf_group(stack)
        groups[g] += p
        if stack and stack[0][1] == "kernel":
            kernel += p
            if any(s == "finish_task_switch.isra.0" or s.startswith("finish_task_switch")
                   for s, _ in stack[:3]):
                ctx += p
    print(f"\nself time by group (leaf frame); kernel in all {pct(kernel):.1f}%, "
          f"of which context-switch return (finish_task_switch) {pct(ctx):.1f}%:")
    for g, w in groups.most_common():
        if pct(w) >= 0.3:
            print(f"  {pct(w):5.1f}%  {g}")

    incl = collections.Counter()
    for _, p, stack in samples:
        names = {crate_of(s) for s, d in stack if d != "kernel"}
        for g, pattern in INCLUSIVE:
            if any(pattern.search(n) for n in names):
                incl[g] += p
        if any(d == "kernel" for _, d in stack):
            incl["kernel (any frame)"] += p
    print("\ninclusive time by group (a frame of the group anywhere in the stack):")
    for g, _ in INCLUSIVE + [("kernel (any frame)", None)]:
        print(f"  {pct(incl[g]):5.1f}%  {g}")

    self_sym = collections.Counter()
    child_sym = collections.Counter()
    for _, p, stack in samples:
        if stack:
            self_sym[stack[0][0]] += p
        for s in {s for s, _ in stack}:
            child_sym[s] += p
    short = lambda s: s if len(s) <= 120 else s[:117] + "..."
    print(f"\ntop {top} symbols by self time:")
    for s, w in self_sym.most_common(top):
        print(f"  {pct(w):5.1f}%  {short(s)}")
    print(f"\ntop {top} symbols by children (inclusive) time, runtime roots left out:")
    roots = re.compile(r"^(_start|main|__libc_start|start_thread|clone3?|__clone|"
                       r"std::(rt|sys|thread)::|core::ops::function::|"
                       r"std::panic|std::panicking|__rust_begin_short_backtrace|"
                       r"tokio::runtime::(scheduler|task|context|blocking|park|runtime)|"
                       r"\[unknown\]|slct::main|entry_SYSCALL|do_syscall_64)")
    shown = 0
    for s, w in child_sym.most_common():
        if roots.search(crate_of(s)) or roots.search(s):
            continue
        print(f"  {pct(w):5.1f}%  {short(s)}")
        shown += 1
        if shown >= top:
            break


if __name__ == "__main__":
    main()
