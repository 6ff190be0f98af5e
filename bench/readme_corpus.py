"""English corpora for text benchmarks, from what is installed: package descriptions, or docstrings.

The built-in ``python-docs`` corpus is what the text students were developed on; the descriptions (the README in
every ``*.dist-info/METADATA`` under the given folders) are not: they are the held-out corpus. ``--docstrings``
reads the docstrings of every ``*.py`` file under the folders instead (parsed, never imported): unlabelled texts of
a neighbouring domain for ``--extra-text``; ``--exclude FILE`` then leaves out every sentence that shares a run of
:data:`SHINGLE` words with a line of FILE, so that no held-out sentence, nor a near copy of one, is trained on. Both
drop code, tables, lists and links, and keep the sentences of 6-40 words, once each. Which sentences they find
depends on what is installed, so the file written is reported with its line count::

    python bench/readme_corpus.py OUT.txt [SITE_PACKAGES ...]   # default: this interpreter's site-packages
    python bench/readme_corpus.py --docstrings --exclude HELD_OUT.txt --limit 10000 OUT.txt [SITE_PACKAGES ...]
"""

from __future__ import annotations

import argparse
import ast
import random
import re
import site
from collections.abc import Iterable, Iterator, Sequence
from email import message_from_string
from pathlib import Path

SHINGLE = 5  # words in a row shared with a held-out sentence that make a sentence a near copy of it
_SKIP = re.compile(r"\s*([#|>*\-+=:.]|\d+\.|\s{4})")  # headings, tables, quotes, lists, rules, indented code
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN = re.compile(r"[\w\s,.;:'()!?%/-]+")


def prose(text: str) -> Iterator[str]:
    """The prose sentences of a README or docstring."""
    for paragraph in re.split(r"\n\s*\n", re.sub(r"```.*?```", " ", text, flags=re.S)):
        if _SKIP.match(paragraph) or "http" in paragraph or "`" in paragraph:
            continue
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            if (6 <= len(sentence.split()) <= 40 and sentence[0].isupper() and sentence[-1] in ".!?"
                    and _PLAIN.fullmatch(sentence)):
                yield sentence


def descriptions(folder: Path) -> Iterator[str]:
    """The prose sentences of every package description under ``folder``."""
    for metadata in sorted(folder.glob("*.dist-info/METADATA")):
        message = message_from_string(metadata.read_text(errors="ignore"))
        yield from prose(str(message.get_payload() or message.get("Description", "")))


def docstrings(folder: Path) -> Iterator[str]:
    """The prose sentences of the docstrings (module, class, function) of every Python file under ``folder``."""
    for path in sorted(folder.rglob("*.py")):
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue  # a file for another Python version, or unreadable: nothing to learn from here
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from prose(ast.get_docstring(node) or "")


def shingles(sentence: str) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", sentence.lower())
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def without_near_copies(texts: Iterable[str], held_out: Iterable[str]) -> list[str]:
    """``texts`` less those sharing :data:`SHINGLE` words in a row with a ``held_out`` sentence."""
    seen = set().union(*map(shingles, held_out))
    return [text for text in texts if not shingles(text) & seen]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path, help="the corpus: a text file, one sentence a line")
    parser.add_argument("folders", type=Path, nargs="*", help="site-packages folders (default: this interpreter's)")
    parser.add_argument("--docstrings", action="store_true", help="docstrings instead of package descriptions")
    parser.add_argument("--exclude", type=Path, help="a corpus (one sentence a line) whose sentences and near copies "
                                                     "are left out")
    parser.add_argument("--limit", type=int, help="at most this many sentences, a seeded random choice of them")
    args = parser.parse_args(argv)
    if args.exclude and not args.exclude.is_file():
        parser.error(f"--exclude {args.exclude}: no such file (expected a corpus, one sentence a line)")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, but got {args.limit}")
    folders = args.folders or [Path(p) for p in site.getsitepackages()]
    source = docstrings if args.docstrings else descriptions
    texts = list(dict.fromkeys(s for folder in folders for s in source(folder)))
    if args.exclude:
        kept = without_near_copies(texts, args.exclude.read_text().splitlines())
        print(f"left out {len(texts) - len(kept)} sentences sharing {SHINGLE} words in a row with {args.exclude}")
        texts = kept
    if args.limit is not None and len(texts) > args.limit:
        texts = random.Random(0).sample(texts, args.limit)
    args.output.write_text("\n".join(texts) + "\n")
    print(f"{args.output}: {len(texts)} sentences from {', '.join(map(str, folders))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
