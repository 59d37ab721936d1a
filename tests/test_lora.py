import pytest
import torch

from gptbook.finetune import lora
from gptbook.model import GPT


def _batch(config, B=4, T=8):
    x = torch.randint(0, config.vocab_size, (B, T))
    return x, torch.roll(x, -1, dims=1)


def _step(model, x, y, lr=1e-2):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    model(x, y).loss.backward()
    opt.step()
    opt.zero_grad()


def test_only_adapters_train(tiny_config):
    base = GPT(tiny_config)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    pm = lora.add_lora(base, r=4, alpha=8)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    x, y = _batch(tiny_config)
    _step(pm, x, y)
    # the base weights inside the LoRA model are bit-identical after a step ...
    inner = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in pm.state_dict().items() if "lora_" not in k}
    for k, v in before.items():
        assert torch.equal(inner[k], v), k
    # ... the adapters moved, and the original model was not touched (add_lora copies it)
    assert any(p.abs().sum() > 0 for n, p in pm.named_parameters() if "lora_B" in n)
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k])


def test_merged_equals_unmerged(tiny_config):
    pm = lora.add_lora(GPT(tiny_config), r=4, alpha=8)
    x, y = _batch(tiny_config)
    for _ in range(3):
        _step(pm, x, y)
    pm.eval()
    merged = lora.merge(pm).eval()
    assert type(merged) is GPT
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        a, b = pm(x).logits, merged(x).logits
    assert (a - GPT(tiny_config).eval()(x).logits).abs().max() > 1e-4  # the adapters changed it
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_starts_at_the_base_model(tiny_config):
    base = GPT(tiny_config).eval()
    pm = lora.add_lora(base, r=2).eval()
    x, _ = _batch(tiny_config)
    torch.testing.assert_close(pm(x).logits, base(x).logits)  # B = 0 at init


def test_param_counts_and_bytes(tiny_config):
    C, L = tiny_config.n_embd, tiny_config.n_layer
    r = 4
    pm = lora.add_lora(GPT(tiny_config), r=r)
    trainable, total = lora.param_counts(pm)
    # per layer: c_attn (C -> 3C), attn.c_proj (C -> C), mlp.c_proj (4C -> C); r * (in + out) each
    expected = L * r * ((C + 3 * C) + (C + C) + (4 * C + C))
    assert trainable == expected
    assert total == GPT(tiny_config).num_params() + expected
    full = GPT(tiny_config)
    n = full.num_params()
    assert lora.training_state_bytes(full) == 4 * n * 4  # weights + grads + 2 Adam moments, fp32
    assert lora.training_state_bytes(pm) == 4 * total + 3 * 4 * trainable


def test_bad_arguments(tiny_config):
    with pytest.raises(ValueError, match="not nn.Linear names"):
        lora.add_lora(GPT(tiny_config), target_modules=["q_proj"])
    with pytest.raises(ValueError, match="positive"):
        lora.add_lora(GPT(tiny_config), r=0)


def test_measure_on_cpu():
    out, seconds, peak = lora.measure(lambda: 3, torch.device("cpu"))
    assert out == 3 and seconds >= 0 and peak is None
