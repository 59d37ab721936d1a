"""Unit tests of gptbook.model and gptbook.generate (tiny configs, CPU, seconds)."""
import pytest
import torch
import torch.nn.functional as F

from gptbook.generate import (apply_repetition_penalty, check_sampling, generate, left_pad,
                              sample_next)
from gptbook.model import GPT, PUBLISHED, GPTConfig, count_params


def make(config, **changes):
    torch.manual_seed(0)
    return GPT(config.replace(**changes)).eval()


def rand_idx(config, B=2, T=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, config.vocab_size, (B, T or config.block_size), generator=g)


# ------------------------------------------------------------------ forward, masks, paths

@pytest.mark.parametrize("flash", [True, False])
def test_causal_future_token_never_changes_earlier_logits(tiny_config, flash):
    model = make(tiny_config, flash=flash)
    idx = rand_idx(tiny_config, B=1)
    base = model(idx).logits
    T = idx.size(1)
    for t in (0, T // 2, T - 1):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % tiny_config.vocab_size
        out = model(changed).logits
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], base[:, t])  # the changed position itself does move


@pytest.mark.parametrize("B,T", [(1, 1), (2, 5), (3, 16)])
@pytest.mark.parametrize("n_head", [1, 2, 4])
def test_manual_equals_sdpa(tiny_config, B, T, n_head):
    manual = make(tiny_config, n_head=n_head, flash=False)
    sdpa = make(tiny_config, n_head=n_head, flash=True)
    sdpa.load_state_dict(manual.state_dict())
    idx = rand_idx(tiny_config, B=B, T=T)
    torch.testing.assert_close(sdpa(idx).logits, manual(idx).logits, rtol=1e-5, atol=1e-5)


def test_manual_equals_sdpa_with_padding_mask(tiny_config):
    manual = make(tiny_config, flash=False)
    sdpa = make(tiny_config, flash=True)
    sdpa.load_state_dict(manual.state_dict())
    idx, mask = left_pad([[5, 6, 7, 8], [9, 10]], pad_id=0)
    torch.testing.assert_close(sdpa(idx, attention_mask=mask).logits,
                               manual(idx, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)


def test_loss_is_cross_entropy_and_ignore_index(tiny_config):
    model = make(tiny_config)
    idx = rand_idx(tiny_config, T=8)
    targets = rand_idx(tiny_config, T=8, seed=2)
    out = model(idx, targets)
    ref = F.cross_entropy(out.logits.reshape(-1, tiny_config.vocab_size), targets.reshape(-1))
    torch.testing.assert_close(out.loss, ref)
    targets[:, :4] = -100
    out = model(idx, targets)
    ref = F.cross_entropy(out.logits[:, 4:].reshape(-1, tiny_config.vocab_size),
                          targets[:, 4:].reshape(-1))
    torch.testing.assert_close(out.loss, ref)


def test_weight_tying(tiny_config):
    model = make(tiny_config)
    assert model.lm_head.weight is model.transformer.wte.weight
    untied = sum(p.numel() for p in model.parameters()) + model.lm_head.weight.numel()
    assert untied - model.num_params() == tiny_config.vocab_size * tiny_config.n_embd


# ------------------------------------------------------------------ parameter counts

@pytest.mark.parametrize("changes", [{}, {"bias": False}, {"n_layer": 3, "n_head": 4, "n_embd": 48},
                                     {"vocab_size": 1000, "block_size": 7}])
def test_count_params_equals_numel(tiny_config, changes):
    config = tiny_config.replace(**changes)
    model = GPT(config)
    assert count_params(config) == sum(p.numel() for p in model.parameters())
    assert count_params(config, include_embeddings=False) == model.num_params(include_embeddings=False)


@pytest.mark.parametrize("name", ["GPT-1", "GPT-2 small", "GPT-2 medium"])
def test_count_params_published_on_meta_device(name):
    config = PUBLISHED[name]
    with torch.device("meta"):
        model = GPT(config)
    assert count_params(config) == sum(p.numel() for p in model.parameters())


def test_published_counts_match_the_papers():
    millions = {k: count_params(c) / 1e6 for k, c in PUBLISHED.items()}
    assert round(millions["GPT-1"]) == 117
    assert round(millions["GPT-2 small"]) == 124
    assert round(millions["GPT-2 medium"]) == 355
    assert round(millions["GPT-2 large"]) == 774
    assert round(millions["GPT-2 XL"] / 1e3, 1) == 1.6       # reported as "1.5B"
    assert round(millions["GPT-3 175B"] / 1e3) == 175


# ------------------------------------------------------------------ clear errors

def test_bad_inputs_raise_clear_errors(tiny_config):
    model = make(tiny_config)
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(TypeError, match="integer tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"idx\[None\]"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="block_size"):
        model(rand_idx(tiny_config, T=tiny_config.block_size + 1))
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.tensor([[1, tiny_config.vocab_size]]))
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(rand_idx(tiny_config, T=4), targets=rand_idx(tiny_config, T=5))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(rand_idx(tiny_config, T=4), attention_mask=torch.ones(2, 5))


def test_bad_configs_raise(tiny_config):
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        tiny_config.replace(n_embed=64)
    with pytest.raises(ValueError, match="positive int"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout"):
        GPTConfig(dropout=1.0)
    with pytest.raises(TypeError, match="GPTConfig"):
        GPT({"n_layer": 2})


def test_bad_sampling_settings_raise(tiny_config):
    model = make(tiny_config)
    idx = rand_idx(tiny_config, T=4)
    for kw, msg in [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"),
                    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"),
                    ({"repetition_penalty": 0}, "repetition_penalty"),
                    ({"temperature": float("nan")}, "temperature must be a finite"),   # NaN < 0 is False
                    ({"temperature": float("inf")}, "temperature must be a finite"),
                    ({"top_p": float("nan")}, "top_p"),
                    ({"repetition_penalty": float("nan")}, "repetition_penalty must be a finite"),
                    ({"repetition_penalty": float("inf")}, "repetition_penalty must be a finite")]:
        with pytest.raises(ValueError, match=msg):
            check_sampling(**kw)
        with pytest.raises(ValueError, match=msg):
            generate(model, idx, 2, **kw)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, idx, -1)
    with pytest.raises(ValueError, match="block_size"):
        generate(model, idx, tiny_config.block_size, use_cache=True)
    with pytest.raises(ValueError, match="non-empty"):
        left_pad([[1], []], pad_id=0)


# ------------------------------------------------------------------ KV cache

@pytest.mark.parametrize("flash", [True, False])
def test_cached_forward_equals_full_forward(tiny_config, flash):
    model = make(tiny_config, flash=flash)
    idx = rand_idx(tiny_config, T=12)
    full = model(idx).logits
    out = model(idx[:, :5])
    pieces = [out.logits]
    for t in range(5, 12, 3):   # feed the rest in chunks of 3, 3, 1
        out = model(idx[:, t:t + 3], past_key_values=out.past_key_values)
        pieces.append(out.logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    assert out.past_key_values[0][0].shape == (2, tiny_config.n_head, 12,
                                               tiny_config.n_embd // tiny_config.n_head)


def test_cache_too_long_raises(tiny_config):
    model = make(tiny_config)
    out = model(rand_idx(tiny_config, T=tiny_config.block_size))
    with pytest.raises(ValueError, match="block_size"):
        model(rand_idx(tiny_config, T=1), past_key_values=out.past_key_values)


@pytest.mark.parametrize("sampling", [dict(temperature=0.0),
                                      dict(temperature=1.0),
                                      dict(temperature=0.8, top_k=5),
                                      dict(temperature=1.2, top_p=0.9)])
def test_generate_cache_equals_no_cache(tiny_config, sampling):
    model = make(tiny_config)
    idx = rand_idx(tiny_config, T=4)
    a = generate(model, idx, 10, use_cache=True, generator=torch.Generator().manual_seed(3), **sampling)
    b = generate(model, idx, 10, use_cache=False, generator=torch.Generator().manual_seed(3), **sampling)
    assert a.shape == (2, 14)
    assert torch.equal(a, b)
    assert torch.equal(a[:, :4], idx)


def test_generate_cache_equals_no_cache_manual_path(tiny_config):
    model = make(tiny_config, flash=False)
    idx, mask = left_pad([[3, 4, 5, 6], [7, 8]], pad_id=1)
    a = generate(model, idx, 8, temperature=0, use_cache=True, attention_mask=mask)
    b = generate(model, idx, 8, temperature=0, use_cache=False, attention_mask=mask)
    assert torch.equal(a, b)


def test_generate_without_cache_slides_past_block_size(tiny_config):
    model = make(tiny_config)
    out = generate(model, rand_idx(tiny_config, T=10), 20, temperature=0, use_cache=False)
    assert out.shape == (2, 30)


def test_generate_restores_training_mode(tiny_config):
    model = make(tiny_config).train()
    generate(model, rand_idx(tiny_config, T=3), 2, temperature=0)
    assert model.training


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_batched_left_padded_equals_unbatched(tiny_config, use_cache, penalty):
    model = make(tiny_config)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(2, tiny_config.vocab_size, (n,), generator=g).tolist() for n in (3, 7, 5)]
    idx, mask = left_pad(prompts, pad_id=0)
    batched = generate(model, idx, 6, temperature=0, use_cache=use_cache, attention_mask=mask,
                       repetition_penalty=penalty)
    for i, p in enumerate(prompts):
        single = generate(model, torch.tensor([p]), 6, temperature=0, use_cache=use_cache,
                          repetition_penalty=penalty)
        assert batched[i, idx.size(1):].tolist() == single[0, len(p):].tolist()
    # the last-position logits agree too (not only their argmax)
    last = model(idx, attention_mask=mask).logits[:, -1]
    for i, p in enumerate(prompts):
        torch.testing.assert_close(last[i], model(torch.tensor([p])).logits[0, -1],
                                   rtol=1e-5, atol=1e-5)


def test_repetition_penalty_ignores_padding(tiny_config):
    # regression: pad slots used to count as "seen" tokens, so a padded row's generation differed
    # from the same prompt alone whenever the pad id was a likely next token (GPT-2 pads with eos)
    model = make(tiny_config)
    prompts = [[5, 9, 3], [7, 1, 2, 8, 4, 6, 11]]
    single = generate(model, torch.tensor([prompts[0]]), 6, temperature=0, repetition_penalty=2.0)
    pad_id = int(single[0, 3])              # the padded row's own first choice
    idx, mask = left_pad(prompts, pad_id=pad_id)
    batched = generate(model, idx, 6, temperature=0, attention_mask=mask, repetition_penalty=2.0)
    assert batched[0, idx.size(1):].tolist() == single[0, 3:].tolist()


def test_left_pad():
    idx, mask = left_pad([[1, 2, 3], [4]], pad_id=9)
    assert idx.tolist() == [[1, 2, 3], [9, 9, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# ------------------------------------------------------------------ sampling rules

def _sample_set(logits, n=4000, **kw):
    g = torch.Generator().manual_seed(0)
    return sample_next(logits.expand(n, -1), generator=g, **kw).squeeze(1)


def test_temperature_zero_is_argmax():
    logits = torch.randn(8, 50)
    assert torch.equal(sample_next(logits, temperature=0).squeeze(1), logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=0, top_k=3, top_p=0.5).squeeze(1),
                       logits.argmax(-1))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 2.5, 0.0]])
    drawn = _sample_set(logits, top_k=3)
    assert set(drawn.tolist()) == {1, 3, 4}
    # within the kept set the probabilities are the renormalised softmax
    freq = torch.bincount(drawn, minlength=6).float() / len(drawn)
    expected = torch.zeros(6)
    expected[[1, 3, 4]] = F.softmax(logits[0, [1, 3, 4]], dim=0)
    torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([[0.2, 0.4, 0.1, 0.3]]).log()   # sorted: 1 (.4), 3 (.3), 0 (.2), 2 (.1)
    assert set(_sample_set(logits, top_p=0.65).tolist()) == {1, 3}      # .4 + .3 >= .65
    assert set(_sample_set(logits, top_p=0.75).tolist()) == {0, 1, 3}   # needs .2 more
    assert set(_sample_set(logits, top_p=0.3).tolist()) == {1}          # the top token always stays
    assert set(_sample_set(logits, top_p=1.0).tolist()) == {0, 1, 2, 3}


def test_seeded_sampling_repeats():
    logits = torch.randn(3, 20)
    a = sample_next(logits, generator=torch.Generator().manual_seed(7))
    b = sample_next(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_repetition_penalty():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, 0.5]]   # seen: 2 -> 1, -2 -> -4; unseen unchanged
    assert apply_repetition_penalty(logits, torch.tensor([[0]]), 1.0) is logits


def test_tiny_temperatures_and_penalties_are_the_greedy_limit_not_nan():
    logits = torch.randn(5, 50) * 10
    for t in (1e-40, 5e-324):   # logits / t overflows float32; 5e-324 is 0 in float32
        assert torch.equal(sample_next(logits, temperature=t).squeeze(1), logits.argmax(-1))
    # at t = 1e-37 the first row overflows (greedy); the second, of size ~1e-37, stays finite (sampled)
    mixed = torch.stack([logits[0], torch.randn(50) * 1e-37]).repeat(200, 1)
    drawn = sample_next(mixed, temperature=1e-37, generator=torch.Generator().manual_seed(0)).squeeze(1)
    assert (drawn[0::2] == logits[0].argmax()).all() and len(set(drawn[1::2].tolist())) > 5
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1]] * 5), 1e-300)
    assert torch.isfinite(out).all()
    assert sample_next(out, temperature=1.0, generator=torch.Generator().manual_seed(0)).shape == (5, 1)


def test_on_token_sees_each_step_and_can_stop(tiny_config):
    model = make(tiny_config)
    idx = rand_idx(tiny_config, B=1, T=3)
    seen = []
    out = generate(model, idx, 8, temperature=0, on_token=lambda t: seen.append(t.item()) or len(seen) == 3)
    assert out.shape == (1, 6) and seen == out[0, 3:].tolist()
    assert torch.equal(out, generate(model, idx, 3, temperature=0))   # stopping changes nothing before


def test_repetition_penalty_changes_greedy_generation(tiny_config):
    model = make(tiny_config)
    idx = rand_idx(tiny_config, B=1, T=3)
    plain = generate(model, idx, 12, temperature=0)
    penalised = generate(model, idx, 12, temperature=0, repetition_penalty=1e6)
    assert len(set(plain[0, 3:].tolist())) < 12            # greedy repeats itself here ...
    assert len(set(penalised[0, 3:].tolist())) > len(set(plain[0, 3:].tolist()))   # ... the penalty stops it
    # with a huge penalty no token already in the context wins while an unseen one has logit > 0
    with torch.no_grad():
        logits = model(penalised[:, :-1]).logits[0, 2:]     # row t: the logits new token t was picked from
    for t, row in enumerate(logits):
        seen = set(penalised[0, :3 + t].tolist())
        if any(row[v] > 0 for v in range(row.numel()) if v not in seen):
            assert int(penalised[0, 3 + t]) not in seen, t


def test_eos_stops_and_pads_finished_rows(tiny_config):
    model = make(tiny_config)
    idx = rand_idx(tiny_config, B=2, T=3)
    free = generate(model, idx, 8, temperature=0)
    eos = int(free[0, 3])                       # row 0's first new token becomes "end of text"
    out = generate(model, idx, 8, temperature=0, eos_token_id=eos)
    assert out[0, 3] == eos and (out[0, 3:] == eos).all()   # finished rows keep emitting eos
    row1 = free[1, 3:].tolist()
    stop = row1.index(eos) + 1 if eos in row1 else len(row1)
    assert out[1, 3:3 + stop].tolist() == row1[:stop]
    if eos not in row1:
        assert out.shape == free.shape
    # a single row stops at once
    one = generate(model, idx[:1], 8, temperature=0, eos_token_id=eos)
    assert one.shape == (1, 4)


# ------------------------------------------------------------------ features of GPT, not patches

def test_layer_norm_is_torchs_and_checkpoints_keep_their_keys(tiny_config):
    from gptbook import model as gm
    assert gm.LayerNorm is torch.nn.LayerNorm
    keys = set(make(tiny_config).state_dict())
    assert {"transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias", "transformer.ln_f.bias"} <= keys
    assert "transformer.ln_f.bias" not in make(tiny_config, bias=False).state_dict()


def test_checkpointing_gives_the_same_loss_and_gradients(tiny_config):
    x, y = rand_idx(tiny_config, B=4), rand_idx(tiny_config, B=4, seed=2)
    results = []
    for checkpointing in (False, True):
        model = make(tiny_config).train()
        model.checkpointing = checkpointing
        loss = model(x, y).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], msg=n)


def test_deadline_stops_forward_passes_and_is_removed_on_exit(tiny_config):
    import threading
    import time

    from gptbook.model import DeadlinePassed
    model = make(tiny_config)
    idx = rand_idx(tiny_config, T=4)
    before = model(idx).logits
    with model.deadline(time.monotonic() + 60):
        torch.testing.assert_close(model(idx).logits, before)              # in time: unaffected
    with pytest.raises(DeadlinePassed):
        with model.deadline(time.monotonic() - 1):
            generate(model, idx, 3)
    with model.deadline(time.monotonic() - 1):                              # other threads: unaffected
        t = threading.Thread(target=lambda: model(idx))
        t.start()
        t.join()
    assert not model._forward_pre_hooks                                     # the model as it was
    torch.testing.assert_close(model(idx).logits, before)


def test_export_path_gives_the_same_logits(tiny_config, monkeypatch):
    """While torch.export traces, forward leaves out the token-VALUE check (it cannot be traced);
    the logits are the same, and outside an export the check is back."""
    model = make(tiny_config)
    idx = rand_idx(tiny_config, T=9)
    ref = model(idx).logits
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(model(idx).logits, ref, rtol=0, atol=0)
    with pytest.raises(IndexError):                                         # not checked: torch's error
        model(torch.full((1, 2), tiny_config.vocab_size + 5))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="token ids"):
        model(torch.full((1, 2), tiny_config.vocab_size + 5))


@pytest.mark.slow
def test_torch_export_traces_the_model_unpatched(tiny_config):
    from gptbook.deploy.onnx import LogitsOnly
    model = make(tiny_config)
    dims = {"idx": {0: torch.export.Dim("batch", max=64), 1: torch.export.Dim("seq", max=tiny_config.block_size)}}
    exported = torch.export.export(LogitsOnly(model), (torch.zeros(2, 8, dtype=torch.long),), dynamic_shapes=dims)
    idx = rand_idx(tiny_config, B=3, T=11)
    torch.testing.assert_close(exported.module()(idx), model(idx).logits)


# ------------------------------------------------------------------ padding and the text wrapper

def test_pad_left_and_right():
    from gptbook.generate import pad
    idx, mask = pad([[1, 2, 3], [4]], pad_id=9, side="right")
    assert idx.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert [t.tolist() for t in pad([[1, 2, 3], [4]], 9)] == [t.tolist() for t in left_pad([[1, 2, 3], [4]], 9)]
    with pytest.raises(ValueError, match="side"):
        pad([[1]], 0, side="middle")


class _Chars:
    """A tokenizer stand-in: encode gives an object with .ids (as tokenizers.Tokenizer), decode letters."""

    def encode(self, text):
        return type("E", (), {"ids": [ord(c) % 60 + 2 for c in text]})()

    def decode(self, ids):
        return "".join(chr(97 + i % 26) for i in ids)


def test_generate_text_is_encode_generate_slice_decode(tiny_config):
    from gptbook.generate import generate_text
    model, tok = make(tiny_config), _Chars()
    ids = tok.encode("hello").ids
    new = generate(model, torch.tensor([ids]), 6, temperature=0.0)[0, len(ids):].tolist()
    assert generate_text(model, tok, "hello", 6, temperature=0.0) == tok.decode(new)
    eos = new[2]                                                   # cut at the first EOS, which is dropped
    assert generate_text(model, tok, "hello", 6, temperature=0.0, eos_token_id=eos) == tok.decode(new[:new.index(eos)])
    # a long prompt: the answer gets the room left (default), or the prompt loses its start (crop)
    long = "abcdefghijklm"                                         # 13 of block_size 16 tokens
    assert len(generate_text(model, tok, long, 6, temperature=0.0)) == 3
    cropped = tok.encode(long).ids[-(16 - 6):]
    ref = generate(model, torch.tensor([cropped]), 6, temperature=0.0)[0, len(cropped):].tolist()
    assert generate_text(model, tok, long, 6, crop=True, temperature=0.0) == tok.decode(ref)
    assert generate_text(model, type("L", (), {"encode": staticmethod(lambda s: [3, 4]),   # plain lists work too
                                               "decode": staticmethod(str)})(), "x", 2, temperature=0.0)


def test_logits_false_skips_only_the_lm_head(tiny_model):
    idx = torch.randint(0, tiny_model.config.vocab_size, (2, 7))
    full, short = tiny_model(idx), tiny_model(idx, logits=False)
    assert short.logits is None and short.loss is None
    assert torch.equal(full.hidden_states, short.hidden_states)
    with pytest.raises(ValueError, match="logits=True"):
        tiny_model(idx, targets=idx, logits=False)
