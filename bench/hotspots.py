"""Where the operator's CPU goes: a summary of py-spy's raw (collapsed) stacks.

    .venv/bin/python bench/hotspots.py profile.raw

bench/peers.py --profile writes such a file (py-spy on the operator during the 16-in-flight
round). Prints the share of on-CPU samples of each suspect (inclusive: a sample counts
for every suspect on its stack, so shares overlap) and of each library at the leaf
(self time, adds up to 100 %).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# (label, substrings of a frame; a sample counts once if any frame on its stack matches)
SUSPECTS: list[tuple[str, tuple[str, ...]]] = [
    ("kopf event pipeline (watch event -> causes)", ("process_resource_event (kopf/",)),
    ("  kopf handler execution", ("execute_handlers_once (kopf/",)),
    ("  kopf's own patches (progress, finalizers)", ("patch_and_check (kopf/",)),
    ("  kopf daemon start-up and runner", ("kopf/_core/engines/daemons.py",)),
    ("  kopf Events posted", ("_poster_worker (kopf/", "post_event (kopf/")),
    ("kopf watch stream (reading, parsing)", ("kopf/_cogs/clients/watching.py",)),
    ("Kurable run driver (all)", ("Drivers._drive (kurable/",)),
    ("  status patches (Runtime.patch_status)", ("Runtime.patch_status (kurable/",)),
    ("  journal commits (Run._commit)", ("Run._commit (kurable/",)),
    ("  fence claims (Fence.claim)", ("Fence.claim (kurable/",)),
    ("  engine decisions (kurable/engine)", ("(kurable/engine/",)),
    ("CEL evaluation", ("cel_expr_python", "(kurable/engine/expressions.py")),
    ("TLS (asyncio sslproto, ssl)", ("asyncio/sslproto.py", "(ssl.py")),
    ("  TLS handshakes (new connections)", ("do_handshake",)),
    ("JSON encode/decode", ("(json/",)),
    ("gRPC (etcd client)", ("(grpc/", "grpc/_cython")),
    ("aiohttp client", ("(aiohttp/",)),
    ("kubernetes_asyncio client", ("(kubernetes_asyncio/",)),
    ("netrc read per request (aiohttp trust_env)", ("(netrc.py",)),
    ("thread pool (run_in_executor)", ("(concurrent/futures/",)),
    ("logging", ("(logging/",)),
    ("deepcopy", ("(copy.py",)),
    ("pydantic", ("(pydantic",)),
    ("waiting in epoll (select)", ("EpollSelector.select",)),
]


def library(frame: str) -> str:
    """The library (first path parts) of a frame `func (path:line)`."""
    if "(" not in frame:
        return frame
    path = frame.rsplit("(", 1)[1].split(":")[0]
    parts = path.split("/")
    if parts[0] in ("kopf", "kurable") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]


def summarise(raw: Path) -> str:
    samples: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples.append((stack.split(";"), int(count)))
    total = sum(n for _, n in samples) or 1
    lines = [f"{total} on-CPU samples of the operator (py-spy, idle excluded)", ""]
    lines.append("suspects (inclusive; overlapping):")
    for label, needles in SUSPECTS:
        hit = sum(n for frames, n in samples if any(x in f for f in frames for x in needles))
        lines.append(f"  {hit / total:6.1%}  {label}")
    leaves: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for frames, n in samples:
        leaves[library(frames[-1])] += n
        functions[frames[-1]] += n
    lines += ["", "self time by library (leaf frame):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in leaves.most_common(20)]
    lines += ["", "top leaf functions:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in functions.most_common(20)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    print(summarise(parser.parse_args().raw))


if __name__ == "__main__":
    main()
