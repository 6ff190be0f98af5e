"""English corpora for text benchmarks, from what is installed: package descriptions, docstrings, or the
descriptions of the installed Debian packages.

The built-in ``python-docs`` corpus is what the text students were developed on; the descriptions (the README in
every ``*.dist-info/METADATA`` under the given folders) are not: they are the held-out corpus. ``--docstrings``
reads the docstrings of every ``*.py`` file under the folders instead (parsed, never imported): unlabelled texts of
a neighbouring domain for ``--extra-text``; ``--exclude FILE`` then leaves out every sentence that shares a run of
:data:`SHINGLE` words with a line of FILE, so that no held-out sentence, nor a near copy of one, is trained on.
``--debian`` reads the long descriptions of the Debian packages in dpkg's status file instead (no folders): a test
corpus from a source no student was developed or trained on (``--exclude`` each corpus used, to leave out near copies
of their sentences). All drop code, tables, lists and links, and keep the sentences of 6-40 words, once each. Which
sentences they find depends on what is installed, so the file written is reported with its line count::

    python bench/readme_corpus.py OUT.txt [SITE_PACKAGES ...]   # default: this interpreter's site-packages
    python bench/readme_corpus.py --docstrings --exclude HELD_OUT.txt --limit 10000 OUT.txt [SITE_PACKAGES ...]
    python bench/readme_corpus.py --debian --exclude HELD_OUT.txt --exclude DOCS.txt TEST.txt
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

DPKG_STATUS = Path("/var/lib/dpkg/status")
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


def debian_descriptions(status: Path) -> Iterator[str]:
    """The prose sentences of the long description of every package in dpkg's ``status`` file: the indented lines
    after ``Description:``, a line of `` .`` between paragraphs."""
    for stanza in re.split(r"\n\s*\n", status.read_text(errors="ignore")):
        long = re.search(r"^Description:[^\n]*\n((?:[ \t][^\n]*\n?)*)", stanza, flags=re.M)
        if long:
            lines = [line[1:] for line in long.group(1).splitlines()]
            yield from prose("\n".join("" if line.strip() == "." else line for line in lines))


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
    parser.add_argument("--debian", action="store_true", help=f"the Debian packages' descriptions in {DPKG_STATUS} "
                                                               "instead (no folders)")
    parser.add_argument("--exclude", type=Path, action="append", default=[],
                        help="a corpus (one sentence a line) whose sentences and near copies are left out (repeatable)")
    parser.add_argument("--limit", type=int, help="at most this many sentences, a seeded random choice of them")
    args = parser.parse_args(argv)
    for exclude in args.exclude:
        if not exclude.is_file():
            parser.error(f"--exclude {exclude}: no such file (expected a corpus, one sentence a line)")
    if args.debian and (args.docstrings or args.folders):
        parser.error("--debian reads dpkg's status file: give no --docstrings and no folders with it")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, but got {args.limit}")
    folders = [DPKG_STATUS] if args.debian else args.folders or [Path(p) for p in site.getsitepackages()]
    source = debian_descriptions if args.debian else docstrings if args.docstrings else descriptions
    texts = list(dict.fromkeys(s for folder in folders for s in source(folder)))
    for exclude in args.exclude:
        kept = without_near_copies(texts, exclude.read_text().splitlines())
        print(f"left out {len(texts) - len(kept)} sentences sharing {SHINGLE} words in a row with {exclude}")
        texts = kept
    if args.limit is not None and len(texts) > args.limit:
        texts = random.Random(0).sample(texts, args.limit)
    args.output.write_text("\n".join(texts) + "\n")
    print(f"{args.output}: {len(texts)} sentences from {', '.join(map(str, folders))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
