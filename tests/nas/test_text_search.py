"""`nas search` and `nas export` for transformer students of a real (tiny) Hugging Face teacher on a text file."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest

import distill
from nas.cli import main
from nas.config import SearchConfig
from nas.export import EXPORT_EPOCHS, EXPORT_PASSES, default_epochs
from nas.tasks import TextTask
from search_spaces import get_space

pytest.importorskip("transformers", reason="text students need the 'text' extra (transformers)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    path.write_text("\n".join(distill.read_texts(distill.BUILTIN_TEXT)[0][:200]) + "\n")
    return path


def test_text_search_front_and_export_with_the_tokenizer(corpus: Path, tiny_teacher_dir: Path, tmp_path: Path,
                                                         cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["search", "--data", f"text:{corpus}", "--teacher", f"hf:{tiny_teacher_dir}", "--seq-len", "24",
            "--trials", "3", "--steps", "15", "--sampler", "random", "--kd", "cosine+hidden:0.5+attention",
            "--out", str(out), "--cache-dir", str(cache_dir)]
    assert main(args) == 0
    assert "cosine" in capsys.readouterr().out.splitlines()[1]  # the table's quality column
    config = json.loads((out / "config.json").read_text())
    assert (config["space"], config["lr"], config["batch_size"]) == ("transformer", 1e-3, 32)
    front = json.loads((out / "pareto.json").read_text())
    assert front
    for entry in front:
        assert entry["score"] == entry["cosine"] and -1 <= entry["cosine"] <= 1 and entry["accuracy"] is None
        assert 0 <= entry["neighbour_agreement"] <= 1 and entry["macs"] > 0
        assert entry["kd"] == "cosine+hidden:0.5+attention"
    with (out / "trials.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 3
    # Text students have rungs too: the validation cosine at 1/9 and 1/3 of the budget, judged against peers.
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    for trial in study.trials:
        rungs = trial.user_attrs["rungs"]
        assert set(rungs) == {"0", "1"} and all(0 <= value <= 1 for value in rungs.values())
        decision = trial.user_attrs["rung_decisions"]["0"]
        assert decision["samples"] == 40 and 0 < decision["chance"] < 1  # 200 texts, 20% validation

    model = tmp_path / "export" / "student.onnx"
    assert main(["export", str(out), "--trial", "best", "--epochs", "1", "--output", str(model)]) == 0
    metadata = json.loads(model.with_suffix(".json").read_text())
    assert metadata["metric"] == "cosine" and metadata["seq_len"] == 24 and metadata["max_abs_diff"] <= 1e-3
    assert metadata["losses"] == ["cosine", "hidden", "attention"] and metadata["kd"] == "cosine+hidden:0.5+attention"
    assert "tokenizer_config.json" in metadata["files"] and (model.parent / "tokenizer.json").is_file()
    # The test split (20% of the texts, carved after validation, no part of the search) judges the ONNX file.
    task = TextTask(SearchConfig(data=f"text:{corpus}", teacher=f"hf:{tiny_teacher_dir}", seq_len=24),
                    get_space("transformer"))
    data = task.data
    assert metadata["test_samples"] == len(data.test_texts) == 40 and not set(data.test_texts) & set(data.val_texts)
    padded = [np.pad(array, ((0, 0), (0, 24 - data.seq_len))) for array in (data.ids_test, data.mask_test)]
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    student = session.run(None, dict(zip((i.name for i in session.get_inputs()), padded)))[0]
    expected = distill.text_fidelity(student, task.teacher.encode(data.ids_test, data.mask_test).embedding)
    assert metadata["test_score"] == pytest.approx(expected.cosine, abs=1e-5)
    assert metadata["test_metrics"]["neighbour_agreement"] == pytest.approx(expected.neighbour_agreement)
    low, high = metadata["test_score_ci95"]
    assert low < metadata["test_score"] < high and metadata["test_note"].startswith("test split: 0.2 of text:")
    assert f"test cosine {metadata['test_score']:.4f} (95% CI" in capsys.readouterr().out

    # A deployment tokenises with the saved files and runs the ONNX student.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model.parent))
    feed = dict(tokenizer(["Assignment statements bind names to objects."], padding="max_length", max_length=24,
                          truncation=True, return_tensors="np"))
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    embedding = session.run(None, {i.name: feed[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    assert embedding.shape == (1, 32) and np.isfinite(embedding).all()


def test_text_settings_are_checked_at_once(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--data", f"text:{corpus}", "--kd", "cosine+kd", "--out", str(tmp_path)]) == 2
    assert "joins cosine, hidden, attention, similarity with '+'" in capsys.readouterr().err
    assert main(["search", "--data", f"text:{corpus}", "--kd", "cosine+similarity:-1", "--out", str(tmp_path)]) == 2
    assert "weights of a text distillation spec must be finite numbers >= 0" in capsys.readouterr().err
    assert main(["search", "--data", f"text:{corpus}", "--space", "mbconv", "--out", str(tmp_path)]) == 2
    assert "needs --space transformer" in capsys.readouterr().err
    assert main(["search", "--data", f"text:{corpus}", "--test-data", "digits", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: --test-data must be the same kind of data as --data (text: "
                                       "python-docs, text:FILE; else images), but got --test-data 'digits' with "
                                       f"--data 'text:{corpus}'.\n")


def test_the_weights_of_a_text_spec_reach_the_training_settings(corpus: Path, tiny_teacher_dir: Path) -> None:
    config = SearchConfig(data=f"text:{corpus}", teacher=f"hf:{tiny_teacher_dir}", kd="cosine+similarity:0.1")
    task = TextTask(config, get_space("transformer"))
    assert task.losses == ("cosine", "similarity")
    assert (task.train.cosine_weight, task.train.similarity_weight) == (1.0, 0.1)


@pytest.fixture(scope="module")
def extra_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """60 texts of the user's (36 training, 12 validation, 12 test) and 60 other texts."""
    texts = distill.read_texts(distill.BUILTIN_TEXT)[0]
    folder = tmp_path_factory.mktemp("extra")
    (folder / "own.txt").write_text("\n".join(texts[:60]) + "\n")
    (folder / "extra.txt").write_text("\n".join(texts[60:120]) + "\n")
    return folder / "own.txt", folder / "extra.txt"


def test_extra_texts_train_trials_and_the_export_without_growing_the_budget(
        extra_corpus: tuple[Path, Path], tiny_teacher_dir: Path, tmp_path: Path, cache_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    own, extra = extra_corpus
    out = tmp_path / "run"
    args = ["search", "--data", f"text:{own}", "--extra-text", f"text:{extra}", "--teacher", f"hf:{tiny_teacher_dir}",
            "--seq-len", "24", "--trials", "2", "--epochs", "1", "--sampler", "random", "--early-stop", "off",
            "--refine", "0", "--out", str(out), "--cache-dir", str(cache_dir)]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["extra_text"] == f"text:{extra}"
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    # An epoch is the 36 own training texts in batches of 32 (2 steps), not the 96 training texts (3 steps).
    assert [trial.user_attrs["steps"] for trial in study.trials] == [2, 2]
    assert main([*args, "--trials", "3", "--extra-text", distill.BUILTIN_TEXT]) == 2  # the study keeps its texts
    assert f"extra_text: study has 'text:{extra}'" in capsys.readouterr().err

    model = tmp_path / "student.onnx"
    assert main(["export", str(out), "--trial", "best", "--epochs", "2", "--output", str(model)]) == 0
    metadata = json.loads(model.with_suffix(".json").read_text())
    assert (metadata["extra_text"], metadata["extra_texts"], metadata["steps"]) == (f"text:{extra}", 60, 4)


def test_the_default_export_sees_every_training_text_three_times(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    """An epoch counts --data's own texts: with 25x as many extra texts, the default export runs more epochs."""
    texts = distill.read_texts(distill.BUILTIN_TEXT)[0]
    (tmp_path / "own.txt").write_text("\n".join(texts[:10]) + "\n")
    (tmp_path / "extra.txt").write_text("\n".join(texts[10:210]) + "\n")
    own = SearchConfig(data=f"text:{tmp_path / 'own.txt'}", teacher=f"hf:{tiny_teacher_dir}")
    with_extra = TextTask(replace(own, extra_text=f"text:{tmp_path / 'extra.txt'}"), get_space("transformer"))
    assert (with_extra.data.num_own_train, with_extra.data.num_extra) == (6, 200)  # 2 validation, 2 test texts
    assert default_epochs(with_extra) == EXPORT_PASSES * 206 / 6 > EXPORT_EPOCHS
    assert default_epochs(TextTask(own, get_space("transformer"))) == EXPORT_EPOCHS


def test_bad_extra_texts_stop_before_any_work(extra_corpus: tuple[Path, Path], tiny_teacher_dir: Path,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own, _ = extra_corpus
    (tmp_path / "empty.txt").write_text("\n")
    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)))
    text = ["search", "--data", f"text:{own}", "--teacher", f"hf:{tiny_teacher_dir}", "--out", str(tmp_path / "run")]
    for extra, message in [(f"text:{tmp_path / 'missing.txt'}", "does not exist"),
                           (f"text:{tmp_path / 'empty.txt'}", "holds no texts"),
                           (f"text:{tmp_path / 'binary.txt'}", "as UTF-8"),
                           ("digits", "must be a text source (python-docs, text:FILE)")]:
        assert main([*text, "--extra-text", extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # no study, no output folder
    assert main(["search", "--data", "digits", "--extra-text", distill.BUILTIN_TEXT, "--out", str(tmp_path)]) == 2
    assert "with --data 'digits'" in capsys.readouterr().err
