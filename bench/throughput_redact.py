"""Throughput of ``veil redact`` (redact_files) against the deface CLI on the same images.

Each tool runs as a child process on its own fresh copy of the folder; wall time covers the
whole process (start-up and model load included, as a user waits for both). Peak RSS is sampled
every 20 ms as the sum over the process tree, so worker pools count in full.

    python -m bench.throughput_redact /work/shared/data/faces-dev/images \
        --deface /tmp/deface-venv/bin/deface
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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


def _tree_rss_kib(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(command: list[str]) -> dict[str, float | str]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kib(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{command[0]} exited {process.returncode}:\n{output[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(peak / 1024, 1),
            "last_line": output.strip().splitlines()[-1] if output.strip() else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--deface", default="/tmp/deface-venv/bin/deface",
                        help="deface CLI from a separate venv (skip with --deface '')")
    parser.add_argument("--processes", type=int, default=None,
                        help="veil worker processes (default: CPU count)")
    parser.add_argument("--keep", type=Path, default=None, help="keep outputs under this folder")
    args = parser.parse_args()
    images = sorted(p for p in args.images.iterdir() if p.is_file())
    work = Path(tempfile.mkdtemp(prefix="veil-throughput-"))
    report: dict[str, object] = {"images": len(images), "cpus": os.cpu_count()}
    try:
        veil_out = work / "veil-out"
        command = [sys.executable, "-c", _VEIL_CHILD, str(args.images), str(veil_out)]
        if args.processes:
            command.append(str(args.processes))
        report["veil"] = run_measured(command)
        if args.deface:
            deface_in = work / "deface"
            deface_in.mkdir()
            for image in images:
                shutil.copy(image, deface_in / image.name)
            report["deface"] = run_measured([args.deface, str(deface_in)])
        for tool in ("veil", "deface"):
            if tool in report:
                entry = report[tool]
                assert isinstance(entry, dict)
                entry["images_per_s"] = round(len(images) / float(entry["seconds"]), 1)
        if "deface" in report:
            veil, deface = report["veil"], report["deface"]
            assert isinstance(veil, dict) and isinstance(deface, dict)
            report["speedup"] = round(veil["images_per_s"] / deface["images_per_s"], 2)
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
