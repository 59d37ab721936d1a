"""gptbook.deploy.parallel: per-GPU training memory of GPT-3 175B under tensor, pipeline and data
parallelism and ZeRO, against the figures of the papers the formulas come from."""
import pytest

from gptbook.deploy.parallel import training_memory
from gptbook.model import PUBLISHED

GPT3 = PUBLISHED["GPT-3 175B"]      # 96 layers, d_model 12288, 96 heads, context 2048, vocab 50257
GB = 1e9
H100 = 80 * GB


def states(r):
    return r["weights"] + r["grads"] + r["optimizer"]


def test_gpt3_has_175b_parameters_and_needs_16_bytes_each():
    one = training_memory(GPT3)
    assert one["params"] == pytest.approx(175e9, rel=0.01)
    # ZeRO §3.1: fp16 weights 2 + fp16 gradients 2 + fp32 master, momentum, variance 12 = 16 bytes
    assert states(one) == pytest.approx(16 * one["params"], rel=1e-6)
    assert states(one) == pytest.approx(2.8e12, rel=0.01)                   # 2.8 TB on one GPU
    fp32 = training_memory(GPT3, dtype_bytes=4)                             # no master copy: 4 + 4 + 8
    assert states(fp32) == pytest.approx(16 * one["params"], rel=1e-6)


def one_stage_params():
    layer = 12 * 12288**2 + 13 * 12288                 # matrices 3h^2 + h^2 + 4h^2 + 4h^2, biases, 2 LayerNorms
    embeddings = (50257 + 2048) * 12288
    return (96 // 16 * layer + embeddings) / 8


def test_model_parallelism_brings_the_states_under_80_gb():
    assert states(training_memory(GPT3)) > H100
    assert states(training_memory(GPT3, tp=8)) > H100                       # one node of 8 is not enough
    split = training_memory(GPT3, tp=8, pp=16)
    assert split["gpus"] == 128 and states(split) < H100
    # the first stage: 6 of 96 layers plus the embeddings, each cut 8 ways
    assert split["params_per_gpu"] == pytest.approx(one_stage_params(), rel=1e-6)


def test_zero_stages_split_over_data_parallel_gpus():
    n = training_memory(GPT3)["params"]
    per = {z: states(training_memory(GPT3, dp=64, zero=z)) / n for z in range(4)}
    # ZeRO Figure 1: 2 + 2 + K, then 2 + 2 + K/Nd, 2 + (2 + K)/Nd, (2 + 2 + K)/Nd with K = 12
    assert per == pytest.approx({0: 16, 1: 4 + 12 / 64, 2: 2 + 14 / 64, 3: 16 / 64}, rel=1e-6)
    assert states(training_memory(GPT3, dp=64, zero=3)) < H100 < states(training_memory(GPT3, dp=64, zero=2))


def test_activations_follow_korthikanti_et_al():
    s, h, a, L = 2048, 12288, 96, 96
    one = training_memory(GPT3)["activations"]
    assert one == pytest.approx(L * s * h * (34 + 5 * a * s / h))            # eq. 1, b = 1
    tp = training_memory(GPT3, tp=8)["activations"]
    assert tp == pytest.approx(L * s * h * (10 + 24 / 8 + 5 * a * s / (h * 8)))   # eq. 2
    sp = training_memory(GPT3, tp=8, pp=16, sequence_parallel=True)
    assert sp["activations"] == pytest.approx(one / 8)                       # eq. 4; p does not change it
    assert training_memory(GPT3, tp=8, pp=4, sequence_parallel=True)["activations"] == sp["activations"]
    selective = training_memory(GPT3, tp=8, pp=16, sequence_parallel=True, recompute="selective")
    # the paper: for GPT-3, 5as/h = 80, so recomputing the attention core saves 80/114 = 70 %
    assert selective["activations"] / sp["activations"] == pytest.approx(34 / 114)
    full = training_memory(GPT3, tp=8, pp=16, sequence_parallel=True, recompute="full")
    assert full["activations"] == pytest.approx(L * 2 * s * h / 8)
    assert training_memory(GPT3, micro_batch=4)["activations"] == pytest.approx(4 * one)
    assert selective["total"] < sp["total"] < H100


@pytest.mark.parametrize("kw, match", [
    ({"tp": 7}, "tp=7 must divide n_head=96"),
    ({"pp": 5}, "pp=5 must divide n_layer=96"),
    ({"zero": 4}, "ZeRO stage"),
    ({"dp": 0}, "dp must be a whole number"),
    ({"recompute": "some"}, "recompute must be one of"),
    ({"dtype_bytes": 1}, "dtype_bytes"),
])
def test_impossible_layouts_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        training_memory(GPT3, **kw)
