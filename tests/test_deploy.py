"""Deployment transforms and measurements on a tiny GPT (no timing assertions: see benchmarks/)."""
import math

import pytest
import torch

from gptbook.deploy import bench, onnx, prune, quantize
from gptbook.generate import generate, left_pad


def test_kv_cache_gives_the_same_tokens(tiny_model):
    idx = torch.randint(0, 64, (2, 4))
    a = generate(tiny_model, idx, 10, temperature=0.0, use_cache=True)
    b = generate(tiny_model, idx, 10, temperature=0.0, use_cache=False)
    assert torch.equal(a, b)


def test_step_latency_returns_one_time_per_length(tiny_model):
    for cache in (True, False):
        t = bench.step_latency(tiny_model, [1, 4, 8], use_cache=cache, repeat=1)
        assert len(t) == 3 and all(x > 0 for x in t)


def test_batched_equals_unbatched(tiny_model):
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 64, (n,), generator=g).tolist() for n in (3, 7, 1, 5)]
    one = bench.batched_generate(tiny_model, prompts, 6, batch_size=1, pad_id=1)
    four = bench.batched_generate(tiny_model, prompts, 6, batch_size=4, pad_id=1)
    assert one == four and all(len(t) == 6 for t in one)


def test_perplexity_matches_exp_of_the_loss(tiny_model):
    tokens = torch.randint(0, 64, (200,))
    ppl = bench.perplexity(tiny_model, tokens, block_size=16, n_windows=4, batch_size=2)
    x, y = tokens[:64].view(4, 16), tokens[1:65].view(4, 16)
    assert ppl == pytest.approx(torch.exp(tiny_model(x, y).loss).item(), rel=1e-5)
    with pytest.raises(ValueError, match="need"):
        bench.perplexity(tiny_model, tokens[:20], block_size=16, n_windows=4)


def test_perplexity_is_exp_of_the_stream_loss(tiny_model):
    from gptbook import train
    tokens = torch.randint(0, 64, (200,))
    loss, _ = train.stream_loss(tiny_model, tokens, max_windows=4)
    assert bench.perplexity(tiny_model, tokens, 16, 4) == pytest.approx(math.exp(loss), rel=1e-12)


def test_bf16_autocast_perplexity_is_close(tiny_model):
    tokens = torch.randint(0, 64, (200,))
    p32 = bench.perplexity(tiny_model, tokens, 16, 4)
    p16 = bench.perplexity(tiny_model, tokens, 16, 4, dtype="bfloat16")
    assert p16 == pytest.approx(p32, rel=0.05)


def test_int8_model_runs_and_its_logits_are_close(tiny_model):
    q = quantize.quantize_dynamic_int8(tiny_model)
    assert quantize.count_int8_layers(q) == 4 * 2 + 1     # 4 Linear per block + lm_head
    assert isinstance(tiny_model.lm_head, torch.nn.Linear)  # the original is untouched
    x = torch.randint(0, 64, (2, 16))
    ref, out = tiny_model(x).logits, q(x).logits
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert bench.state_dict_bytes(q) < bench.state_dict_bytes(tiny_model)
    gen = generate(q, x[:, :4], 5, temperature=0.0)
    assert gen.shape == (2, 9)


def test_int8_linear_matches_its_dequantized_weight():
    lin = torch.nn.Linear(32, 8)
    q = quantize.Int8Linear.from_float(lin)
    assert q.weight_int8.dtype == torch.int8
    assert (q.dequantized_weight() - lin.weight).abs().max() <= q.weight_scale.max() / 2 + 1e-7
    x = torch.randn(5, 32)
    ref = x @ q.dequantized_weight().t() + lin.bias
    assert torch.allclose(q(x), ref, atol=0.05)


def test_quantize_skip_keeps_float_layers(tiny_model):
    q = quantize.quantize_dynamic_int8(tiny_model, skip={"lm_head"})
    assert isinstance(q.lm_head, torch.nn.Linear)
    with pytest.raises(ValueError, match="no nn.Linear"):
        quantize.quantize_dynamic_int8(torch.nn.Sequential(torch.nn.ReLU()))


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9])
def test_pruning_reaches_the_asked_sparsity(tiny_model, amount):
    p = prune.global_magnitude_prune(tiny_model, amount)
    assert prune.sparsity(p) == pytest.approx(amount, abs=1e-3)
    assert prune.sparsity(tiny_model) == 0.0                # the original is untouched
    assert not any(n.endswith("_orig") for n, _ in p.named_parameters())   # masks made permanent
    assert set(p.state_dict()) == set(tiny_model.state_dict())
    x = torch.randint(0, 64, (1, 8))
    assert p(x).logits.shape == (1, 8, 64)


def test_pruning_removes_the_smallest_weights(tiny_model):
    p = prune.global_magnitude_prune(tiny_model, 0.5)
    before = torch.cat([m.weight.flatten() for m, _ in prune.prunable(tiny_model)]).abs()
    after = torch.cat([m.weight.flatten() for m, _ in prune.prunable(p)])
    kept = before[after != 0]
    dropped = before[after == 0]
    assert kept.min() >= dropped.max()
    with pytest.raises(ValueError, match="fraction"):
        prune.global_magnitude_prune(tiny_model, 1.0)


@pytest.mark.slow
def test_onnx_equals_pytorch(tiny_model, tmp_path):
    path = onnx.export(tiny_model, tmp_path / "tiny.onnx")
    sess = onnx.session(path)
    for shape in [(1, 1), (2, 9), (3, 16)]:
        idx = torch.randint(0, 64, shape)
        torch.testing.assert_close(onnx.ort_logits(sess, idx), tiny_model(idx).logits.detach(),
                                   atol=1e-4, rtol=1e-4)
    # every fp32 parameter is in the file once (tied wte/lm_head not duplicated), plus a few constants
    params = 4 * sum(p.numel() for p in tiny_model.parameters())
    assert params <= onnx.weight_bytes(path) < params * 1.1
    with pytest.raises(ValueError):      # the model's input checks are back after export
        tiny_model(torch.full((1, 2), 99))


def test_gradient_accumulation_and_checkpointing_keep_loss_and_grads(tiny_model):
    x, y = torch.randint(0, 64, (8, 16)), torch.randint(0, 64, (8, 16))
    full = bench.train_step_memory(tiny_model, x, y)
    accum = bench.train_step_memory(tiny_model, x, y, micro_batches=4)
    ckpt = bench.train_step_memory(tiny_model, x, y, checkpointing=True)
    for other in (accum, ckpt):
        assert other["loss"] == pytest.approx(full["loss"], rel=1e-5)
        for n, g in full["grads"].items():
            torch.testing.assert_close(other["grads"][n], g, atol=1e-6, rtol=1e-4)
    assert accum["activation_bytes"] < full["activation_bytes"]
    assert ckpt["activation_bytes"] < full["activation_bytes"]
    assert tiny_model.checkpointing is False                     # only for that step
    with pytest.raises(ValueError, match="divisible"):
        bench.train_step_memory(tiny_model, x, y, micro_batches=3)


def test_percentiles_and_state_dict_bytes(tiny_model):
    p = bench.percentiles(list(range(101)))
    assert p == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert bench.state_dict_bytes(tiny_model) > 4 * tiny_model.num_params()


def test_left_pad_is_reused_not_copied():
    idx, mask = left_pad([[5, 6], [7]], pad_id=1)
    assert idx.tolist() == [[5, 6], [1, 7]] and mask.tolist() == [[1, 1], [0, 1]]


def test_held_out_share_must_stay_inside_the_validation_split():
    with pytest.raises(ValueError, match="held-out"):
        bench.held_out_tokens(None, None, share=0.2)


def test_compare_seconds_times_every_variant():
    calls = []
    out = bench.compare_seconds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                repeat=3, warmup=1)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    assert calls == ["a", "b"] * 4          # interleaved: warm-up round + 3 timed rounds


def test_matmul_flops_with_and_without_cache(tiny_model):
    idx = torch.randint(0, 64, (1, 16))
    with torch.no_grad():
        past = tiny_model(idx[:, :-1]).past_key_values
        full = bench.matmul_flops(lambda: tiny_model(idx))
        step = bench.matmul_flops(lambda: tiny_model(idx[:, -1:], past_key_values=past))
        pruned = bench.matmul_flops(lambda: prune.global_magnitude_prune(tiny_model, 0.9)(idx))
    assert full == 16 * step > 0
    assert pruned == full                   # zeros are still multiplied
