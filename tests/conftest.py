from __future__ import annotations

import collections
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import distill

TINY_LAYERS, TINY_HIDDEN, TINY_HEADS = 3, 32, 4
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist-t10k"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teacher/teacher-output cache for the whole run, so the built-in teacher trains once."""
    return tmp_path_factory.mktemp("nas-cache")


@pytest.fixture(scope="session")
def digits() -> distill.Dataset:
    return distill.load_dataset("digits")


@pytest.fixture(scope="session")
def digits_teacher(digits: distill.Dataset, cache_dir: Path) -> distill.Teacher:
    return distill.load_teacher("builtin", digits, cache_dir, epochs=3)


@pytest.fixture(scope="session")
def digits_outputs(digits: distill.Dataset, digits_teacher: distill.Teacher, cache_dir: Path) -> distill.TeacherOutputs:
    return distill.teacher_outputs(digits_teacher, digits, cache_dir)


@pytest.fixture(scope="session")
def serve_agent() -> Iterator[Callable[..., str]]:
    """Start the device agent with uvicorn in a thread on a free loopback port: ``serve_agent(token, **options)``
    (options: those of ``hwprofile.remote.agent.server``) returns its URL; every agent stops at the end of the run."""
    pytest.importorskip("starlette", reason="the device agent needs the 'agent' extra (starlette, uvicorn)")
    pytest.importorskip("uvicorn", reason="the device agent needs the 'agent' extra (starlette, uvicorn)")
    from hwprofile.remote.agent import server as agent_server

    servers = []

    def serve(token: str, **options: object) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = agent_server(token, log_level="warning", **options)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield serve
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (random-weight) 3-layer BERT saved with its WordPiece tokenizer, as ``hf:PATH`` expects."""
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("tiny-bert")
    words = collections.Counter(w for text in distill.read_texts(distill.BUILTIN_TEXT)[0]
                                for w in re.findall(r"[a-z]+|[^\sa-z]", text.lower()))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]  # unknown words split into letters, not [UNK]
    common = sorted({w for w, _ in words.most_common(300)} - set(letters))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), *common]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(directory / "vocab.txt"))
    tokenizer.save_pretrained(str(directory))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_LAYERS,
                                     num_attention_heads=TINY_HEADS, intermediate_size=64, max_position_embeddings=64)
    transformers.set_seed(0)
    transformers.BertModel(config).save_pretrained(str(directory))
    return directory
