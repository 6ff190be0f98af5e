"""The `nas` command: search, pareto, export, profile."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import optuna
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import distill
import hwprofile
from nas.budgets import SIZE_UNITS, parse_size
from nas.config import PRECISIONS, REFINE_DEFAULT, SAMPLERS, ConfigError, SearchConfig, default_cache_dir, load_saved_config
from nas.drift import drift_summary
from nas.export import EXPORT_EPOCHS, EXPORT_MAX_STEPS, EXPORT_PASSES, ExportError, export_trial
from nas.precision import QAT_EPOCHS, QAT_LR_SCALE, QAT_MAX_STEPS
from nas.pareto import best_trial, format_table, front_records, metric_of, noise_note, pareto_front, write_outputs
from nas.early_stop import DEFAULT_RUNGS
from nas.refine import REFINE_FACTOR
from nas.search import KD_CHOICES, BudgetError, finished_count, load_study, open_study, search, validate
from nas.storage import shown_url
from nas.tasks import kd_choices
from search_spaces import UnknownSpaceError

log = logging.getLogger("nas")
DEADLINE_EXIT = 3  # `nas search --timeout` ended before the built-in teacher was trained (resumable)
USER_ERRORS = (ConfigError, BudgetError, ExportError, distill.DataError, distill.TeacherError,
               distill.DistillError, hwprofile.ProfileError, UnknownSpaceError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)
    if not args.verbose:
        logging.getLogger("nas").setLevel(logging.INFO)  # one-line progress notes
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, as every other input error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(ms|us|µs|s)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a latency like 2ms, 0.5ms or 300us, but got {text!r}")
    value, unit = float(match[1]), match[2] or "ms"
    milliseconds = value * {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}[unit]
    if not math.isfinite(milliseconds):
        raise argparse.ArgumentTypeError(f"expected a finite latency, but {text!r} is {milliseconds} ms")
    return milliseconds


def _size_bytes(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, but got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()):
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, but got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step (and Optuna's messages)")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    s = commands.add_parser("search", help="search distilled students under a latency budget",
                            description="Search student architectures: every trial is measured with ONNX Runtime "
                                        "and, if within the budget, distilled from the teacher's cached outputs.")
    s.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS)
    s.add_argument("--config", metavar="FILE.toml", help="settings file (keys as below, with underscores)")
    s.add_argument("--data", help=f"images: {' | '.join(distill.SOURCES)}; text: {' | '.join(distill.TEXT_SOURCES)} "
                                  "(default: digits)")
    s.add_argument("--teacher", help="images: 'builtin' (a CNN trained once on the data, cached) or a .onnx / "
                                     "TorchScript / torch.save'd model file; text: hf:PATH (a local Hugging Face "
                                     f"encoder) or hf:{distill.MINILM} (default: builtin, hf:{distill.MINILM} for text)")
    s.add_argument("--space", help="search space: mbconv | resnet (images), transformer (text), or FILE.py:NAME / "
                                   "module:NAME (your own; see README) (default: by the data)")
    s.add_argument("--seq-len", type=int, help="text: the token length students are built and measured at "
                                               "(default: 128)")
    s.add_argument("--extra-text", metavar="SRC", help=f"text: more texts ({' | '.join(distill.TEXT_SOURCES)}) "
                                                       "that join the training split only, labelled by the teacher "
                                                       "once; the validation texts stay --data's (default: none)")
    s.add_argument("--trials", type=int, help="total finished trials of the study; re-running resumes (default: 30)")
    s.add_argument("--timeout", type=float, metavar="SEC",
                   help="bounds the whole run, from the command's start: the built-in teacher's training stops at "
                        "the deadline with its checkpoint saved (exit code 3; run again to resume), and no trial "
                        "starts after it")
    s.add_argument("--latency-budget", dest="latency_budget_ms", type=_duration_ms, metavar="LATENCY",
                   help="e.g. 2ms or 300us: students slower than this are infeasible and never trained")
    s.add_argument("--size-budget", dest="size_budget_bytes", type=_size_bytes, metavar="SIZE",
                   help=f"e.g. 200KB or 1.5MiB ({', '.join(SIZE_UNITS)}): students whose ONNX file, at the trial's "
                        f"precision, is larger are infeasible and never trained")
    s.add_argument("--memory-budget", dest="memory_budget_bytes", type=_size_bytes, metavar="SIZE",
                   help="e.g. 2MB: students whose peak memory (as `nas profile` measures it) is higher are "
                        "infeasible and never trained")
    s.add_argument("--precision", choices=PRECISIONS,
                   help="fp32, int8 (after its distillation each student is quantized by ONNX Runtime, static QDQ, "
                        "and both objectives come from the int8 file) or search (each trial chooses) (default: fp32)")
    s.add_argument("--objectives", help="accuracy,latency (cosine,latency for text), or with a third objective "
                                        "minimised: ...,size (the ONNX file) or ...,memory (peak memory) "
                                        "(default: accuracy,latency)")
    s.add_argument("--calibration", choices=tuple(hwprofile.CALIBRATION_METHODS),
                   help="int8: how activation ranges are calibrated on training images (default: minmax)")
    s.add_argument("--int8-format", choices=tuple(hwprofile.INT8_FORMATS),
                   help="int8: the QDQ file's format, ort (uint8 asymmetric activations, ONNX Runtime's advice for "
                        "x86 CPUs) or tensorrt (int8 symmetric activations and weights, zero points 0: what "
                        "TensorRT's explicit quantization takes) (default: ort)")
    s.add_argument("--sampler", choices=SAMPLERS, help="Optuna sampler (default: tpe)")
    s.add_argument("--seed", type=int, help="seed of the sampler, the data split and training (default: 0)")
    s.add_argument("--sampler-seed", type=int, help="seed of the sampler alone (default: --seed): another search of "
                                                    "the same split, teacher and students")
    s.add_argument("--threads", type=int, help="ONNX Runtime threads for latency measurement (default: 1)")
    s.add_argument("--epochs", type=float, help="distillation epochs per trial (default: 10; text 3)")
    s.add_argument("--steps", type=int, help="distillation steps per trial (overrides --epochs)")
    s.add_argument("--max-steps", type=int, help="at most this many distillation steps per trial, whatever --epochs "
                                                 "says (default: 500; text: no cap; 0: no cap)")
    s.add_argument("--batch-size", type=int, help="training batch size (default: 64; text 32)")
    s.add_argument("--lr", type=float, help="peak learning rate of the one-cycle AdamW schedule (default: 0.01; "
                                            "text 0.001)")
    s.add_argument("--temperature", type=float, help="KD temperature T (default: 4)")
    s.add_argument("--alpha", type=float, help="weight of the KD term; 1-alpha weighs cross-entropy (default: 0.9)")
    s.add_argument("--kd", help=f"distillation methods, '+'-joined with optional :weight, e.g. kd, dkd, kd+at:0.5 "
                                f"(known: {', '.join(distill.list_losses())}, none; default: kd); text: "
                                f"{'+'.join(distill.TEXT_LOSSES)} or a part of it (default: cosine)")
    s.add_argument("--search-kd", action="store_true", default=None,
                   help=f"each trial also chooses the method ({', '.join(KD_CHOICES)}; with --augment only those "
                        f"that read logits: {', '.join(kd_choices('standard'))}), temperature and alpha")
    s.add_argument("--early-stop", metavar="RUNGS", help=f"'off', or the fractions of the budget where a trial "
                                                          f"dominated by a third of its peers beyond the noise "
                                                          f"stops (default: {DEFAULT_RUNGS})")
    s.add_argument("--train-over-budget", action="store_true", default=None,
                   help="distil students over a budget too: their scores are recorded, the constraints keep them off "
                        "the front (slower; shows what the budget costs)")
    s.add_argument("--refine", type=int, metavar="K", help=f"before the outputs are written, distil up to K students "
                                                           f"of the front again with {REFINE_FACTOR}x the trial "
                                                           f"budget and recompute the front; 0: off (default: "
                                                           f"{REFINE_DEFAULT})")
    s.add_argument("--val-fraction", type=float, help="validation share of the training data (default: 0.2)")
    s.add_argument("--test-data", metavar="SRC", help="a data source that is the test split: images whose classes are "
                                                      "the training data's, or texts (those also in --data are left "
                                                      "out)")
    s.add_argument("--test-fraction", type=float, help="the test share carved from data without a test split of its "
                                                       "own (texts: after validation); 0: no test split (default: 0.2)")
    s.add_argument("--image-size", metavar="H[xW]", help="folder: data: the size images are resized to (default: the "
                                                         "first image's)")
    s.add_argument("--skip-bad-images", action="store_true", default=None,
                   help="folder: data: leave unreadable images out (logged) instead of failing")
    s.add_argument("--teacher-epochs", type=int, help=f"epochs of the built-in teacher's training (default: "
                                                      f"{distill.TEACHER_EPOCHS})")
    s.add_argument("--online-teacher", dest="teacher_cache", action="store_false", default=None,
                   help="images: run the teacher on every training batch instead of caching its outputs once "
                        "(slower: what the cache saves; a PyTorch teacher and a logit method: kd, dkd, dist)")
    s.add_argument("--augment", choices=distill.AUGMENTATIONS,
                   help="images: students train on augmented views whose teacher logits are cached: crop (random "
                        "crops of the padded image) or standard (crops and mirrors; not for data where a mirror "
                        "changes the class, e.g. digits); none (default) trains on the images as they are. The "
                        "built-in teacher always trains on crops of images of 16 px or more (and mirrors with "
                        "standard)")
    s.add_argument("--views", type=int, help="images with --augment: views of every training image whose teacher "
                                             "logits are cached; trials cycle through them (default: 8)")
    s.add_argument("--device", help="where the built-in teacher, the teacher outputs and every student train: "
                                    "auto (the first CUDA device torch sees, else the CPU), cpu, cuda or cuda:N "
                                    "(default: auto); latency is measured by --target or ONNX Runtime as before")
    s.add_argument("--train-threads", type=int, metavar="N",
                   help="CPU training threads (default: this host's share: cores / the nas processes training here)")
    s.add_argument("--out", help="output directory (default: runs/<data>-<space>)")
    s.add_argument("--storage", help="Optuna storage: sqlite:///FILE, postgresql://USER@HOST/DB or journal:FILE "
                                     "(default: sqlite:///<out>/study.db)")
    s.add_argument("--study", help="study name (default: search)")
    s.add_argument("--workers", type=int, help="local worker processes on the study; needs a PostgreSQL or journal: "
                                              "storage (default: 1)")
    s.add_argument("--heartbeat", dest="heartbeat_s", type=int, metavar="SEC",
                   help="database storages: a trial whose worker is silent for 3 heartbeats is retried (default: 10)")
    s.add_argument("--target", metavar="http://HOST:PORT", help="measure latency on this device agent (nas device "
                                                                 "serve) instead of this machine")
    s.add_argument("--token-file", help=f"the agent's bearer token (default: ${hwprofile.TOKEN_ENV})")
    s.add_argument("--no-cache", dest="measure_cache", action="store_false", default=None,
                   help="measure every student even if the measurement cache has it")
    s.add_argument("--cache-dir", help=f"teacher, teacher-output and measurement cache (default: $NAS_CACHE_DIR or "
                                       f"{default_cache_dir()})")
    s.add_argument("--dry-run", action="store_true", help="check the settings, storage, space, data and a teacher file, "
                                                          "then stop: no study is created, nothing trained or measured")
    s.set_defaults(run=_search)

    p = commands.add_parser("pareto", help="print the Pareto front of a search", description="Print the front from the study.")
    p.add_argument("dir", help="the --out directory of a search")
    p.add_argument("--storage", help="Optuna storage URL (default: the search's)")
    p.add_argument("--study", help="study name (default: the search's)")
    p.add_argument("--json", action="store_true", help="print the front as JSON (as in pareto.json)")
    p.set_defaults(run=_pareto)

    e = commands.add_parser("export", help="distil a chosen student properly and export it to ONNX",
                            description="Rebuild a trial's student, distil it for --epochs, export ONNX, check it "
                                        "with the ONNX checker and against PyTorch in ONNX Runtime, and score the "
                                        "file on the held-out test split (accuracy; text: cosine and top-10 "
                                        "neighbour agreement).")
    e.add_argument("dir", help="the --out directory of a search")
    e.add_argument("--trial", default="best", help="trial number, or 'best': the most accurate within the budget")
    e.add_argument("--epochs", type=_positive,
                   help=f"distillation epochs (default: {EXPORT_EPOCHS:g}; text with --extra-text: enough for "
                        f"{EXPORT_PASSES} passes over every training text, if more)")
    e.add_argument("--max-steps", type=_non_negative_int, default=EXPORT_MAX_STEPS,
                   help=f"at most this many distillation steps, whatever --epochs says (default: {EXPORT_MAX_STEPS}; "
                        "0: no cap)")
    e.add_argument("--output", required=True, metavar="FILE.onnx", help="where to write the model (+ FILE.json)")
    e.add_argument("--device", help="where the student trains: auto, cpu, cuda or cuda:N (default: the search's)")
    e.add_argument("--qat", action="store_true",
                   help=f"int8 trials: after the distillation, quantization-aware fine-tuning ({QAT_EPOCHS:g} epochs, "
                        f"at most {QAT_MAX_STEPS} steps, {QAT_LR_SCALE:g}x the learning rate); reports the int8 "
                        "accuracy before and after")
    e.set_defaults(run=_export)

    f = commands.add_parser("profile", help="measure an ONNX model's latency here or on a device agent",
                            description="Measure latency (median, p90, CV, ...), memory, parameters, MACs and size of "
                                        "an ONNX file, on this machine or on a device agent (--target). Results are "
                                        "cached per model, device and setup.")
    f.add_argument("model", help="the .onnx file (a torch.export .pt2 file for --backend torch-cuda)")
    f.add_argument("--backend", default="ort", choices=hwprofile.backend_names(), help="runtime (default: ort)")
    f.add_argument("--provider", help="ONNX Runtime execution provider: cpu, cuda, tensorrt, openvino, ... "
                                      "(default: cpu)")
    f.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    f.add_argument("--batch", type=int, default=1, help="batch size for a dynamic batch dimension (default: 1)")
    f.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="value of another named dynamic dimension, e.g. --dim seq=128 (repeatable)")
    f.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16 converts the model's float tensors before loading (default: fp32)")
    f.add_argument("--target", metavar="http://HOST:PORT", help="measure on this device agent (nas device serve)")
    f.add_argument("--token-file", help=f"the agent's bearer token (default: ${hwprofile.TOKEN_ENV})")
    f.add_argument("--no-cache", action="store_true", help="measure even if the cache has this model and setup")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(run=_profile)

    d = commands.add_parser("device", help="the device agent: measure models on an edge device for a search elsewhere",
                            description="Run or query the device agent that measures ONNX models on its machine.")
    actions = d.add_subparsers(title="actions", required=True, metavar="ACTION")
    ds = actions.add_parser("serve", help="run the agent on this device",
                            description="Serve GET /v1/info and POST /v1/profile (bearer token required); "
                                        "measurements run one at a time, each in a process of its own with bounded "
                                        "memory and time (see README: Security model).")
    ds.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface "
                                                         "(default: 127.0.0.1)")
    ds.add_argument("--port", type=int, default=8765, help="TCP port, 1..65535 (default: 8765)")
    ds.add_argument("--token-file", required=True, help="file whose first line is the bearer token clients must send")
    ds.add_argument("--max-body-mb", type=float, default=64.0, help="largest model accepted, in MiB (default: 64)")
    ds.add_argument("--max-memory-mb", type=float, help="memory one measurement may use, in MiB "
                                                        "(default: half the RAM)")
    ds.add_argument("--max-input-mb", type=float, help="the inputs of one measurement together, in MiB (default: an "
                                                       "eighth of --max-memory-mb)")
    ds.add_argument("--max-batch", type=int, default=4096, help="largest batch (default: 4096)")
    ds.add_argument("--max-dim", type=int, default=2**20, help="largest input dimension (default: 1048576)")
    ds.add_argument("--request-timeout", type=float, default=60.0, metavar="SEC",
                    help="a measurement still running after SEC seconds is stopped (default: 60)")
    ds.add_argument("--body-timeout", type=float, default=60.0, metavar="SEC",
                    help="a request's headers, then its body, must each arrive within SEC seconds (default: 60)")
    ds.add_argument("--max-pending", type=int, default=16, help="profile requests held at once (uploading, queued "
                                                                 "or measuring); more are answered 503 (default: 16)")
    ds.add_argument("--allow-pt2", action="store_true", help="accept .pt2 uploads (backend torch-cuda): trusts every "
                                                             "token holder with running code on this device")
    ds.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    ds.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    ds.set_defaults(run=_device_serve)
    di = actions.add_parser("info", help="print a device agent's fingerprint and backends as JSON")
    di.add_argument("--target", required=True, metavar="http://HOST:PORT", help="the agent")
    di.add_argument("--token-file", help=f"the agent's bearer token (default: ${hwprofile.TOKEN_ENV})")
    di.set_defaults(run=_device_info)
    return parser


def _search(args: argparse.Namespace) -> int:
    keys = set(SearchConfig.__dataclass_fields__)
    config = SearchConfig.from_sources(args.config, {k: v for k, v in vars(args).items() if k in keys})
    if args.dry_run:
        validate(config)
        print(f"The inputs are valid: data {config.data}, teacher {config.teacher}, space {config.space}, study "
              f"{config.study!r} in {shown_url(config.storage)}.")
        return 0
    progress = _Progress(config.trials)
    try:
        with logging_redirect_tqdm():
            study = search(config, callbacks=[progress])
    except distill.DeadlineReached as stop:  # the built-in teacher's checkpoint is saved; nothing else has started
        progress.close()
        print(f"timeout: {stop}", file=sys.stderr)
        return DEADLINE_EXIT
    except KeyboardInterrupt:
        progress.close()
        try:
            study = open_study(config, create=False)
        except ConfigError:
            log.warning("Interrupted before the study was created: nothing to keep.")
            return 130
        log.warning("Interrupted: %d finished trials are kept in %s; run the same command to resume.",
                    finished_count(study), shown_url(config.storage))
        write_outputs(study, config.out, config.latency_budget_ms)
        return 130
    progress.close()
    front = write_outputs(study, config.out, config.latency_budget_ms)
    metric = metric_of(study)
    teacher = f"; teacher {metric} {study.user_attrs['teacher_score']:.4f}" if "teacher_score" in study.user_attrs else ""
    print(f"{finished_count(study)} trials in {shown_url(config.storage)} (study {config.study!r}){teacher}")
    print(format_table(front, metric) if front else "No feasible trained student yet.")
    if note := noise_note(front):
        print(note)
    print(f"Outputs: {config.out}/pareto.json, trials.csv, pareto.png")
    return 0


def _pareto(args: argparse.Namespace) -> int:
    study = load_study(args.dir, storage=args.storage, study=args.study)
    records = front_records(study)
    table = format_table(records, metric_of(study)) if records else "The front is empty."
    note = noise_note(records)
    print(json.dumps(records, indent=2) if args.json else table + (f"\n{note}" if note else ""))
    return 0


def _export(args: argparse.Namespace) -> int:
    config, study = load_saved_config(args.dir), load_study(args.dir)
    if args.device is not None:
        distill.check_device_spec(args.device)
        config.device = args.device
    output = Path(args.output)
    folder = next(parent for parent in output.parents if parent.exists())  # missing folders are created
    if output.is_dir() or not folder.is_dir():
        raise ExportError(f"--output {args.output!r} must name a file, but {str(output if output.is_dir() else folder)!r} "
                          f"is {'a folder' if output.is_dir() else 'a file'}.")
    try:
        report = export_trial(config, study, args.trial, args.epochs, args.output, max_steps=args.max_steps or None,
                              qat=args.qat)
    except ValueError as error:  # no feasible trial yet
        if isinstance(error, USER_ERRORS):
            raise
        raise ExportError(str(error)) from error
    beside = ", ".join([f"{Path(report.output).with_suffix('.json').name}", *report.files])
    print(f"Exported trial {report.trial} to {report.output} (+ {beside})")
    teacher = f" (teacher {report.teacher_score:.4f})" if report.teacher_score is not None else ""
    second = ("agreement", report.metrics["agreement"]) if report.metric == "accuracy" else \
        ("top-10 neighbour agreement", report.metrics["neighbour_agreement"])
    print(f"  validation {report.metric} {report.score:.4f}{teacher}, {second[0]} {second[1]:.4f}")
    if report.test_score is None or report.test_score_ci95 is None:
        print(f"  {report.test_note}")
    else:
        low, high = report.test_score_ci95
        agreement = report.test_metrics.get("neighbour_agreement")
        also = "" if agreement is None else f", top-{report.test_metrics['k']} neighbour agreement {agreement:.4f}"
        print(f"  test {report.metric} {report.test_score:.4f} (95% CI {low:.4f}-{high:.4f}){also} of the ONNX file "
              f"in ONNX Runtime; {report.test_note}")
    print(f"  latency {report.latency_ms:.4f} ms median, {report.latency_p90_ms:.4f} ms p90; "
          f"{report.params} params, {report.macs} MACs, {report.size_bytes} bytes")
    q = report.quantization
    fine_tuned = q is not None and q.get("qat", {}).get("kept", False)
    reference = "" if q is None else f" (the {'fine-tuned ' if fine_tuned else ''}fp32 file, before quantization)"
    print(f"  ONNX checker passed; max |ONNX Runtime - PyTorch| = {report.max_abs_diff:.2e}{reference}")
    if q is not None:
        test = "" if q["test_accuracy_drop"] is None else \
            f", test {q['test_accuracy_fp32']:.4f} -> {q['test_accuracy_int8']:.4f} (drop {q['test_accuracy_drop']:+.4f})"
        print(f"  int8 (ONNX Runtime static QDQ, {q['method']} calibration on {q['samples']} training images): "
              f"accuracy fp32 -> int8: validation {q['val_accuracy_fp32']:.4f} -> {q['val_accuracy_int8']:.4f} (drop "
              f"{q['val_accuracy_drop']:+.4f}){test}; top-1 agreement with fp32 {q['agreement_with_fp32']:.4f} "
              f"(>= {q['agreement_tolerance']})")
    if q is not None and "qat" in q:
        ptq, qat = q["ptq"], q["qat"]
        test = "" if qat["test_accuracy_int8"] is None else \
            f", test {ptq['test_accuracy_int8']:.4f} -> {qat['test_accuracy_int8']:.4f}"
        print(f"  QAT ({qat['steps']} steps at lr {qat['lr']:g}, {qat['seconds']:.1f} s): int8 accuracy before -> after: "
              f"validation {ptq['val_accuracy_int8']:.4f} -> {qat['val_accuracy_int8']:.4f}{test} (fp32 before QAT: "
              f"validation {ptq['val_accuracy_fp32']:.4f}"
              + ("" if ptq["test_accuracy_fp32"] is None else f", test {ptq['test_accuracy_fp32']:.4f}") + "); "
              + ("the fine-tuned file is written" if qat["kept"] else
                 "the file before QAT is written (the fine-tuned one scored lower on validation)"))
    return 0


def _profile(args: argparse.Namespace) -> int:
    try:
        try:
            dims = hwprofile.parse_dims(args.dim)
        except ValueError as error:
            raise hwprofile.InvalidOptionError(f"--dim expects NAME=N (e.g. --dim seq=128): {error}") from None
        config = hwprofile.MeasureConfig(backend=args.backend, provider=args.provider, threads=args.threads,
                                         batch=args.batch, dims=dims, precision=args.precision)
        target = hwprofile.DeviceClient(args.target, hwprofile.read_token(args.token_file)) if args.target else None
        cache = None if args.no_cache else Path(default_cache_dir()) / "measurements.sqlite"
        onnx = hwprofile.get_backend(config.backend).suffix == ".onnx"  # the drift canary is an ONNX model
        baseline = hwprofile.device_baseline(config, cache=cache, target=target) if onnx else None
        result = hwprofile.profile(args.model, config, cache=cache, target=target, baseline=baseline)
    except hwprofile.ProfileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict()) if args.json else _profile_summary(args.model, result, baseline))
    return 0


def _profile_summary(model: str, result: hwprofile.Measurement,
                     baseline: hwprofile.CanaryBaseline | None = None) -> str:
    """A trtexec-like report of one measurement, with its median normalised to the canary ``baseline``."""
    lat, stats, setup = result.latency, result.model, result.setup
    where = f"device agent {result.target}" if result.target else "this machine"
    device = result.device
    hardware = ", ".join(filter(None, [device.get("board"), device.get("cpu"), f"{device.get('cores')} cores",
                                       *device.get("gpus", [])]))
    dims = "".join(f", {name}={size}" for name, size in setup.get("dims", {}).items())
    memory = [f"peak memory +{lat.peak_memory_bytes / 2**20:.1f} MiB (host RSS)" if lat.peak_memory_bytes is not None
              else "", f"+{lat.peak_gpu_memory_bytes / 2**20:.1f} MiB (GPU)" if lat.peak_gpu_memory_bytes else ""]
    precision = f", median ±{lat.median_rel_ci95:.2%} (95% CI)" if lat.median_rel_ci95 is not None else ""
    lines = [
        f"=== Model: {model} ===",
        f"Parameters: {stats.params:,} | MACs: {stats.macs:,} (batch 1) | Size: {stats.size_bytes:,} bytes",
        "=== Setup ===",
        f"Backend: {setup.get('backend')} {setup.get('backend_version')}, {setup.get('provider')}, graph optimisation "
        f"{setup.get('graph_optimization')} | threads {setup.get('threads')}, spinning "
        f"{'on' if setup.get('spinning') else 'off'} | batch {setup.get('batch')}{dims} | {setup.get('precision')}",
        f"Device: {hardware} ({where})",
        "=== Performance summary ===",
        f"Latency: min = {lat.min_ms:.4f} ms, max = {lat.max_ms or float('nan'):.4f} ms, mean = {lat.mean_ms:.4f} ms, "
        f"median = {lat.median_ms:.4f} ms, percentile(90%) = {lat.p90_ms:.4f} ms, percentile(95%) = {lat.p95_ms:.4f} "
        f"ms, percentile(99%) = {lat.p99_ms:.4f} ms",
        f"Runs: {lat.runs} timed, {lat.attempts} attempt(s); CV = {lat.cv:.2%} (robust: 1.4826*MAD/median){precision}",
        f"Session creation: {lat.session_ms:.2f} ms, first run (cold): {lat.cold_ms:.3f} ms"
        + "".join(f", {m}" for m in memory if m),
        *(drift_summary(result, baseline) if baseline is not None else []),
    ]
    if not lat.stable:
        lines.append(f"[W] UNSTABLE: CV {lat.cv:.2%} stayed above the threshold after {lat.attempts} attempt(s); "
                     f"do not trust the median alone.")
    if result.cached:
        lines.append("(from the measurement cache; --no-cache measures again)")
    return "\n".join(lines)


def _device_serve(args: argparse.Namespace) -> int:
    try:
        token = hwprofile.read_token(args.token_file)
        limits = hwprofile.remote.AgentLimits.from_megabytes(
            max_body_mb=args.max_body_mb, max_memory_mb=args.max_memory_mb, max_input_mb=args.max_input_mb,
            max_batch=args.max_batch, max_dim=args.max_dim, request_timeout_s=args.request_timeout,
            body_timeout_s=args.body_timeout, max_pending=args.max_pending)
        from hwprofile.remote import agent

        server = agent.server(token, args.host, args.port, limits=limits, allow_pt2=args.allow_pt2,
                              ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
        server.run()
    except hwprofile.ProfileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _device_info(args: argparse.Namespace) -> int:
    try:
        info = hwprofile.DeviceClient(args.target, hwprofile.read_token(args.token_file)).info()
    except hwprofile.ProfileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


class _Progress:
    """A progress bar over the study's finished trials showing the front size and the best feasible score.

    It appears with the first finished trial, so that an input error stays a single line.
    """

    def __init__(self, total: int) -> None:
        self._total = total
        self._bar: tqdm | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial | None) -> None:
        if self._bar is None:
            self._bar = tqdm(total=self._total, unit="trial", dynamic_ncols=True, file=sys.stderr)
        self._bar.n = min(finished_count(study), self._total)
        front = pareto_front(study)
        best = best_trial(study).values[0] if front else float("nan")
        self._bar.set_postfix(front=len(front), best=f"{best:.4f}")
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


if __name__ == "__main__":
    sys.exit(main())
