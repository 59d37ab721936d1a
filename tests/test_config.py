import dataclasses

import pytest
import torch

from gptbook import config
from gptbook.model import GPTConfig


def test_profiles_exist_and_differ():
    q, f = config.get_profile("quick"), config.get_profile("full")
    assert q.name == "quick" and f.name == "full"
    assert f.n_embd > q.n_embd and f.max_steps > q.max_steps


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown profile 'fast'.*\['full', 'quick'\]"):
        config.get_profile("fast")


def test_overrides_validated_and_none_ignored():
    p = config.get_profile("quick", max_steps=7, seed=None)
    assert p.max_steps == 7 and p.seed == config.PROFILES["quick"].seed
    with pytest.raises(ValueError, match="unknown profile setting"):
        config.get_profile("quick", max_stepz=7)


def test_profile_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.get_profile("quick").max_steps = 3


def test_model_config_from_profile():
    p = config.get_profile("quick")
    mc = p.model_config()
    assert isinstance(mc, GPTConfig)
    assert (mc.n_layer, mc.n_embd, mc.block_size, mc.vocab_size) == (p.n_layer, p.n_embd, p.block_size, p.vocab_size)
    assert p.model_config(dropout=0.3).dropout == 0.3


def test_pick_device():
    assert config.pick_device("cpu") == torch.device("cpu")
    auto = config.pick_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(RuntimeError, match="no GPU"):
            config.pick_device("cuda")


def test_seed_everything_repeats():
    config.seed_everything(123)
    a = torch.randn(5)
    config.seed_everything(123)
    assert torch.equal(a, torch.randn(5))


def test_setup_sets_threads():
    p = config.setup("quick", threads=1)
    assert torch.get_num_threads() == 1 and p.threads == 1


def test_markdown_repr_lists_settings():
    md = config.get_profile("quick")._repr_markdown_()
    assert "`n_layer`" in md and "device used" in md


def test_run_seed_from_environment(monkeypatch):
    monkeypatch.delenv("GPTBOOK_SEED", raising=False)
    assert config.run_seed() == config.DEFAULT_SEED == 1337
    monkeypatch.setenv("GPTBOOK_SEED", "2024")
    assert config.run_seed() == 2024
    assert config.run_seed(7) == 7                       # an explicit seed (papermill -p seed=7) wins
    assert config.setup("quick", threads=1).seed == 2024
    monkeypatch.setenv("GPTBOOK_SEED", "abc")
    with pytest.raises(ValueError, match="GPTBOOK_SEED"):
        config.run_seed()
