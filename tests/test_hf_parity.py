"""The book's GPT and Hugging Face's GPT-2 compute the same function (random weights, no download)."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

from gptbook.hf import from_hf, from_hf_config, to_hf, to_hf_config
from gptbook.model import GPT, GPTConfig, count_params


def hf_config(**changes):
    kw = dict(vocab_size=97, n_positions=24, n_embd=32, n_layer=2, n_head=4,
              activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
              bos_token_id=96, eos_token_id=96)
    kw.update(changes)
    return GPT2Config(**kw)


def random_hf(cls=GPT2LMHeadModel, **changes):
    torch.manual_seed(0)
    hf = cls(hf_config(**changes)).eval()
    with torch.no_grad():   # HF zero-initialises biases; randomise them so a mis-copied bias shows
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return hf


def idx_for(config, B=2, T=11):
    return torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("flash", [True, False])
def test_from_hf_logits_agree(flash):
    hf = random_hf()
    gpt = from_hf(hf)
    if not flash:
        manual = GPT(gpt.config.replace(flash=False)).eval()
        manual.load_state_dict(gpt.state_dict())
        gpt = manual
    idx = idx_for(gpt.config)
    with torch.no_grad():
        torch.testing.assert_close(gpt(idx).logits, hf(idx).logits, rtol=1e-5, atol=1e-5)


def test_loss_agrees():
    hf = random_hf()
    gpt = from_hf(hf)
    idx = idx_for(gpt.config)
    with torch.no_grad():
        ours = gpt(idx[:, :-1], targets=idx[:, 1:]).loss
        theirs = hf(idx, labels=idx).loss          # HF shifts the labels itself
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_to_hf_logits_agree_and_round_trip(tiny_config):
    torch.manual_seed(0)
    gpt = GPT(tiny_config).eval()
    hf = to_hf(gpt)
    assert isinstance(hf, GPT2LMHeadModel)
    idx = idx_for(tiny_config)
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, gpt(idx).logits, rtol=1e-5, atol=1e-5)
    back = from_hf(hf)
    assert back.config == gpt.config
    for (k, a), (k2, b) in zip(gpt.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    # the HF copy keeps weight tying
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()


def test_dropout_config_in_eval_mode():
    hf = random_hf(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    gpt = from_hf(hf)
    assert gpt.config.dropout == 0.1 and not gpt.training
    idx = idx_for(gpt.config)
    with torch.no_grad():
        torch.testing.assert_close(gpt(idx).logits, hf(idx).logits, rtol=1e-5, atol=1e-5)
    # and in training mode dropout really is active (two calls differ)
    gpt.train()
    with torch.no_grad():
        assert not torch.equal(gpt(idx).logits, gpt(idx).logits)


def test_gpt2model_without_head():
    hf = random_hf(cls=GPT2Model)
    gpt = from_hf(hf)
    idx = idx_for(gpt.config)
    with torch.no_grad():
        h_hf = hf(idx).last_hidden_state
        out = gpt(idx)
    torch.testing.assert_close(out.hidden_states, h_hf, rtol=1e-5, atol=1e-5)
    # and back again into a bare GPT2Model
    bare = to_hf(gpt, cls=GPT2Model)
    with torch.no_grad():
        torch.testing.assert_close(bare(idx).last_hidden_state, h_hf, rtol=1e-5, atol=1e-5)


def test_names_line_up():
    hf = random_hf()
    gpt = from_hf(hf)
    ours = set(gpt.state_dict())
    theirs = {k for k in hf.state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert ours == theirs


def test_config_round_trip(tiny_config):
    assert from_hf_config(to_hf_config(tiny_config)) == tiny_config
    c = to_hf_config(tiny_config.replace(dropout=0.2))
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.2, 0.2, 0.2)
    assert c.activation_function == "gelu_new"


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_mismatched_activation_raises(act):
    with pytest.raises(ValueError, match="tanh GELU"):
        from_hf(GPT2LMHeadModel(hf_config(activation_function=act)))


def test_exact_gelu_would_not_match():
    # why the activation check exists: exact GELU and tanh GELU give different logits
    hf = random_hf()
    with torch.no_grad():   # GPT-2-sized pre-activations (init std 0.02 keeps them tiny)
        for block in hf.transformer.h:
            block.mlp.c_fc.weight.normal_(0, 1.0)
    gpt = from_hf(hf)
    hf.config.activation_function = "gelu"
    exact = GPT2LMHeadModel(hf.config).eval()
    exact.load_state_dict(hf.state_dict())
    idx = idx_for(gpt.config)
    with torch.no_grad():
        assert not torch.allclose(exact(idx).logits, gpt(idx).logits, rtol=1e-6, atol=1e-6)


def test_bias_free_config_cannot_convert(tiny_config):
    with pytest.raises(ValueError, match="bias"):
        to_hf(GPT(tiny_config.replace(bias=False)))


def test_shape_mismatch_raises():
    hf = random_hf()
    gpt = GPT(GPTConfig(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32))
    from gptbook.hf import _copy
    sd = dict(hf.state_dict())
    sd["transformer.wpe.weight"] = sd["transformer.wpe.weight"][:10]
    with pytest.raises(ValueError, match="shape mismatch"):
        _copy(sd, gpt.state_dict(), "test")


# ---------------------------------------------------------------- OpenAI's GPT-2 weights (issue: weights=)

@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A Hugging Face GPT-2 checkpoint folder as save_pretrained writes it: GPT-2's real vocabulary
    (50257) and tokenizer, random weights, tiny width (what a reader's downloaded folder looks like)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)).eval()
    folder = tmp_path_factory.mktemp("gpt2-tiny")
    hf.save_pretrained(folder)
    return folder, hf


def test_gpt2_folder_loads_into_the_book_gpt_with_hf_logits(gpt2_folder):
    from gptbook import config, train
    folder, hf = gpt2_folder
    gpt, tok, hist = train.pretrained(config.get_profile("quick"), weights=str(folder))
    ids = tok.encode("The quick brown fox jumps over the lazy dog.").ids
    assert ids == [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]     # GPT-2's own ids
    x = torch.tensor([ids])
    with torch.no_grad():
        ours, theirs = gpt(x).logits[..., :50257], hf(x).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    pad = tok.token_to_id("<|pad|>")
    assert pad == 50257 == gpt.config.vocab_size - 1 and tok.token_to_id("<|endoftext|>") == 50256
    assert hist.steps == [] and tok.decode(ids) == "The quick brown fox jumps over the lazy dog."
    # padded batches work (the chapters' classifiers pad with <|pad|>)
    from gptbook.generate import pad as pad_batch
    xb, mask = pad_batch([ids, ids[:4]], pad, side="right")
    with torch.no_grad():
        out = gpt(xb, attention_mask=mask).logits
    torch.testing.assert_close(out[1, :4, :50257], theirs[0, :4], atol=1e-5, rtol=1e-5)


def test_gpt2_offline_names_the_cause_and_both_ways_out(monkeypatch, tmp_path):
    from gptbook import data, hf
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))            # an empty hub cache: nothing downloaded before
    with pytest.raises(data.SetupError) as e:
        hf.load_gpt2("gpt2")
    msg = str(e.value)
    assert "weights='book'" in msg and "save_pretrained" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="gpt2-medium"):
        hf.load_gpt2("gpt5")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(data.SetupError, match="cannot load GPT-2 weights"):
        hf.load_gpt2(str(empty))


@pytest.mark.network
@pytest.mark.online
def test_real_gpt2_small_perplexity():
    """Run this one on a machine with the internet (pytest -m network): OpenAI's gpt2 (124M) mapped into
    the book's GPT gives transformers' own loss on a sentence (1e-4), and a low perplexity there."""
    from transformers import GPT2LMHeadModel
    from gptbook import hf as hfmod
    from gptbook.tokenizer import gpt2_bpe
    try:
        theirs = GPT2LMHeadModel.from_pretrained("gpt2").eval()
    except OSError:
        pytest.skip("the Hugging Face hub is not reachable")
    gpt, tok = hfmod.load_gpt2("gpt2"), gpt2_bpe()
    x = torch.tensor([tok.encode("The capital of France is Paris, and the capital of Germany is Berlin.").ids])
    with torch.no_grad():
        ours = gpt(x[:, :-1], targets=x[:, 1:]).loss
        ref = theirs(x, labels=x).loss
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    assert count_params(gpt.config) > 124e6 and float(ours.exp()) < 60      # a real model, not random
