"""What cutting each batch to its longest text saves: MiniLM labelling texts, and a text student's training step.

Run from the repository root, on an otherwise quiet machine (needs the ``text`` extra; a few minutes on 2 cores)::

    python bench/text_padding.py --data text:HELD_OUT.txt --extra-text text:DOCS.txt   # the corpus of BENCHMARKS.md
    python bench/text_padding.py --quick           # python-docs, fewer texts and steps (text_padding-quick.json)

A text corpus is tokenised to its longest text (up to ``--seq-len``, 128), so a corpus of short sentences with one
long text pads every sentence to 128 tokens. Side by side, on the same texts:

- **labelling**: ``--texts`` training texts (a seeded sample) labelled by ``hf:minilm`` as the cache does it
  (``HFTeacher.encode``: shortest first, each batch cut to its longest text) and as padded batches in the given order
  (the transformers model called on the full width, what the cache did before); texts per second, their ratio, and
  the largest difference between the two embeddings (the outputs must be the same);
- **training**: a student of the deployable architecture in BENCHMARKS.md (1 layer, hidden 384, 4 heads, FFN ×4,
  embedding 192) trained ``--steps`` steps (cosine loss to the teacher's embeddings of those texts, AdamW, batch 32)
  on the same random batches, padded and cut; the median step of each, in interleaved rounds, and their ratio.

Results go to ``bench/results/text_padding.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

import distill
from distill.losses.functional import cosine_embedding_loss, masked_mean
from distill.text.data import trim_padding
from search_spaces import get_space, seeded_build
from _results import RESULTS, header, load_before, publish  # bench/ is on sys.path when a script runs

STUDENT = {"layers": 1, "hidden": 384, "heads": 4, "ffn_ratio": 4, "embed": 192}
BATCH = 32


@torch.no_grad()
def padded_labels(teacher: distill.HFTeacher, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-pooled embeddings of padded batches in the given order: the labelling before batches were cut."""
    pooled = []
    for start in range(0, len(ids), teacher.batch_size):
        batch_ids, batch_mask = (torch.from_numpy(a[start:start + teacher.batch_size]) for a in (ids, mask))
        last = teacher.model(input_ids=batch_ids, attention_mask=batch_mask).last_hidden_state
        pooled.append(masked_mean(last, batch_mask[:, :, None], dim=1).numpy())
    return np.concatenate(pooled)


def labelling(teacher: distill.HFTeacher, ids: np.ndarray, mask: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """Texts per second of the two labellings and how far apart their embeddings are; the embeddings."""
    start = time.perf_counter()
    padded = padded_labels(teacher, ids, mask)
    padded_s = time.perf_counter() - start
    start = time.perf_counter()
    cut = teacher.encode(ids, mask).embedding
    cut_s = time.perf_counter() - start
    return {"texts": len(ids), "padded_texts_per_s": len(ids) / padded_s, "cut_texts_per_s": len(ids) / cut_s,
            "speedup": padded_s / cut_s, "max_abs_diff": float(np.abs(padded - cut).max())}, cut


def training(ids: np.ndarray, mask: np.ndarray, targets: np.ndarray, vocab: int, steps: int,
             seed: int) -> dict[str, Any]:
    """Median milliseconds of a student's training step on padded and on cut batches (interleaved), learning the
    teacher's ``targets`` of the texts ``ids``."""
    student = seeded_build(get_space("transformer"), STUDENT, seed, (ids.shape[1],), targets.shape[1],
                           vocab_size=vocab)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {"padded": [], "cut": []}
    lengths = []
    for step in range(steps + 2):  # the first two rounds warm up
        rows = np.sort(rng.choice(len(ids), BATCH, replace=False))
        batches = {"padded": (ids[rows], mask[rows]), "cut": trim_padding(ids[rows], mask[rows])}
        lengths.append(batches["cut"][0].shape[1])
        for name, (batch_ids, batch_mask) in batches.items():
            start = time.perf_counter()
            loss = cosine_embedding_loss(student(torch.from_numpy(batch_ids), torch.from_numpy(batch_mask)),
                                         torch.from_numpy(targets[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step >= 2:
                times[name].append(time.perf_counter() - start)
    padded_ms, cut_ms = (1000 * statistics.median(times[name]) for name in ("padded", "cut"))
    return {"steps": steps, "mean_cut_length": float(np.mean(lengths)),
            "padded_step_ms": padded_ms, "cut_step_ms": cut_ms, "speedup": padded_ms / cut_ms}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=distill.BUILTIN_TEXT, help="text data: python-docs or text:FILE")
    parser.add_argument("--extra-text", help="unlabelled training texts (nas search --extra-text)")
    parser.add_argument("--seq-len", type=int, default=128, help="the longest text kept, in tokens (default 128)")
    parser.add_argument("--texts", type=int, help="training texts labelled both ways (default 2000; quick: 300)")
    parser.add_argument("--steps", type=int, help="training steps timed each way (default 60; quick: 10)")
    parser.add_argument("--quick", action="store_true", help="fewer texts and steps, written to *-quick.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_at_start = load_before()
    texts, steps = args.texts or (300 if args.quick else 2000), args.steps or (10 if args.quick else 60)
    teacher = distill.load_hf_teacher(f"hf:{distill.MINILM}")
    data = distill.load_text_dataset(args.data, teacher.tokenizer, seq_len=args.seq_len, seed=args.seed,
                                     extra=args.extra_text)
    rows = np.sort(np.random.default_rng(args.seed).choice(len(data.ids_train), min(texts, len(data.ids_train)),
                                                           replace=False))
    ids, mask = data.ids_train[rows], data.mask_train[rows]
    labels, embeddings = labelling(teacher, ids, mask)
    train = training(ids, mask, embeddings, teacher.vocab_size, steps, args.seed)
    report = "\n".join([
        f"data {args.data}{f' + {args.extra_text}' if args.extra_text else ''}: {len(data.ids_train)} training texts "
        f"padded to {data.seq_len} tokens (mean length {data.mask_train.sum(1).mean():.1f})",
        f"labelling {labels['texts']} texts: padded {labels['padded_texts_per_s']:.1f} texts/s, cut "
        f"{labels['cut_texts_per_s']:.1f} texts/s ({labels['speedup']:.1f}x); largest embedding difference "
        f"{labels['max_abs_diff']:.2e}",
        f"training step (batch {BATCH}, {train['steps']} steps): padded {train['padded_step_ms']:.1f} ms, cut "
        f"{train['cut_step_ms']:.1f} ms ({train['speedup']:.1f}x; cut batches {train['mean_cut_length']:.1f} tokens "
        f"on average)",
    ])
    results = {**header(load_at_start), "data": args.data, "extra_text": args.extra_text,
               "training_texts": len(data.ids_train), "seq_len": data.seq_len, "labelling": labels, "training": train}
    publish(results, report, RESULTS / ("text_padding-quick.json" if args.quick else "text_padding.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
