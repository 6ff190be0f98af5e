"""A ~20-minute transformer-student search against MiniLM: the front, next to the teacher itself, and the student
worth deploying (the best within a quarter of the teacher's latency) exported as ``nas export`` does.

Run from the repository root (needs the ``text`` extra)::

    python bench/transformer_front.py                 # 1200 s of search on the built-in python-docs corpus
    python bench/transformer_front.py --data text:FILE  # on a corpus of your own (held out from development)
    python bench/transformer_front.py --data text:FILE --extra-text python-docs   # with unlabelled texts added
    python bench/transformer_front.py --data text:FILE --test-data text:TEST      # a test corpus of its own
    python bench/transformer_front.py --timeout 120   # a short look
    python bench/transformer_front.py --data text:FILE --arch '{"layers": 1, ...}' --export-epochs 240
                                                      # no search: that architecture exported, for a budget study
                                                      # (--export-max-steps 0 lifts the export's step cap)
    python bench/transformer_front.py --quick         # smoke run: 20 s of search, 1 epoch per trial, 1 export
                                                      # epoch, written to transformer_front-quick.json

It runs ``nas search --data D --teacher hf:minilm --timeout T`` (defaults otherwise: the cosine loss, 3 epochs
per trial, rungs, latency at 128 tokens with ONNX Runtime on this CPU, 1 thread), then exports the teacher itself
(mean-pooled MiniLM) to ONNX and measures it the same way. For the teacher and every front student it prints
parameters, latency at 128 tokens, cosine fidelity and top-10 neighbour agreement on the validation texts. The
front's most faithful student within ``--latency-share`` (1/4) of the teacher's latency is then exported with
``nas export``'s default budget (``--export-epochs``) and its exported cosine and neighbour agreement are checked
against the targets (cosine >= 0.80, top-10 agreement >= 0.6). Results go to ``bench/results/transformer_front.json``
(``--output`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

import distill
import hwprofile
import nas
from nas.tasks import TextTask
from search_spaces import example_inputs
from _results import RESULTS, ROOT, header, load_before, write_json  # bench/ is on sys.path when a script runs

SEQ_LEN = 128
TARGETS = {"cosine": 0.80, "neighbour_agreement": 0.6}  # issue 12: on a held-out corpus, at <= 1/4 of the latency
# The held-out corpus's validation and test splits hold 135 texts: top-10 agreement among as many random texts of a
# larger test set is the figure comparable with theirs (among more texts, a text's ten neighbours are picked from more
# candidates).
SUBSET_TEXTS = 135


class PooledTeacher(nn.Module):
    """The teacher as a deployment runs it: token ids and mask in, the mean-pooled sentence embedding out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return distill.masked_mean(hidden, attention_mask[:, :, None], dim=1)


def teacher_row(workdir: Path) -> dict[str, object]:
    teacher = distill.load_hf_teacher(f"hf:{distill.MINILM}")
    path = hwprofile.export_onnx_inputs(PooledTeacher(teacher.model), example_inputs(SEQ_LEN), workdir / "teacher.onnx")
    measurement = hwprofile.profile(path)
    return {"model": "teacher (all-MiniLM-L6-v2)", "params": int(teacher.model.num_parameters()),
            # hwprofile's shape inference does not get through the exported HF graph's mask arithmetic: no MACs.
            "onnx_macs": measurement.model.macs or None, "latency_ms": measurement.latency.median_ms,
            "latency_p90_ms": measurement.latency.p90_ms, "cosine": 1.0, "neighbour_agreement": 1.0}


def deployable_row(report: dict[str, Any], budget_ms: float, seconds: float, **known: Any) -> dict[str, Any]:
    """The exported student's row (``report``: an export's JSON report): its budget, cost, latency, fidelity on the
    validation texts and on the test texts, and whether it meets the targets: on the test texts, where there are."""
    metrics = report["metrics"]
    test = None if report["test_score"] is None else {
        "cosine": report["test_score"], "cosine_ci95": report["test_score_ci95"], "texts": report["test_samples"],
        "neighbour_agreement": report["test_metrics"]["neighbour_agreement"]}
    judged = metrics if test is None else test
    return {**known, "budget_ms": budget_ms, "epochs": report["epochs"], "steps": report["steps"],
            "export_seconds": seconds, "latency_ms": report["latency_ms"], "cosine": metrics["cosine"],
            "neighbour_agreement": metrics["neighbour_agreement"], "test": test, "test_note": report["test_note"],
            "targets_on": "validation" if test is None else "test",
            "targets_met": report["latency_ms"] <= budget_ms and all(judged[name] >= value
                                                                     for name, value in TARGETS.items())}


def export_given(arch: dict[str, Any], budget_ms: float, args: argparse.Namespace, workdir: Path,
                 epochs: float | None) -> dict[str, Any]:
    """``arch`` exported as ``nas export`` would a trial of it (no search): for a study of the export's budget."""
    config = nas.SearchConfig(data=args.data, teacher=f"hf:{distill.MINILM}", extra_text=args.extra_text,
                              test_data=args.test_data,
                              kd=args.kd, out=str(workdir / "arch"), cache_dir=args.cache_dir or str(workdir / "cache"))
    start = time.perf_counter()
    model = workdir / "deployable" / "student.onnx"
    report = nas.export_arch(config, arch, {"kd": config.kd}, epochs, model, max_steps=args.export_max_steps or None)
    row = deployable_row(asdict(report), budget_ms, time.perf_counter() - start, trial=None, arch=arch)
    if report.test_samples > SUBSET_TEXTS:
        task = nas.load_context(config, workdir / "subsets").task
        assert isinstance(task, TextTask)
        row["test"]["neighbour_agreement_subsets"] = subset_agreement(task, model, SUBSET_TEXTS)
    return row


def subset_agreement(task: TextTask, model: Path, size: int, draws: int = 50) -> dict[str, float]:
    """Top-10 neighbour agreement of the ONNX ``model`` among ``size`` of the test texts, over ``draws`` seeded random
    draws of them."""
    data = task.data
    student = task.onnx_embeddings(model, data.ids_test, data.mask_test)
    teacher = task.teacher.encode(data.ids_test, data.mask_test).embedding
    rng = np.random.default_rng(0)
    values = [distill.text_fidelity(student[rows], teacher[rows]).neighbour_agreement
              for rows in (rng.choice(len(student), size, replace=False) for _ in range(draws))]
    return {"texts": size, "draws": draws, "mean": float(np.mean(values)), "min": min(values), "max": max(values)}


def export_deployable(front: list[dict[str, Any]], budget_ms: float, run: Path, workdir: Path,
                      epochs: float | None, max_steps: int) -> dict[str, Any] | None:
    """``nas export`` of the front's most faithful student within ``budget_ms`` (None: none is that fast)."""
    fast = [entry for entry in front if entry["latency_ms"] <= budget_ms]
    if not fast:
        return None
    chosen = max(fast, key=lambda entry: entry["cosine"])
    model = workdir / "deployable" / "student.onnx"
    command = [sys.executable, "-m", "nas", "export", str(run), "--trial", str(chosen["trial"]), "--output",
               str(model), "--max-steps", str(max_steps), *(("--epochs", str(epochs)) if epochs else ())]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return deployable_row(json.loads(model.with_suffix(".json").read_text()), budget_ms, time.perf_counter() - start,
                          trial=chosen["trial"], arch=chosen["arch"], search_cosine=chosen["cosine"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 s of search, 1 epoch per trial")
    parser.add_argument("--timeout", type=float, help="seconds of search (default 1200; quick: 20)")
    parser.add_argument("--data", default=distill.BUILTIN_TEXT, help="text data: python-docs or text:FILE")
    parser.add_argument("--extra-text", help="unlabelled training texts for the search and the export (nas search "
                                             "--extra-text): python-docs or text:FILE")
    parser.add_argument("--test-data", help="the test texts (nas search --test-data text:FILE; default: 20%% of "
                                            "--data, carved after validation)")
    parser.add_argument("--kd", default="cosine", help="the text distillation terms (nas search --kd; default cosine)")
    parser.add_argument("--latency-share", type=float, default=0.25,
                        help="the deployable student's latency budget, as a share of the teacher's (default 0.25)")
    parser.add_argument("--export-epochs", type=float, help="the export's epochs (default: nas export's; quick: 1)")
    parser.add_argument("--export-max-steps", type=int, default=nas.EXPORT_MAX_STEPS,
                        help=f"the export's step cap (default: nas export's, {nas.EXPORT_MAX_STEPS}; 0: none)")
    parser.add_argument("--cache-dir", help="reuse a teacher-output cache (default: a fresh one)")
    parser.add_argument("--arch", type=json.loads, help="no search: export this architecture (JSON, as in "
                                                        "pareto.json) with --export-epochs and check it")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/transformer_front[-quick].json)")
    args = parser.parse_args(argv)
    timeout = args.timeout or (20.0 if args.quick else 1200.0)
    output = args.output or RESULTS / ("transformer_front-quick.json" if args.quick else "transformer_front.json")
    load_at_start = load_before()
    if args.arch is not None:
        return export_only(args, output, load_at_start)
    with tempfile.TemporaryDirectory(prefix="nas-text-") as tmp:
        workdir = Path(tmp)
        out = workdir / "search"
        command = [sys.executable, "-m", "nas", "search", "--data", args.data, "--teacher",
                   f"hf:{distill.MINILM}", "--kd", args.kd, "--trials", "1000", "--timeout", str(timeout),
                   "--out", str(out), "--cache-dir", args.cache_dir or str(workdir / "cache"),
                   *(("--epochs", "1") if args.quick else ()),
                   *(("--extra-text", args.extra_text) if args.extra_text else ()),
                   *(("--test-data", args.test_data) if args.test_data else ())]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wall_s = time.perf_counter() - start
        front = json.loads((out / "pareto.json").read_text())
        trials = (out / "trials.csv").read_text().count("\n") - 1
        rows = [teacher_row(workdir)] + [
            {"model": f"student (trial {e['trial']})", "params": e["params"], "onnx_macs": e["macs"],
             "latency_ms": e["latency_ms"], "latency_p90_ms": e["latency_p90_ms"], "cosine": e["cosine"],
             "neighbour_agreement": e["neighbour_agreement"], "arch": e["arch"]} for e in front]
        deployable = export_deployable(front, rows[0]["latency_ms"] * args.latency_share, out, workdir,
                                       args.export_epochs or (1.0 if args.quick else None), args.export_max_steps)
    print(f"search: {trials} trials in {wall_s:.0f} s (`{' '.join(command[2:])}`)")
    print(f"{'model':<28} {'params':>11} {'MACs':>13} {'ms @128':>9} {'cosine':>7} {'top-10':>7}")
    for row in rows:
        macs = f"{row['onnx_macs']:,}" if row["onnx_macs"] else "-"
        print(f"{row['model']:<28} {row['params']:>11,} {macs:>13} {row['latency_ms']:>9.3f} "
              f"{row['cosine']:>7.3f} {row['neighbour_agreement']:>7.3f}")
    if deployable is None:
        print(f"no front student within {args.latency_share:g} of the teacher's latency")
    else:
        print_deployable(deployable)
    write_json({**header(load_at_start),
                "search": {"data": args.data, "extra_text": args.extra_text, "test_data": args.test_data,
                           "kd": args.kd, "seconds": wall_s,
                           "trials": trials, "timeout_s": timeout, "seq_len": SEQ_LEN, "quick": args.quick},
                "rows": rows, "deployable": deployable}, output)
    return 0


def print_deployable(deployable: dict[str, Any]) -> None:
    which = "the given architecture" if deployable["trial"] is None else f"trial {deployable['trial']}"
    print(f"exported {which} ({deployable['epochs']:g} epochs, {deployable['steps']} steps, "
          f"{deployable['export_seconds']:.0f} s): {deployable['latency_ms']:.3f} ms (budget "
          f"{deployable['budget_ms']:.3f}), validation cosine {deployable['cosine']:.3f}, top-10 "
          f"{deployable['neighbour_agreement']:.3f}")
    test = deployable["test"]
    if test is None:
        print(f"  {deployable['test_note']}")
    else:
        low, high = test["cosine_ci95"]
        print(f"  test ({test['texts']} texts): cosine {test['cosine']:.3f} (95% CI {low:.3f}-{high:.3f}), top-10 "
              f"{test['neighbour_agreement']:.3f}; {deployable['test_note']}")
        subsets = test.get("neighbour_agreement_subsets")
        if subsets:
            print(f"  top-10 among {subsets['texts']} of the test texts ({subsets['draws']} random draws): mean "
                  f"{subsets['mean']:.3f}, {subsets['min']:.3f}-{subsets['max']:.3f}")
    print(f"  targets on {deployable['targets_on']} (cosine >= {TARGETS['cosine']}, top-10 >= "
          f"{TARGETS['neighbour_agreement']}, within the budget): {'met' if deployable['targets_met'] else 'not met'}")


def export_only(args: argparse.Namespace, output: Path, load_at_start: list[float]) -> int:
    """``--arch``: the teacher measured, then that architecture exported and checked; no search."""
    with tempfile.TemporaryDirectory(prefix="nas-text-") as tmp:
        workdir = Path(tmp)
        teacher = teacher_row(workdir)
        deployable = export_given(args.arch, teacher["latency_ms"] * args.latency_share, args, workdir,
                                  args.export_epochs or (1.0 if args.quick else None))
    print(f"teacher: {teacher['latency_ms']:.3f} ms at {SEQ_LEN} tokens")
    print_deployable(deployable)
    write_json({**header(load_at_start), "search": None, "data": args.data, "extra_text": args.extra_text,
                "test_data": args.test_data, "kd": args.kd, "rows": [teacher], "deployable": deployable}, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
