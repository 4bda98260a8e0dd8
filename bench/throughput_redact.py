"""Throughput of ``veil redact`` (redact_files) against the deface CLI on the same images.

Each tool runs as a child process on its own fresh copy of the folder; wall time covers the
whole process (start-up and model load included, as a user waits for both). Peak RSS is sampled
every 20 ms as the sum over the process tree, so worker pools count in full. CPU time is the
user + system time of the whole tree (getrusage of reaped children).

With ``--repeat N`` the tools alternate (veil, deface, veil, deface, ...) so that a burst of load
on a shared machine hits both alike; the report gives every run and the medians, and the
speed-up is the ratio of the median images/s.

    python -m bench.throughput_redact DATA/faces-dev/images --deface bench/.deface-venv/bin/deface
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_VEIL_CHILD = """
import sys
from pathlib import Path
from producer.redact_local import redact_files
from schemas.policy import Policy
processes = int(sys.argv[3]) if len(sys.argv) > 3 else None
results = redact_files([Path(sys.argv[1])], Path(sys.argv[2]),
                       Policy(name="bench", raw_retention_s=60), processes=processes)
failed = [r for r in results if r.error]
print(f"{len(results)} files, {sum(r.faces for r in results)} faces, {len(failed)} failed")
"""


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    name: str
    rss_kib: int
    cpu_s: float  # user + system so far


def proc_stats() -> dict[int, ProcStat]:
    """Every process on the machine, from ``/proc/PID/stat``."""
    ticks, page_kib = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE") // 1024
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                head, tail = handle.read().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        out[int(entry)] = ProcStat(int(fields[1]), head.split("(", 1)[1],
                                   int(fields[21]) * page_kib,
                                   (int(fields[11]) + int(fields[12])) / ticks)
    return out


def _tree_rss_kib(root: int) -> int:
    return _tree_stats(root)[0]


def _tree_stats(root: int) -> tuple[int, dict[int, float]]:
    """Resident memory (KiB) of ``root`` and its descendants, and each one's CPU seconds so far
    (user + system). Sampled, because pool children under a forkserver are never reaped by
    the measured command, so ``RUSAGE_CHILDREN`` misses their CPU."""
    stats = proc_stats()
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    total, stack, seen = 0, [root], {}
    while stack:
        pid = stack.pop()
        if pid in stats:
            total += stats[pid].rss_kib
            seen[pid] = stats[pid].cpu_s
        stack.extend(children.get(pid, []))
    return total, seen


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_measured(command: list[str]) -> dict[str, float | str]:
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    peak = 0
    done = threading.Event()
    cpu_seen: dict[int, float] = {}

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            rss, cpu = _tree_stats(process.pid)
            peak = max(peak, rss)
            cpu_seen.update(cpu)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{command[0]} exited {process.returncode}:\n{output[-2000:]}")
    cpu_s = max(_children_cpu_s() - cpu_before, sum(cpu_seen.values()))
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu_s, 2),
            "peak_rss_mib": round(peak / 1024, 1),
            "last_line": output.strip().splitlines()[-1] if output.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--deface", default="",
                        help="deface CLI from a separate venv, e.g. bench/.deface-venv/bin/deface "
                             "(default: skip deface)")
    parser.add_argument("--processes", type=int, default=None,
                        help="veil worker processes (default: CPU count)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate the tools this many times; report medians")
    parser.add_argument("--keep", type=Path, default=None, help="keep outputs under this folder")
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.is_file())
    work = Path(tempfile.mkdtemp(prefix="veil-throughput-"))
    runs: dict[str, list[dict[str, float | str]]] = {"veil": []}
    if args.deface:
        runs["deface"] = []
    try:
        for attempt in range(args.repeat):
            veil_out = work / f"veil-out-{attempt}"
            command = [sys.executable, "-c", _VEIL_CHILD, str(args.images), str(veil_out)]
            if args.processes:
                command.append(str(args.processes))
            runs["veil"].append(run_measured(command))
            if args.deface:
                deface_in = work / f"deface-{attempt}"
                deface_in.mkdir()
                for image in images:
                    shutil.copy(image, deface_in / image.name)
                runs["deface"].append(run_measured([args.deface, str(deface_in)]))
            if args.keep and attempt == 0:
                shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, object] = {"images": len(images), "cpus": os.cpu_count(),
                                 "repeat": args.repeat}
    for tool, entries in runs.items():
        for entry in entries:
            entry["images_per_s"] = round(len(images) / float(entry["seconds"]), 1)
        report[tool] = {
            "images_per_s": round(statistics.median(float(e["images_per_s"]) for e in entries), 1),
            "cpu_ms_per_image": round(1000 * statistics.median(
                float(e["cpu_s"]) for e in entries) / len(images), 1),
            "peak_rss_mib": max(float(e["peak_rss_mib"]) for e in entries),
            "runs": entries,
        }
    if "deface" in runs:
        veil, deface = report["veil"], report["deface"]
        assert isinstance(veil, dict) and isinstance(deface, dict)
        report["speedup"] = round(veil["images_per_s"] / deface["images_per_s"], 2)
        report["speedup_per_pair"] = [
            round(float(v["images_per_s"]) / float(d["images_per_s"]), 2)
            for v, d in zip(runs["veil"], runs["deface"], strict=True)]
        report["cpu_ratio"] = round(deface["cpu_ms_per_image"] / veil["cpu_ms_per_image"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
