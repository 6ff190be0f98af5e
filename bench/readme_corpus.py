"""A held-out English corpus for text benchmarks: the prose sentences of installed packages' descriptions.

The built-in ``python-docs`` corpus is what the text students were developed on; this one is not. It reads the long
description (the README) in every ``*.dist-info/METADATA`` under the given folders, drops code, tables, lists and
links, and keeps the sentences of 6-40 words, once each. Which sentences it finds depends on what is installed, so
the file it writes is reported with its line count::

    python bench/readme_corpus.py OUT.txt [SITE_PACKAGES ...]   # default: this interpreter's site-packages
"""

from __future__ import annotations

import re
import site
import sys
from collections.abc import Iterator, Sequence
from email import message_from_string
from pathlib import Path

_SKIP = re.compile(r"\s*([#|>*\-+=:.]|\d+\.|\s{4})")  # headings, tables, quotes, lists, rules, indented code
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN = re.compile(r"[\w\s,.;:'()!?%/-]+")


def sentences(folder: Path) -> Iterator[str]:
    """The prose sentences of every package description under ``folder``."""
    for metadata in sorted(folder.glob("*.dist-info/METADATA")):
        message = message_from_string(metadata.read_text(errors="ignore"))
        body = re.sub(r"```.*?```", " ", str(message.get_payload() or message.get("Description", "")), flags=re.S)
        for paragraph in re.split(r"\n\s*\n", body):
            if _SKIP.match(paragraph) or "http" in paragraph or "`" in paragraph:
                continue
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                if (6 <= len(sentence.split()) <= 40 and sentence[0].isupper() and sentence[-1] in ".!?"
                        and _PLAIN.fullmatch(sentence)):
                    yield sentence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    output, folders = Path(args[0]), [Path(f) for f in args[1:]] or [Path(p) for p in site.getsitepackages()]
    texts = list(dict.fromkeys(s for folder in folders for s in sentences(folder)))
    output.write_text("\n".join(texts) + "\n")
    print(f"{output}: {len(texts)} sentences from {', '.join(map(str, folders))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
