"""The shipped broad model (gptbook/weights): its files are the ones the manifest records, its recorded
validation loss is what it scores, and its pre-training corpus holds none of the texts that the
transfer experiments test on."""
import json

import pytest
import torch

from gptbook import config, data, train
from gptbook.finetune import transfer


@pytest.fixture(scope="module")
def cfg():
    return config.setup("quick")


def test_manifest_matches_the_files_and_the_quick_profile(cfg):
    man = train.shipped_manifest()
    assert man["command"].startswith("python -m gptbook pretrain --corpus broad")
    for what, name in (("weights", "book-broad.pt"), ("tokenizer", "book-broad.tokenizer.json")):
        path = train.WEIGHTS_DIR / name
        assert data.sha256(path) == man["sha256"][what]
        assert path.stat().st_size < 25e6                     # the repository's limit for shipped files
    model, tok, hist = train.pretrained(cfg, weights="book-broad")
    assert model.config == cfg.model_config() and tok.get_vocab_size() == cfg.vocab_size
    assert hist.tokens_seen == man["tokens_seen"] and len(hist.val_loss) >= 2


def test_a_changed_file_is_refused(cfg, tmp_path):
    for name in ("book-broad.pt", "book-broad.json"):
        (tmp_path / name).write_bytes((train.WEIGHTS_DIR / name).read_bytes())
    (tmp_path / "book-broad.tokenizer.json").write_text(
        json.dumps(json.loads((train.WEIGHTS_DIR / "book-broad.tokenizer.json").read_text())) + " ")
    with pytest.raises(data.SetupError, match="sha256"):
        train.shipped_model(cfg, tmp_path)


def test_another_profile_is_told_what_fits(cfg):
    with pytest.raises(ValueError, match="quick profile"):
        train.shipped_model(config.setup("quick", n_layer=2))


@pytest.mark.slow
def test_recorded_validation_loss_is_what_the_model_scores(cfg):
    """The manifest's figure is recomputed (every validation token); floats differ a little across CPUs."""
    man = train.shipped_manifest()
    model, tok, _ = train.shipped_model(cfg)
    _, val_ids = train.broad_corpus_tokens(cfg, tok)
    loss, n = train.stream_loss(model, val_ids)
    assert n == man["val_tokens"]
    assert loss == pytest.approx(man["val_loss"], abs=2e-3)


def test_no_test_text_in_the_pretraining_corpus():
    docs = data.broad_corpus()
    seen = {t.strip() for source, ds in docs.items() if source != "shakespeare" for t in ds}
    seen |= {t.split("\n")[0].strip() for t in docs["dialogue english"]}    # a dialogue is "question\nanswer"
    labelled = {"movie": [t for t, _, _ in data.load_vader("movie")],
                "chinese reviews": [t for t, _ in data.load_chinese_sentiment()],
                "people's daily": data.people_daily_sentences(),
                "dialogue questions": [q for q, _, _ in data.load_dialogues("english")]}
    for name, texts in labelled.items():
        held = {t.strip() for t in texts if data.heldout(t)}
        assert 0.15 < len(held) / len(set(texts)) < 0.25, name            # about one in five is held out
        assert not held & seen, f"{name}: held-out texts in the pre-training corpus"
    pool, test = transfer.heldout_split(data.load_vader("movie"))
    assert {r[0].strip() for r in test} <= {t.strip() for t in labelled["movie"] if data.heldout(t)}
    assert not {r[0].strip() for r in test} & {r[0].strip() for r in pool}


def test_heldout_is_decided_by_the_text_alone():
    assert data.heldout("a text") == data.heldout("  a text\n")
    share = sum(data.heldout(f"sentence {i}") for i in range(5000)) / 5000
    assert 0.17 < share < 0.23


@pytest.mark.slow
def test_english_validation_stretch_is_not_trained_on(cfg):
    from gptbook.tokenizer import book_tokenizer
    tok = book_tokenizer(cfg.vocab_size, cfg.corpus_chars)
    train_ids, _ = train.broad_corpus_tokens(cfg, tok)
    _, val_text = train.shakespeare_val(cfg, tok)
    probe = torch.tensor(tok.encode(val_text[1000:1400]).ids[5:60])     # a stretch from inside it
    windows = train_ids.unfold(0, probe.numel(), 1)
    assert not (windows == probe).all(1).any()
