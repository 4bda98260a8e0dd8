"""Detection quality end to end, per class, with the guard, side by side with deface.

For each annotated set given (faces and/or plates; the format of ``coverage.py``), Veil redacts
every image in-process with a policy from the policies file (default: ``street``, faces and
plates) and the detectors the settings enable, exactly as a worker does (decode, detect, redact,
guard, encode). Reported per set:

* coverage (all boxes, boxes >= 20 px, < 20 px) and over-redaction, scored by ``coverage.py``;
  for plates only one plate per image is annotated, so coverage and over-redaction are reported
  and precision is not;
* the guard: the share of outputs in which its first check re-found a face at the policy's
  threshold (``guard_found_rate``, split into weak and miss), what it did, and the re-detection
  rate on the *published* outputs (decoded from the encoded bytes and checked again by the face
  detector: ``published_redetection_rate``, which must be 0);
* time per image for each stage and detector (ms, mean), so each class's cost shows;
* deface 1.5.0 on the same images (its CLI from its own venv, ``--deface PATH``), scored the same
  way, with its wall time.

    python -m bench.quality --faces DATA/faces-dev/ground_truth.json \\
        --plates DATA/plates-dev/ground_truth.json --deface PATH/TO/deface [--policy default]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bench.coverage import ImageScore, evaluate_folder, score_image, summarise

_worker: dict[str, Any] = {}


def _init(policy_name: str) -> None:
    from infra.policies import get_policy
    from infra.settings import get_settings
    from workers.detectors.registry import build_configured_detector

    settings = get_settings()
    _worker["detector"] = build_configured_detector(
        settings.models.model_copy(update={"intra_op_threads": 1}))
    _worker["policy"] = get_policy(policy_name, settings)


def _one(job: tuple[Path, list[list[Any]]]) -> dict[str, Any]:
    from workers.guard import check
    from workers.image_pipeline import redact_image_bytes

    path, boxes = job
    data = path.read_bytes()
    policy, detector = _worker["policy"], _worker["detector"]
    result = redact_image_bytes(data, policy, detector, 80_000_000)
    output = np.asarray(cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR))
    original = np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    published = check(output, result.detections, detector, policy.guard.threshold,
                      policy.redaction) if "face" in policy.classes else []
    guard = result.params.get("guard", {})
    return {"score": score_image(original, output, boxes), "timings": result.timings,
            "guard": guard, "published": len(published),
            "classes": [d.cls for d in result.detections],
            "uncertain": sum(d.uncertain for d in result.detections)}


def evaluate_veil(gt_path: Path, policy: str, processes: int) -> dict[str, Any]:
    gt = json.loads(gt_path.read_text())
    jobs = [(gt_path.parent / e["file"], e["boxes"]) for e in gt["images"]]
    started = time.perf_counter()
    with ProcessPoolExecutor(processes, initializer=_init, initargs=(policy,)) as pool:
        rows = list(pool.map(_one, jobs, chunksize=4))
    wall = time.perf_counter() - started
    scores: list[ImageScore] = [r["score"] for r in rows]
    report: dict[str, Any] = {k: round(v, 4) if isinstance(v, float) else v
                              for k, v in summarise(scores).items()}
    n = len(rows)
    guards = [r["guard"] for r in rows]
    report["guard"] = {
        "found_rate": round(sum(bool(g.get("found")) for g in guards) / n, 4),
        "weak_rate": round(sum(g.get("weak", 0) > 0 for g in guards) / n, 4),
        "miss_rate": round(sum(g.get("miss", 0) > 0 for g in guards) / n, 4),
        "actions": {a: sum(g.get("action") == a for g in guards)
                    for a in ("passed", "reredacted", "failed", "skipped")},
        "published_redetection_rate": round(sum(r["published"] > 0 for r in rows) / n, 4),
    }
    stages = sorted({k for r in rows for k in r["timings"]})
    report["ms_per_image"] = {k.removesuffix("_s"): round(
        1000 * sum(r["timings"].get(k, 0.0) for r in rows) / n, 1) for k in stages}
    classes = [c for r in rows for c in r["classes"]]
    report["detections_per_image"] = {c: round(classes.count(c) / n, 2)
                                      for c in sorted(set(classes))}
    report["images_with_uncertain"] = round(sum(r["uncertain"] > 0 for r in rows) / n, 4)
    report["wall_s"] = round(wall, 1)
    report["images_per_s"] = round(n / wall, 2)
    return report


def evaluate_deface(deface: str, gt_path: Path) -> dict[str, Any]:
    gt = json.loads(gt_path.read_text())
    with tempfile.TemporaryDirectory(prefix="veil-bench-deface-") as tmp:
        work = Path(tmp)
        for entry in gt["images"]:
            shutil.copy(gt_path.parent / entry["file"], work / Path(entry["file"]).name)
        started = time.perf_counter()
        subprocess.run([deface, str(work)], check=True, capture_output=True)
        wall = time.perf_counter() - started
        report: dict[str, Any] = {k: round(v, 4) if isinstance(v, float) else v for k, v in
                                  evaluate_folder(gt_path, work, "_anonymized").items()}
    report["wall_s"] = round(wall, 1)
    report["images_per_s"] = round(len(gt["images"]) / wall, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, help="ground_truth.json of the faces set")
    parser.add_argument("--plates", type=Path, help="ground_truth.json of the plates set")
    parser.add_argument("--policy", default="street", help="policy name (policies file)")
    parser.add_argument("--deface", default="", help="deface CLI from its own venv (optional)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--record", action="store_true", help="write the figures to "
                        "producer/assets/quality.json, the latest measurement `veil report` shows")
    args = parser.parse_args()
    sets = {name: path for name, path in (("faces", args.faces), ("plates", args.plates))
            if path is not None}
    if not sets:
        parser.error("give --faces and/or --plates")
    report: dict[str, Any] = {"policy": args.policy}
    for name, path in sets.items():
        report[name] = {"veil": evaluate_veil(path, args.policy, args.processes)}
        if args.deface:
            report[name]["deface"] = evaluate_deface(args.deface, path)
        print(json.dumps({name: report[name]}, indent=1), flush=True)
    if args.record:
        record_latest(report, sets)


RECORD = Path(__file__).resolve().parent.parent / "producer" / "assets" / "quality.json"


def record_latest(report: dict[str, Any], sets: dict[str, Path]) -> None:
    """Keep the latest figures (Veil's only) in ``producer/assets/quality.json``: shipped with the
    package, read by `veil report` for the DPIA annex. The data set is named by its folder."""
    classes = {"faces": "face", "plates": "plate"}
    figures = []
    for name, path in sets.items():
        veil = report[name]["veil"]
        figures.append({
            "class": classes[name], "data_set": path.parent.name, "boxes": veil.get("boxes"),
            "coverage": veil.get("coverage"), "coverage_ge20": veil.get("coverage_ge20"),
            "coverage_lt20": veil.get("coverage_lt20"),
            "over_redaction": veil.get("over_redaction"),
            "published_redetection_rate": veil["guard"]["published_redetection_rate"],
            "guard_found_rate": veil["guard"]["found_rate"]})
    RECORD.write_text(json.dumps({
        "measured_at": time.strftime("%Y-%m-%d", time.gmtime()), "tool": "bench/quality.py",
        "policy": report["policy"], "figures": figures}, indent=1) + "\n")


if __name__ == "__main__":
    main()
