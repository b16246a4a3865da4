"""WordNet as a reverse dictionary: the development corpus for text (Debian's wordnet-base, scripts/get-wordnet.sh).

Each synset's gloss (its definition, without the quoted examples, which often contain the word itself) is a query;
its first lemma is the relevant document. Documents are the distinct first lemmas ("take_a_breath" reads
"take a breath"), so a word that heads several synsets is one document with several queries. Verbs, adjectives and
adverbs only (~35k synsets); the noun file is left alone.

    python -m mrl.text.wordnet --out artifacts/text/wordnet.jsonl
    mrl ingest --source text --input artifacts/text/wordnet.jsonl --output artifacts/text/wordnet.npz
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from mrl.data.artifact import atomic_write
from mrl.errors import MRLError

DEFAULT_DIR = "/usr/share/wordnet"
PARTS = {"verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}  # no nouns: the development set
_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers: beautiful(a), galore(ip)


def parse_data_line(line: str) -> tuple[str, str, str] | None:
    """(synset id, first lemma, definition) of one line of a WordNet data file; None for the licence header."""
    if line.startswith("  ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    fields = head.split()
    offset, pos, w_cnt = fields[0], fields[2], int(fields[3], 16)
    if w_cnt < 1:
        return None
    lemma = _MARKER.sub("", fields[4])
    definition = gloss.split('; "')[0].split('"')[0].strip().rstrip(";").strip()
    return f"{pos}{offset}", lemma, definition


def read_wordnet(directory: str | Path = DEFAULT_DIR, parts: tuple[str, ...] = tuple(PARTS)) -> list[dict]:
    """Rows of the text table: one document per distinct first lemma, then one query per synset (form 1 pairs:
    the query's `positive` names its lemma's document id)."""
    directory = Path(directory)
    documents: dict[str, str] = {}
    queries = []
    for part in parts:
        path = directory / PARTS[part]
        if not path.is_file():
            raise MRLError(f"{path}: WordNet data file not found (install Debian's wordnet-base: "
                           "bash scripts/get-wordnet.sh)")
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                parsed = parse_data_line(line)
                if parsed is None or not parsed[2]:
                    continue
                synset, lemma, definition = parsed
                documents.setdefault(lemma, lemma.replace("_", " "))
                queries.append({"id": synset, "text": definition, "positive": lemma})
    if not queries:
        raise MRLError(f"{directory}: no synsets read from {', '.join(PARTS[p] for p in parts)}")
    return [{"id": lemma, "text": text} for lemma, text in documents.items()] + queries


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def main() -> None:  # pragma: no cover
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", default=DEFAULT_DIR)
    parser.add_argument("--out", required=True, help="JSONL table to write (documents and queries)")
    args = parser.parse_args()
    rows = read_wordnet(args.wordnet_dir)
    n_queries = sum("positive" in r for r in rows)
    print(f"wrote {write_jsonl(rows, args.out)}: {len(rows) - n_queries:,} documents, {n_queries:,} queries")


if __name__ == "__main__":  # pragma: no cover
    main()
