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


# ------------------------------------------------------------------ int8 paths, ONNX with a KV cache

def test_int8_embedding_reads_the_heads_int8_table(tiny_model):
    q = quantize.quantize_dynamic_int8(tiny_model)
    emb = q.transformer.wte
    assert isinstance(emb, quantize.Int8Embedding)
    assert emb.weight_int8.data_ptr() == q.lm_head.weight_int8.data_ptr()   # one table, no copy
    ids = torch.tensor([[0, 5, 63]])
    torch.testing.assert_close(emb(ids), q.lm_head.dequantized_weight()[ids])
    assert (emb(ids) - tiny_model.transformer.wte(ids)).abs().max() < 0.01
    untied = quantize.quantize_dynamic_int8(tiny_model, tied_embedding=False)
    assert isinstance(untied.transformer.wte, torch.nn.Embedding)
    # the int8 table is saved once: smaller than the variant with an fp32 embedding and an int8 head
    assert bench.state_dict_bytes(q) < bench.state_dict_bytes(untied) < bench.state_dict_bytes(tiny_model)


def test_torchao_int8_is_close_and_keeps_the_tie(tiny_model):
    q = quantize.torchao_int8(tiny_model)
    assert q.transformer.wte.weight is q.lm_head.weight                  # one int8 tensor for both
    assert type(q.lm_head.weight).__module__.startswith("torchao")      # torchao's int8 tensor
    assert isinstance(tiny_model.lm_head.weight, torch.nn.Parameter)     # the original is untouched
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        ref, out = tiny_model(x).logits, q(x).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert bench.state_dict_bytes(q) < 0.5 * bench.state_dict_bytes(tiny_model)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model (the weights of tiny_model) exported with its KV cache, fp32 and int8."""
    from gptbook.model import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()
    d = tmp_path_factory.mktemp("onnx")
    fp32 = onnx.export(model, d / "kv.onnx", cache=True)
    return model, fp32, onnx.quantize_int8(fp32, d / "kv8.onnx")


@pytest.mark.slow
def test_cached_onnx_graph_generates_pytorch_s_tokens(exported):
    model, fp32, _ = exported
    ort = onnx.OnnxGPT(fp32, model.config)
    idx = torch.randint(0, 64, (2, 4))
    a = generate(model, idx, 12, temperature=0.0, use_cache=True)
    b = generate(ort, idx, 12, temperature=0.0, use_cache=True)
    assert torch.equal(a, b)
    # step by step: the prompt with an empty cache, then one token at a time, logits and cache alike
    with torch.no_grad():
        ref = model(idx)
        out = ort(idx)
        torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=1e-4)
        nxt = torch.randint(0, 64, (2, 1))
        ref2, out2 = model(nxt, past_key_values=ref.past_key_values), ort(nxt, past_key_values=out.past_key_values)
        torch.testing.assert_close(out2.logits, ref2.logits, atol=1e-4, rtol=1e-4)
        for (k, v), (rk, rv) in zip(out2.past_key_values, ref2.past_key_values):
            assert k.shape == rk.shape == (2, 2, 5, 16)
            torch.testing.assert_close(v, rv, atol=1e-4, rtol=1e-4)
    tokens = torch.randint(0, 64, (200,))
    assert bench.perplexity(ort, tokens, 16, 4) == pytest.approx(bench.perplexity(model, tokens, 16, 4), rel=1e-5)
    # the plain logits helper runs the cached graph too (with an empty cache)
    torch.testing.assert_close(onnx.ort_logits(ort.session, idx), ref.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_onnx_int8_is_smaller_close_and_its_head_is_int8(exported):
    import onnx as onnx_pkg
    model, fp32, int8 = exported
    nodes = [n.op_type for n in onnx_pkg.load(str(int8)).graph.node]
    assert nodes.count("MatMulInteger") == 4 * 2 + 1                    # every Linear and the LM head
    assert "DequantizeLinear" in nodes and "Gather" in nodes             # embedding lookups on int8 rows
    graph = onnx_pkg.load(str(int8)).graph
    floats = [i for i in graph.initializer if i.data_type == onnx_pkg.TensorProto.FLOAT and len(i.dims) == 2]
    assert not floats                                                  # no fp32 matrix left (one int8 table)
    assert onnx.weight_bytes(int8) < onnx.weight_bytes(fp32) / 3     # (the graph itself is not small here)
    assert onnx.file_bytes(int8) < onnx.file_bytes(fp32) / 2
    q = onnx.OnnxGPT(int8, model.config, name="onnx-int8")
    x = torch.randint(0, 64, (4, 16))
    with torch.no_grad():
        ref, out = model(x).logits, q(x).logits
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9     # next-token agreement
    assert generate(q, x[:, :4], 6, temperature=0.0).shape == (4, 10)
    assert not onnx.int8_lm_head(onnx_pkg.load(str(int8)))               # already rewritten: nothing to do


@pytest.mark.slow
def test_onnx_gpt_refuses_what_its_graph_cannot_do(exported, tmp_path):
    model, fp32, _ = exported
    ort = onnx.OnnxGPT(fp32, model.config)
    idx, mask = left_pad([[5, 6], [7]], pad_id=1)
    with pytest.raises(ValueError, match="attention mask"):
        ort(idx, attention_mask=mask)
    assert ort(idx, attention_mask=torch.ones_like(mask)).logits.shape == (2, 2, 64)   # all ones: fine
    with pytest.raises(ValueError, match="block_size"):
        ort(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        ort(torch.full((1, 2), 99))
    plain = onnx.export(model, tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="cache=True"):
        onnx.OnnxGPT(plain, model.config)
    assert ort.num_params() == model.num_params() and next(ort.parameters()).device.type == "cpu"


def test_backend_names(tiny_model, tmp_path):
    assert onnx.backend(tiny_model, "torch", tmp_path) is tiny_model
    with pytest.raises(ValueError, match="onnx-int8"):
        onnx.backend(tiny_model, "tensorrt", tmp_path)


def test_repeated_ratios_give_one_ratio_per_round():
    r = bench.repeated_ratios({"a": lambda: None, "b": lambda: sum(range(1000))}, base="a", rounds=4, repeat=2)
    assert set(r) == {"a", "b"} and len(r["b"]) == 4 and r["a"] == [1.0] * 4
    with pytest.raises(ValueError, match="base"):
        bench.repeated_ratios({"a": lambda: None}, base="c")


# ---------------------------------------------------------------- structured shrinking, distillation

def test_drop_blocks_is_the_same_computation_without_the_dropped_blocks(tiny_model):
    L = tiny_model.config.n_layer
    assert L >= 2
    keep = [L - 1]                      # the last block only: renumbered to block 0
    small = prune.drop_blocks(tiny_model, keep)
    assert small.config.n_layer == 1 and len(small.transformer.h) == 1
    # the small model's forward equals running the big one's kept blocks by hand
    idx = torch.randint(0, tiny_model.config.vocab_size, (2, 8))
    with torch.no_grad():
        t = tiny_model.transformer
        x = t.wte(idx) + t.wpe(torch.arange(8))
        for i in keep:
            x, _ = t.h[i](x)
        ref = tiny_model.lm_head(t.ln_f(x))
        torch.testing.assert_close(small(idx).logits, ref)
    assert bench.state_dict_bytes(small) < bench.state_dict_bytes(tiny_model)
    assert small.lm_head.weight is small.transformer.wte.weight        # still tied
    for bad in ([], [0, 0], [L]):
        with pytest.raises(ValueError, match="distinct block indices"):
            prune.drop_blocks(tiny_model, bad)


def test_kd_loss_reduces_to_cross_entropy_and_to_kl():
    from gptbook.deploy import distill
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    y = torch.randint(0, 11, (2, 5))
    ce = torch.nn.functional.cross_entropy(s.reshape(-1, 11), y.reshape(-1))
    assert distill.kd_loss(s, t, y, alpha=1.0) == pytest.approx(ce.item())
    assert distill.kd_loss(s, s, y, alpha=0.0).item() == pytest.approx(0.0, abs=1e-6)   # KL(p || p) = 0
    kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean()
    assert distill.kd_loss(s, t, y, temperature=1.0, alpha=0.0) == pytest.approx(kl.item(), rel=1e-5)
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(s, t, y, temperature=0.0)


def test_distillation_moves_the_student_towards_the_teacher(tiny_model):
    from gptbook import config
    from gptbook.deploy import distill
    from gptbook.train import batch_fn
    cfg = config.setup("quick", seed=0)
    tokens = torch.randint(0, tiny_model.config.vocab_size, (400,))
    student = prune.drop_blocks(tiny_model, [0])
    x = tokens[:64].view(4, 16)

    def gap():
        with torch.no_grad():
            return torch.nn.functional.kl_div(student(x).logits.log_softmax(-1), tiny_model(x).logits.log_softmax(-1),
                                              log_target=True, reduction="batchmean").item()
    before = gap()
    distill.distill(student, tiny_model, batch_fn(tokens, 16, 8, torch.Generator().manual_seed(0)), cfg,
                    steps=30, alpha=0.0, learning_rate=3e-3, progress=False)
    assert gap() < 0.5 * before
    assert all(not p.requires_grad for p in tiny_model.parameters())   # the teacher stays frozen


def test_a_masked_head_adds_nothing_and_its_weights_are_counted(tiny_model):
    cfg = tiny_model.config
    off = prune.mask_heads(tiny_model, {0: [1]})
    attn, ref = off.transformer.h[0].attn, tiny_model.transformer.h[0].attn
    size = cfg.n_embd // cfg.n_head
    x = torch.randn(1, 5, cfg.n_embd)
    with torch.no_grad():
        # by hand: the layer's output without head 1's part of the concatenated heads
        q, k, v = ref.c_attn(x).split(cfg.n_embd, dim=2)
        heads = torch.nn.functional.scaled_dot_product_attention(
            *(t.view(1, 5, cfg.n_head, size).transpose(1, 2) for t in (q, k, v)), is_causal=True)
        y = heads.transpose(1, 2).reshape(1, 5, cfg.n_embd).clone()
        y[..., size:2 * size] = 0
        torch.testing.assert_close(attn(x)[0], ref.c_proj(y))
    assert torch.equal(tiny_model.transformer.h[0].attn.c_proj.weight, ref.c_proj.weight)   # a copy was changed
    # every weight of the layer belongs to one head, except the output projection's bias (shared)
    assert prune.head_params(cfg) * cfg.n_head + cfg.n_embd == sum(p.numel() for p in ref.parameters())
    with pytest.raises(ValueError, match="heads 0.."):
        prune.mask_heads(tiny_model, {0: [cfg.n_head]})


def test_dropped_heads_compute_what_masked_heads_compute_with_smaller_matrices(tiny_model):
    cfg = tiny_model.config
    gone = {0: [1], 1: [0]}
    masked, dropped = prune.mask_heads(tiny_model, gone), prune.drop_heads(tiny_model, gone)
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(dropped(idx).logits, masked(idx).logits)
        # the KV cache works on the smaller layers too
        torch.testing.assert_close(generate(dropped, idx[:, :3], 5, temperature=0.0, use_cache=True),
                                   generate(dropped, idx[:, :3], 5, temperature=0.0, use_cache=False))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(tiny_model) - n(dropped) == 2 * prune.head_params(cfg)
    assert [b.attn.n_head for b in dropped.transformer.h] == [cfg.n_head - 1] * 2
    assert all(b.attn.n_head == cfg.n_head for b in tiny_model.transformer.h)          # the original is untouched
    with pytest.raises(ValueError, match="at least one head"):
        prune.drop_heads(tiny_model, {0: list(range(cfg.n_head))})


def test_the_autoscaler_picks_the_fewest_workers_that_meet_the_target():
    from gptbook.deploy.bench import decide_workers
    measured = {1: {"rps": 10.0, "p95_ms": 900.0}, 2: {"rps": 18.0, "p95_ms": 500.0},
                4: {"rps": 18.5, "p95_ms": 1400.0}}
    assert decide_workers(measured, 5.0, 1000) == 1          # 10 x 0.7 = 7 >= 5
    assert decide_workers(measured, 8.0, 1000) == 2          # one worker would run 80 % busy
    assert decide_workers(measured, 8.0, 800) == 2           # one worker misses the p95 target
    assert decide_workers(measured, 12.9, 1000) is None      # 4 workers have the throughput, not the p95
    assert decide_workers(measured, 12.9, 1500) == 4
