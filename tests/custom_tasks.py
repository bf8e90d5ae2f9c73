"""Data for the custom-task tests: the shared text data sets, and small files tests write."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pandas as pd

TEXT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"
# A topic task the tiny BERT can learn: each body holds its class's keyword.
TOPICS = {"business": "merger", "politics": "election", "weather": "storm"}
COLUMNS = ("title", "body", "topic")


def text_dir() -> Path:
    assert (TEXT_DIR / "CR" / "train.tsv").exists(), f"shared text data missing at {TEXT_DIR}"
    return TEXT_DIR


def topic_rows(count: int, seed: int = 3) -> list[dict[str, str]]:
    """`count` rows {title, body, topic}, the topics in turn; words from CR's sentences."""
    rng = random.Random(seed)
    lines = (text_dir() / "CR" / "train.tsv").read_text(encoding="utf-8").splitlines()
    keywords = set(TOPICS.values())
    words = sorted({w for line in lines[:400] for w in line.split("\t")[1].split()
                    if w.isalpha() and w not in keywords})
    names = sorted(TOPICS)
    rows = []
    for i in range(count):
        topic = names[i % len(names)]
        body = rng.sample(words, 5)
        body.insert(rng.randrange(6), TOPICS[topic])
        rows.append({"title": f"note {i} " + " ".join(rng.sample(words, 3)),
                     "body": " ".join(body), "topic": topic})
    return rows


def write_rows(rows: list[dict], path: Path, header: bool = True) -> Path:
    """`rows` as the file its extension names: .csv, .tsv (tab, no quoting), .jsonl, .parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path, index=False)
    else:
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",",
                                quoting=csv.QUOTE_NONE if suffix == ".tsv" else csv.QUOTE_MINIMAL,
                                escapechar="\\")
            if header:
                writer.writerow(list(rows[0]))
            writer.writerows([list(r.values()) for r in rows])
    return path
