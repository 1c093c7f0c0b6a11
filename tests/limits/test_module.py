"""Tests for lora_theory.limits.module (issue 23; claims limits.upstream, limits.lemma1.1): LoRAAttention.

The reference is autograd through a dense attention written here with the same weights and the SAME
upstream gradient the module's backward received (captured by a tensor hook), in float64. The central
test trains a small model end to end in mode="auto" and checks every step: the path the module took,
and its LoRA gradients within the certified bound (polynomial path) or equal to autograd's (exact path).
"""
from __future__ import annotations


import pytest
import torch
from torch import nn

from lora_theory._validate import InvalidArgumentError
from lora_theory.limits.lowrank import ApproximationError
from lora_theory.limits.module import LoRAAttention, replace_bert_attention
from lora_theory.limits.plan import CostModel

F64 = torch.float64


def reference(m: LoRAAttention, x: torch.Tensor, dO: torch.Tensor, xkv=None):
    """(O (batch, H, L, d), LoRA gradients) by autograd through dense attention with O.backward(dO)."""
    xkv = x if xkv is None else xkv
    ps = {k: getattr(m, k).detach().double().clone().requires_grad_(True) for k in m.param_names}
    P = []
    for mu, inp in (("q", x), ("k", xkv), ("v", xkv)):
        W = getattr(m, f"W_{mu}").double()
        if mu in m.adapt:
            W = W + m.scale * (ps[f"B_{mu}"] @ ps[f"A_{mu}"])
        b = getattr(m, f"b_{mu}")
        P.append(inp.double()[:, None] @ W + (0 if b is None else b.double()))
    S = m.beta * P[0] @ P[1].mT
    if m.causal:
        S = S.masked_fill(torch.ones(S.shape[-2], S.shape[-1], dtype=torch.bool).triu(1), float("-inf"))
    O = torch.softmax(S, dim=-1) @ P[2]
    O.backward(dO.double())
    return O.detach(), {k: v.grad for k, v in ps.items()}


def _randomize(m: LoRAAttention, std: float = 0.3, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mu in m.adapt:
            a = getattr(m, f"A_{mu}")
            a.copy_(torch.randn(a.shape, generator=gen, dtype=F64) * std)


@pytest.mark.parametrize("mode", ["exact", "approx"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_forced_paths_match_autograd(mode, causal, cross):
    """Forced exact: equal to autograd; forced approx: forward and gradients within their certified bounds."""
    m = LoRAAttention(5, 2, 4, r=2, causal=causal, mode=mode, eps=1e-6, dtype=F64, seed=1, adapt="qkv")
    _randomize(m)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 30, 5, generator=gen, dtype=F64) * 0.5
    xkv = torch.randn(2, 30, 5, generator=gen, dtype=F64) * 0.5 if cross else None
    out = m(x, xkv)
    dO = torch.randn(out.shape, generator=gen, dtype=F64)
    out.backward(dO)
    dOh = dO.reshape(2, 30, 2, 4).transpose(1, 2)  # the upstream gradient per head, as the Function received it
    O, ref = reference(m, x, dOh, xkv)
    fwd, bwd = m.log[-2], m.log[-1]
    assert fwd["path"] == bwd["path"] == mode
    got_O = out.detach().reshape(2, 30, 2, 4).transpose(1, 2)
    for k in ref:
        err = float((getattr(m, k).grad - ref[k]).abs().max())
        if mode == "exact":
            assert err <= 1e-10 * max(1.0, float(ref[k].abs().max())), k
        else:
            assert err <= bwd["error_bound"][k] + 1e-12, k
    if mode == "exact":
        torch.testing.assert_close(got_O, O, rtol=1e-12, atol=1e-13)
    else:
        assert float((got_O - O).abs().max()) <= fwd["bound"] + 1e-13


def test_auto_trains_end_to_end_within_the_certified_bound():
    """THE issue-23 test: a small causal LM (frozen embedding -> LoRAAttention in "auto" -> frozen head) trained by SGD on
    the LoRA factors; on every step the module's gradients are within the certified bound of autograd's for the same
    upstream gradient (polynomial path) or equal to them (exact path), the loss falls, and the fast path is taken."""
    torch.manual_seed(0)
    vocab, n, H, d, L = 11, 4, 2, 4, 2048
    emb = nn.Embedding(vocab, n).double().requires_grad_(False)
    with torch.no_grad():
        emb.weight.mul_(0.4)  # bounded inputs: the score range stays small (R ~ 1), the regime of Thm 3.1
    attn = LoRAAttention(n, H, d, r=2, causal=True, mode="auto", eps=1e-3, dtype=F64, seed=3, model=CostModel())  # fixed cost model: a deterministic choice
    head = nn.Linear(H * d, vocab).double().requires_grad_(False)
    opt = torch.optim.SGD(attn.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(5)
    base = torch.randint(0, vocab, (1, L + 1), generator=gen)
    tokens = (base + torch.arange(L + 1)) % vocab  # a learnable pattern: next token = this token + 1 (mod vocab) plus noise
    losses, paths = [], []
    for step in range(4):
        x = emb(tokens[:, :-1])
        out = attn(x)
        seen = {}
        out.register_hook(lambda g: seen.setdefault("dO", g.detach().clone()))
        loss = nn.functional.cross_entropy(head(out).reshape(-1, vocab), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        dOh = seen["dO"].reshape(1, L, H, d).transpose(1, 2)
        _, ref = reference(attn, x, dOh)
        fwd, bwd = attn.log[-2], attn.log[-1]
        paths.append((fwd["path"], bwd["path"]))
        for k in ref:
            err = float((getattr(attn, k).grad - ref[k]).abs().max())
            tol = bwd["error_bound"][k] if bwd["path"] == "approx" else 1e-10 * max(1.0, float(ref[k].abs().max()))
            assert err <= tol, (step, k, err, tol, bwd["reason"])
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert ("approx", "approx") in paths, (paths, attn.log[-1]["reason"])


def test_auto_never_returns_uncertified():
    """Large scores: auto takes the exact path and says why; forced approx raises the documented error."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, 4, generator=gen, dtype=F64) * 40.0
    m = LoRAAttention(4, 1, 4, mode="auto", dtype=F64, model=CostModel(e_mm=1.0))  # exact predicted very slow: only certification can refuse
    m(x).sum().backward()
    assert m.log[0]["path"] == "exact" and ("cannot certify" in m.log[0]["reason"] or "refused" in m.log[0]["reason"])
    assert m.log[1]["path"] == "exact"
    m2 = LoRAAttention(4, 1, 4, mode="approx", dtype=F64)
    with pytest.raises(ApproximationError):
        m2(x)


def test_input_gradient_goes_exact():
    """When the input needs dL/dX, auto's backward is exact (the log says why) and dL/dX equals autograd's; forced approx raises."""
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(1, 20, 4, generator=gen, dtype=F64) * 0.5).requires_grad_(True)
    m = LoRAAttention(4, 2, 4, mode="auto", dtype=F64, model=CostModel(e_mm=1.0))
    out = m(x)
    out.backward(torch.ones_like(out))
    assert m.log[-1]["path"] == "exact" and "dL/dX" in m.log[-1]["reason"]
    x2 = x.detach().clone().requires_grad_(True)
    ps = [getattr(m, k).detach() for k in m.param_names]
    P = [x2[:, None] @ (getattr(m, f"W_{mu}") + m.scale * (ps[2 * i + 1] @ ps[2 * i])) for i, mu in enumerate("qkv")]
    O = torch.softmax(m.beta * P[0] @ P[1].mT, -1) @ P[2]
    O.transpose(1, 2).reshape(1, 20, 8).backward(torch.ones(1, 20, 8, dtype=F64))
    torch.testing.assert_close(x.grad, x2.grad)
    m2 = LoRAAttention(4, 2, 4, mode="approx", dtype=F64)
    with pytest.raises(ApproximationError, match="input"):
        m2(x).sum().backward()


def test_cross_lengths_go_exact():
    """Cross attention with L_k != L_q: the forward may be fast, the backward is exact autograd (the log says why)."""
    gen = torch.Generator().manual_seed(4)
    x, xkv = (torch.randn(1, L, 4, generator=gen, dtype=F64) * 0.5 for L in (12, 31))
    m = LoRAAttention(4, 2, 4, mode="auto", dtype=F64)
    _randomize(m)
    out = m(x, xkv)
    dO = torch.randn(out.shape, generator=gen, dtype=F64)
    out.backward(dO)
    _, ref = reference(m, x, dO.reshape(1, 12, 2, 4).transpose(1, 2), xkv)
    assert m.log[-1]["path"] == "exact" and "L_k = 31" in m.log[-1]["reason"]
    for k in ref:
        torch.testing.assert_close(getattr(m, k).grad, ref[k])


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="mode"):
        LoRAAttention(4, 1, 4, mode="fast")
    with pytest.raises(InvalidArgumentError, match="eps"):
        LoRAAttention(4, 1, 4, eps=1.5)
    m = LoRAAttention(4, 1, 4)
    with pytest.raises(InvalidArgumentError, match="x"):
        m(torch.randn(2, 3, 5))


def test_minilm_plugs_in_and_chooses_exact():
    """MiniLM's first self-attention replaced by LoRAAttention (its weights, biases, scaling): the same hidden states
    (A = 0), and "auto" chooses the exact path with the reason in the log (d = 32: k = C(g + 32, 32) features)."""
    from lora_theory.lora.pretrained import load_minilm, load_tokenizer, encode

    model = load_minilm()
    tok = load_tokenizer()
    batch = encode(tok, ["The attention layer of a small model, on one sentence without padding."], max_length=32)
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "token_type_ids")}
    with torch.no_grad():
        before = model(**batch).last_hidden_state
    (attn,) = replace_bert_attention(model, layers=[0], r=2, mode="auto")
    out = model(**batch).last_hidden_state
    torch.testing.assert_close(out, before, rtol=1e-4, atol=1e-4)
    fwd = attn.log[-1]
    assert fwd["path"] == "exact" and "k = C(" in fwd["reason"] or "cannot certify" in fwd["reason"], fwd["reason"]
    out.sum().backward()  # LoRA gradients flow through the exact backward (the input needs dL/dX below: exact)
    assert attn.B_q.grad is not None and attn.log[-1]["path"] == "exact"
