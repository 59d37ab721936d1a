"""gptbook.train on tiny configs: schedule shape, the loop learns, checkpoints, the cached model."""
import math

import pytest
import torch

from gptbook import config, data, train
from gptbook.model import GPT

TEXT = ("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
        "The slings and arrows of outrageous fortune,\n") * 200


def tiny_profile(**kw):
    base = dict(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=32, batch_size=4,
                max_steps=5, warmup_steps=2, eval_interval=2, eval_iters=2, corpus_chars=20000,
                threads=None)
    base.update(kw)
    return config.get_profile("quick", **base)


def test_lr_at_warmup_then_cosine():
    lrs = [train.lr_at(s, 1.0, 0.1, warmup=10, total=100) for s in range(120)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))          # linear warm-up rises
    assert lrs[9] == pytest.approx(1.0)                             # peak at the end of warm-up
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))    # cosine decays
    assert lrs[55] == pytest.approx(0.55, abs=0.01)                 # half way: the mean of max and min
    assert lrs[100:] == [0.1] * 20                                  # min_lr after the end


def test_batch_fn_targets_are_shifted_inputs():
    tokens = torch.arange(100)
    x, y = train.batch_fn(tokens, 8, 3, torch.Generator().manual_seed(0))()
    assert x.shape == y.shape == (3, 8)
    torch.testing.assert_close(y, x + 1)
    with pytest.raises(ValueError, match="block_size"):
        train.batch_fn(torch.arange(5), 8, 3, torch.Generator())


def test_loss_goes_down_on_a_memorisable_batch(tiny_config):
    model = GPT(tiny_config)
    x = torch.randint(0, tiny_config.vocab_size, (4, tiny_config.block_size))
    y = torch.roll(x, -1, dims=1)
    cfg = tiny_profile(learning_rate=1e-2, min_lr=1e-3, warmup_steps=5)
    hist = train.train(model, lambda device: (x, y), cfg, max_steps=60, progress=False)
    assert hist.train_loss[0] > math.log(tiny_config.vocab_size) - 0.5   # starts near uniform
    assert hist.train_loss[-1] < 0.3 * hist.train_loss[0]
    assert hist.tokens_seen == 60 * x.numel()


def test_grad_accum_counts_all_micro_batches(tiny_config):
    model = GPT(tiny_config)
    x = torch.randint(0, tiny_config.vocab_size, (2, tiny_config.block_size))
    hist = train.train(model, lambda device: (x, x), tiny_profile(), max_steps=3, grad_accum=2,
                       progress=False)
    assert hist.tokens_seen == 3 * 2 * x.numel()


def test_stream_loss_is_the_mean_over_all_windows(tiny_config):
    model = GPT(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (5 * tiny_config.block_size + 3,))
    loss, n = train.stream_loss(model, ids, batch_size=2)
    T = tiny_config.block_size
    windows = [(ids[i:i + T], ids[i + 1:i + T + 1]) for i in range(0, len(ids) - T, T)]
    with torch.no_grad():
        ref = sum(model(a[None], b[None]).loss.item() * T for a, b in windows) / (len(windows) * T)
    assert n == len(windows) * T
    assert loss == pytest.approx(ref, rel=1e-5)


def test_checkpoint_round_trip(tmp_path, tiny_config):
    model = GPT(tiny_config).eval()
    train.save_checkpoint(model, tmp_path / "m.pt", {"history": {"steps": [0, 1]}})
    loaded, extra = train.load_checkpoint(tmp_path / "m.pt")
    x = torch.randint(0, tiny_config.vocab_size, (2, 8))
    torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    assert loaded.config == model.config and extra == {"history": {"steps": [0, 1]}}
    assert loaded.lm_head.weight is loaded.transformer.wte.weight      # tying survives loading


@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTBOOK_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "load_shakespeare", lambda max_chars=None: TEXT[:max_chars])
    monkeypatch.setattr(data, "load_chinese_text", lambda max_chars=None: "天下大事，分久必合。\n" * 300)
    return tmp_path


def test_pretrained_trains_once_then_loads(small_corpus, monkeypatch):
    cfg = tiny_profile()
    m1, tok, h1 = train.pretrained(cfg, progress=False)
    assert len(h1.train_loss) == cfg.max_steps and h1.val_loss
    assert list((small_corpus / "models").glob("*.pt"))

    def no_training(*a, **k):
        raise AssertionError("pretrained() trained again although the cache holds the model")
    monkeypatch.setattr(train, "pretrain", no_training)
    m2, tok2, h2 = train.pretrained(cfg, progress=False)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    assert h2.train_loss == h1.train_loss and tok2.get_vocab() == tok.get_vocab()
    # a different pre-training setting is a different cached model
    with pytest.raises(AssertionError, match="trained again"):
        train.pretrained(tiny_profile(max_steps=6), progress=False)


def test_cached_model_builds_once_then_loads(small_corpus, tiny_config):
    """The one load-or-build of every cached model: build() runs when the file is missing or on
    retrain; a GPT comes back from its saved config, a head is loaded `into` the given module."""
    path = train.model_path("toy", 3, 0.5)
    assert path == small_corpus / "models" / "toy-3-0.5.pt"
    built = []

    def build():
        built.append(1)
        return GPT(tiny_config), {"history": {"steps": [len(built)]}}
    m1, e1 = train.cached_model(path, build, "the toy model")
    m2, e2 = train.cached_model(path, build, "the toy model")
    assert len(built) == 1 and e1 == e2 == {"history": {"steps": [1]}} and not m2.training
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    _, e3 = train.cached_model(path, build, "the toy model", retrain=True)
    assert len(built) == 2 and e3 == {"history": {"steps": [2]}}
    head = torch.nn.Linear(4, 2)                                   # not a GPT: weights only, no config
    hp = train.model_path("head")
    train.cached_model(hp, lambda: (head, {"n": 1}), "the head")
    into = torch.nn.Linear(4, 2)
    loaded, extra = train.cached_model(hp, build, "the head", into=into)
    assert loaded is into and extra == {"n": 1} and torch.equal(into.weight, head.weight)
    # a head file written before save_checkpoint took heads: extras at the top level
    torch.save({"state_dict": head.state_dict(), "history": {"steps": [7]}}, hp)
    assert train.load_checkpoint(hp, into=torch.nn.Linear(4, 2))[1] == {"history": {"steps": [7]}}
    hp.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(data.SetupError, match="fine-tunes it again"):
        train.cached_model(hp, build, "the head", rebuild="the next run fine-tunes it again", into=into)


def test_random_batches_draw_like_one_randint(tiny_config):
    """Every batch sampler draws its indices with one torch.randint on its generator, in that order:
    the stored chapter numbers depend on it."""
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    get = train.random_batches(50, 4, g, lambda ix: (torch.tensor(ix),))
    for _ in range(3):
        (ix,) = get()
        assert ix.tolist() == torch.randint(50, (4,), generator=ref).tolist()
    tokens = torch.arange(100)
    x, _ = train.batch_fn(tokens, 8, 3, torch.Generator().manual_seed(0))()
    starts = torch.randint(100 - 8 - 1, (3,), generator=torch.Generator().manual_seed(0))
    assert x[:, 0].tolist() == starts.tolist()


def test_length_grouped_batches_pad_less_and_draw_from_one_generator():
    """Each group of batches is one torch.randint (the same indices random_batches would draw, in
    another order), sorted by length, served in the order of one torch.randperm: batches of like
    length, so much less padding, and the same batches again from the same seed."""
    lengths = [1 + (7 * i) % 100 for i in range(500)]
    take = lambda ix: (torch.tensor(ix),)                                    # noqa: E731
    g, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    get = train.length_grouped_batches(lengths, 4, g, take, group=3)
    got = [get()[0].tolist() for _ in range(3)]
    drawn = torch.randint(500, (12,), generator=ref).tolist()
    assert sorted(i for b in got for i in b) == sorted(drawn)                # the same draws
    assert all(len(b) == 4 for b in got)
    for b in got:
        assert [lengths[i] for i in b] == sorted(lengths[i] for i in b)
    again = train.length_grouped_batches(lengths, 4, torch.Generator().manual_seed(5), take, group=3)
    assert [again()[0].tolist() for _ in range(3)] == got
    # padding: the mean longest-in-batch over many batches falls well below random batches'
    grouped = train.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(0), take)
    plain = train.random_batches(len(lengths), 16, torch.Generator().manual_seed(0), take)
    longest = lambda get: sum(max(lengths[i] for i in get()[0].tolist()) for _ in range(80)) / 80   # noqa: E731
    assert longest(grouped) < 0.8 * longest(plain)
    with pytest.raises(ValueError, match="group must be >= 1"):
        train.length_grouped_batches(lengths, 4, g, take, group=0)


def test_autocast_leaves_the_cpu_alone_unless_asked():
    assert not torch.is_autocast_enabled("cpu")
    with train.autocast("cpu", "bfloat16"):
        assert not torch.is_autocast_enabled("cpu")                 # training on a CPU stays float32
    with train.autocast("cpu", "bfloat16", gpu_only=False):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with train.autocast("cpu", "float32", gpu_only=False):
        assert not torch.is_autocast_enabled("cpu")


def test_stream_loss_windows_can_be_shorter_than_the_context(tiny_config):
    model = GPT(tiny_config).eval()
    ids = torch.randint(0, tiny_config.vocab_size, (50,))
    loss, n = train.stream_loss(model, ids, block_size=8, max_windows=3)
    x, y = ids[:24].view(3, 8), ids[1:25].view(3, 8)
    with torch.no_grad():
        assert n == 24 and loss == pytest.approx(model(x, y).loss.item(), rel=1e-6)


def test_hf_train_runs_trainer_and_updates_weights(tiny_config):
    from gptbook.hf import from_hf, to_hf
    hf_model = to_hf(GPT(tiny_config))
    before = hf_model.transformer.h[0].attn.c_attn.weight.detach().clone()
    ids = torch.randint(0, tiny_config.vocab_size, (500,))
    losses = train.hf_train(hf_model, ids, tiny_profile(), steps=3, learning_rate=1e-2)
    assert len(losses) == 3 and all(math.isfinite(l) for l in losses)
    assert not torch.equal(before, hf_model.transformer.h[0].attn.c_attn.weight)
    from_hf(hf_model)                          # still converts back to the book's GPT


def test_batch_fn_takes_targets_from_a_masked_copy():
    tokens = torch.arange(50)
    masked = torch.where(tokens % 2 == 0, tokens, torch.full_like(tokens, -100))
    x, y = train.batch_fn(tokens, 8, 4, torch.Generator().manual_seed(0), targets=masked)()
    x0, y0 = train.batch_fn(tokens, 8, 4, torch.Generator().manual_seed(0))()
    assert torch.equal(x, x0)                                   # the same windows
    assert torch.equal(y[y != -100], y0[y != -100]) and (y == -100).sum() == (y0 % 2 == 1).sum()
    with pytest.raises(ValueError, match="shape"):
        train.batch_fn(tokens, 8, 4, torch.Generator(), targets=masked[:-1])


def test_corrupt_cached_model_and_tokenizer_say_cause_and_fix(small_corpus):
    """A truncated checkpoint or tokenizer file: one line naming the file, the cause and the fix,
    not torch's zip-reader traceback (what `serve` and the chapters used to show)."""
    from gptbook import tokenizer
    cfg = tiny_profile()
    ck = train.model_path(train.pretrained_key(cfg))
    assert ck == small_corpus / "models" / f"{train.pretrained_key(cfg)}.pt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(data.SetupError) as e:
        train.pretrained(cfg, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and str(ck) in msg and "unreadable" in msg and f"rm '{ck}'" in msg
    assert "python -m gptbook run 03" in msg
    tok = small_corpus / "tokenizer" / f"bpe-{cfg.vocab_size}-{cfg.corpus_chars or 'all'}.json"
    tok.parent.mkdir(parents=True)
    tok.write_text('{"version": "1.0", "trunc')
    with pytest.raises(data.SetupError, match=r"the cached file .*bpe-.* is unreadable .*fix: delete it"):
        tokenizer.book_tokenizer(cfg.vocab_size, cfg.corpus_chars)


def test_pretrain_cli_refuses_bad_settings(capsys):
    from gptbook.cli import pretrain
    with pytest.raises(SystemExit):
        pretrain.parse(["--set", "max_stepz=3"])
    assert "unknown setting" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain.parse(["--set", "max_steps"])
    assert pretrain.parse(["--set", "max_steps=3"]).settings == [("max_steps", 3)]
