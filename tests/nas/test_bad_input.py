"""Bad input to `nas search`, `nas pareto` and `nas export`: one line on stderr, exit code 2, before any long work,
and no study created or changed (issue 10)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import optuna
import pytest
import torch

from nas.cli import main
from nas.config import SearchConfig
from nas.storage import CONNECT_TIMEOUT_S


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``nas argv``: it must exit with 2 and one line on stderr starting with 'error: '; returns that line."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's usage errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def study_out(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The --out folder of a finished one-trial search (its study must never change below)."""
    out = tmp_path_factory.mktemp("study")
    assert main(["search", *_cheap(cache_dir), "--out", str(out)]) == 0
    return out


def _cheap(cache_dir: Path) -> list[str]:
    return ["--trials", "1", "--steps", "2", "--teacher-epochs", "3", "--sampler", "random", "--early-stop", "off",
            "--cache-dir", str(cache_dir)]


def _save_teacher(path: Path, classes: int) -> Path:
    """A TorchScript teacher that maps the digits' 8x8 images to ``classes`` logits (the data has 10 classes)."""
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, classes))), str(path))
    return path


@pytest.fixture
def five_class_teacher(tmp_path: Path) -> Path:
    return _save_teacher(tmp_path / "five.pt", 5)


@pytest.mark.parametrize("storage, message", [
    ("foo://bar", "Storage foo://bar: 'foo' storages are not supported; use sqlite:///FILE, "
                  "postgresql://USER@HOST/DB or journal:FILE."),
    ("mysql://user@localhost/db", "'mysql' storages are not supported; use sqlite:///FILE"),
    ("not a url", "Storage 'not a url' is not a URL; expected sqlite:///FILE"),
    ("journal:", "names no file"),
    ("sqlite:///{tmp}/missing/study.db", "The folder of storage sqlite:///{tmp}/missing/study.db does not exist"),
    ("journal:{tmp}/missing/study.journal", "The folder of storage journal:{tmp}/missing/study.journal does not exist"),
    ("sqlite:///{tmp}", "names a folder; it must name a file"),
])
def test_bad_storage_creates_nothing(storage: str, message: str, tmp_path: Path, cache_dir: Path, study_out: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    storage, message = storage.format(tmp=tmp_path), message.format(tmp=tmp_path)
    assert message in _fails(["search", *_cheap(cache_dir), "--out", str(out), "--storage", storage], capsys)
    assert not out.exists() and not (tmp_path / "missing").exists()
    before = _files(study_out)  # an --out folder with a study in it
    assert message in _fails(["search", *_cheap(cache_dir), "--out", str(study_out), "--storage", storage], capsys)
    assert _files(study_out) == before


@pytest.mark.parametrize("storage, content, message", [
    ("sqlite:///{file}", os.urandom(4096), "is not a SQLite database"),
    ("sqlite:///{file}", b"x", "is not a SQLite database"),  # SQLite itself would overwrite so short a file
    ("journal:{file}", os.urandom(4096), "as a journal file of Optuna studies"),
    ("journal:{file}", b'{"hello": 1}\n', "as a journal file of Optuna studies"),
])
def test_a_file_that_is_not_a_storage_is_left_alone(storage: str, content: bytes, message: str, tmp_path: Path,
                                                    cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "other.bin"
    file.write_bytes(content)
    for argv in (["search", *_cheap(cache_dir), "--out", str(tmp_path / "out")], ["search", "--dry-run"]):
        err = _fails([*argv, "--storage", storage.format(file=file)], capsys)
        assert message in err and str(file) in err
    assert file.read_bytes() == content and not (tmp_path / "out").exists()


def test_postgresql_on_a_closed_port_is_one_line_and_hides_the_password(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the socket is
    start = time.monotonic()
    err = _fails(["search", "--out", str(tmp_path / "out"), "--storage",
                  f"postgresql://nas:secret@127.0.0.1:{port}/nas"], capsys)
    assert f"Cannot open storage postgresql://nas:***@127.0.0.1:{port}/nas" in err and "secret" not in err
    assert time.monotonic() - start < CONNECT_TIMEOUT_S and not (tmp_path / "out").exists()


def test_postgresql_database_that_does_not_exist(postgres_url: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"{postgres_url.rpartition('/')[0]}/no_such_database"
    err = _fails(["search", "--dry-run", "--out", str(tmp_path / "out"), "--storage", missing], capsys)
    assert f"Cannot open storage {missing}" in err and "no_such_database" in err


def test_a_study_created_with_other_settings_is_named_without_the_password(postgres_url: str, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")  # trust authentication: the password is unused
    study = optuna.create_study(storage=url, study_name="other-settings", directions=["maximize", "minimize"])
    study.set_user_attr("config", SearchConfig(out=str(tmp_path / "out"), storage=url, alpha=0.9).to_dict())
    err = _fails(["search", "--dry-run", "--out", str(tmp_path / "out"), "--storage", url, "--study", "other-settings",
                  "--alpha", "0.5"], capsys)
    assert "was created with other settings (alpha: study has 0.9, got 0.5)" in err
    assert "s3cret-pw" not in err and "postgres:***@" in err


def test_failed_teacher_check_leaves_no_study(five_class_teacher: Path, tmp_path: Path, cache_dir: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    err = _fails(["search", *_cheap(cache_dir), "--out", str(out), "--teacher", str(five_class_teacher)], capsys)
    assert f"Teacher {str(five_class_teacher)!r} maps inputs (2, 1, 8, 8) to (2, 5)" in err
    assert not (out / "study.db").exists()
    # the corrected command is not refused as "created with other settings"
    assert main(["search", *_cheap(cache_dir), "--out", str(out), "--dry-run"]) == 0
    assert "The inputs are valid" in capsys.readouterr().out and not (out / "study.db").exists()


def test_failed_teacher_check_leaves_an_existing_study_unchanged(tmp_path: Path, cache_dir: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    teacher, out = _save_teacher(tmp_path / "teacher.pt", 10), tmp_path / "out"
    argv = ["search", *_cheap(cache_dir), "--out", str(out), "--teacher", str(teacher)]
    assert main(argv) == 0
    before = _files(out)
    _save_teacher(teacher, 5)  # the study's teacher file no longer fits the data
    assert "maps inputs (2, 1, 8, 8) to (2, 5)" in _fails([*argv, "--trials", "2"], capsys)
    teacher.write_bytes(os.urandom(2048))
    assert str(teacher) in _fails([*argv, "--trials", "2"], capsys)
    assert _files(out) == before


@pytest.mark.parametrize("toml, message", [
    ('trials = "two"', "Setting 'trials' must be an integer, but got 'two'."),
    ("threads = 1.5", "Setting 'threads' must be an integer, but got 1.5."),
    ("trials = [1, 2]", "Setting 'trials' must be an integer, but got [1, 2]."),
    ("trials = true", "Setting 'trials' must be an integer, but got True."),
    ("epochs = true", "Setting 'epochs' must be a finite number, but got True."),
    ("early_stop = 5", "Setting 'early_stop' must be a string, but got 5."),
    ("kd = 5", "Setting 'kd' must be a string, but got 5."),
    ("search_kd = 1", "Setting 'search_kd' must be true or false, but got 1."),
    ("target = 8765", "Setting 'target' must be a string, but got 8765."),
    ("latency_budget_ms = inf", "Setting 'latency_budget_ms' must be a finite number, but got inf."),
    ("timeout = nan", "Setting 'timeout' must be a finite number, but got nan."),
    ("lr = 1e999", "Setting 'lr' must be a finite number, but got inf."),
    ("data = { npz = 'x' }", "Setting 'data' must be a string, but got {'npz': 'x'}."),
    ("seed = -1", "--seed must be in 0..2**32-1"),
    ("sampler_seed = 4294967296", "--sampler-seed must be in 0..2**32-1"),
    ("alpha = 2.0", "Invalid distillation settings: `0 <= alpha <= 1`"),
    ("batch_size = 0", "Invalid distillation settings: The budget must be positive"),
    ("trails = 3", "Unknown setting(s) ['trails']"),
    ("trials = ", "Cannot read config file"),
])
def test_config_file_values_are_checked_by_type_and_named(toml: str, message: str, tmp_path: Path, study_out: Path,
                                                          cache_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "search.toml"
    config.write_text(toml + "\n")
    before = _files(study_out)
    err = _fails(["search", "--out", str(study_out), "--cache-dir", str(cache_dir), "--config", str(config)], capsys)
    assert message in err and _files(study_out) == before


@pytest.mark.parametrize("budget, message", [
    ("1e999", "expected a finite latency, but '1e999' is inf ms"),
    ("1e306s", "expected a finite latency"),
    ("inf", "expected a latency like 2ms"),
    ("nan", "expected a latency like 2ms"),
    ("0", "--latency-budget must be a positive number of milliseconds, but got 0.0"),
    ("1e-400ms", "--latency-budget must be a positive number"),
])
def test_latency_budget_must_be_finite_and_positive(budget: str, message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    err = _fails(["search", "--out", str(out), f"--latency-budget={budget}"], capsys)
    assert message in err and not out.exists()  # no config.json with Infinity in it


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("mine")
    err = _fails(["search", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")], capsys)
    assert f"--out {str(tmp_path / 'out')!r} is a file" in err and (tmp_path / "out").read_text() == "mine"


def test_dry_run_checks_and_creates_no_study(study_out: Path, tmp_path: Path, cache_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["search", *_cheap(cache_dir), "--out", str(out), "--dry-run"]) == 0
    assert "The inputs are valid" in capsys.readouterr().out and not out.exists()
    before = _files(study_out)
    assert main(["search", *_cheap(cache_dir), "--out", str(study_out), "--dry-run"]) == 0  # resumable
    err = _fails(["search", *_cheap(cache_dir), "--out", str(study_out), "--dry-run", "--alpha", "0.5"], capsys)
    assert "was created with other settings (alpha: study has 0.9, got 0.5)" in err and _files(study_out) == before


@pytest.mark.parametrize("command", [["pareto"], ["export", "--output", "student.onnx"]])
@pytest.mark.parametrize("config_json, message", [
    (None, "holds no config.json: is it the --out directory of a `nas search`?"),
    ("{}", "No study 'search': storage sqlite:///{out}/study.db does not exist or is empty."),
    ('{"trials": 3,', "config.json' as JSON: Expecting property name"),
    ("\xff\xfe", "config.json' as JSON"),
    ("[1, 2]", "config.json' must hold a JSON object of settings, but holds list."),
    ('{"trials": 3, "bogus": 1}', "config.json': Unknown setting(s) ['bogus']"),
    ('{"trials": "two"}', "config.json': Setting 'trials' must be an integer, but got 'two'."),
    ('{"latency_budget_ms": Infinity}', "config.json': Setting 'latency_budget_ms' must be a finite number"),
])
def test_pareto_and_export_without_a_study_create_nothing(command: list[str], config_json: str | None, message: str,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if config_json is not None:  # a config.json without a study next to it
        (out / "config.json").write_bytes(config_json.replace("{}", f'{{"out": "{out}"}}').encode("latin-1"))
    before = _files(out)
    err = _fails([command[0], str(out), *command[1:]], capsys)
    assert message.format(out=out) in err and _files(out) == before


@pytest.mark.parametrize("storage, message", [
    ("foo://bar", "'foo' storages are not supported"),
    ("sqlite:///{tmp}/missing/study.db", "does not exist"),
    ("sqlite:///{tmp}/empty.db", "does not exist or is empty"),
    ("journal:{tmp}/study.journal", "does not exist or is empty"),
])
def test_pareto_on_another_storage_creates_nothing(storage: str, message: str, study_out: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.db").touch()
    before = _files(tmp_path)
    err = _fails(["pareto", str(study_out), "--storage", storage.format(tmp=tmp_path)], capsys)
    assert message in err and _files(tmp_path) == before


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "nan"], "argument --epochs: expected a positive number, but got 'nan'"),
    (["--epochs", "-1"], "argument --epochs: expected a positive number"),
    (["--output", "{tmp}/file/student.onnx"], "--output '{tmp}/file/student.onnx' must name a file, but '{tmp}/file' "
                                              "is a file."),
    (["--output", "{tmp}"], "--output '{tmp}' must name a file, but '{tmp}' is a folder."),
])
def test_export_checks_its_flags_before_distilling(flags: list[str], message: str, study_out: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("mine")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    output = [] if "--output" in flags else ["--output", str(tmp_path / "student.onnx")]
    err = _fails(["export", str(study_out), *output, *flags], capsys)
    assert message.format(tmp=tmp_path) in err and [path.name for path in tmp_path.iterdir()] == ["file"]


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert "argument --trials: invalid int value: 'two' (see nas search --help)" in _fails(
        ["search", "--trials", "two"], capsys)
    assert "invalid choice: 'serch'" in _fails(["serch"], capsys)
