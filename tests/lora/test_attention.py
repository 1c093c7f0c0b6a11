"""Tests for lora_theory.lora.attention: hooks capture what each attention softmax sees (issue 13).

The references are independent of the hooks: the model's own attention probabilities
(``output_attentions=True`` with eager attention) and scores computed by hand from the model's
hidden states (``output_hidden_states=True``) and its weights.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_theory import InvalidArgumentError
from lora_theory.lora.attention import capture_attention, find_attention_layers, projection_weights

transformers = pytest.importorskip("transformers")

VOCAB = 30522  # BERT's vocabulary, so that real MiniLM token ids fit every tiny model


def tiny(family: str, attn: str = "eager", dtype=torch.float32) -> nn.Module:
    """A small randomly initialized model of the family, built offline from its config class."""
    torch.manual_seed(0)
    if family == "bert":
        cfg = transformers.BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=16, intermediate_size=32, vocab_size=VOCAB)
        model = transformers.BertModel(cfg)
    elif family == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(cfg)
    else:  # Llama-style: rotary embeddings, grouped-query attention (4 heads, 2 key/value heads)
        cfg = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32, intermediate_size=64,
                                       vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
        model = transformers.LlamaForCausalLM(cfg)
    model.set_attn_implementation(attn)
    return model.to(dtype).eval()


def _batch(pad: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, VOCAB, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    if pad:
        mask[1, 6:] = 0  # the second sequence has 6 real tokens
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("pad", [False, True])
def test_scores_reproduce_the_model_attention(family, pad):
    """softmax(scaling q k^T masked by ``allowed``) = the model's attention probabilities on every real query row.

    Fails on a wrong scaling, a missing rotary embedding, a GQA head mapping off by a group, a
    causal mask on the wrong side, or padding treated as allowed."""
    model = tiny(family)
    batch = _batch(pad)
    caps = capture_attention(model, batch)
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    assert len(caps) == len(out.attentions) == 2
    for cap, probs in zip(caps, out.attentions, strict=True):
        S = cap.scaling * cap.q.double() @ cap.k.double().mT  # (B, H, T, T)
        f = torch.softmax(S.masked_fill(~cap.allowed, float("-inf")), dim=-1)
        real = cap.padding[:, None, :, None].expand_as(f)  # rows of real queries
        assert float((f - probs.double()).abs()[real].max()) < 1e-6
        assert cap.q.shape == (2, cap.layer.n_heads, 9, cap.layer.head_dim)


def test_bert_scores_by_hand():
    """Scores computed by hand from the model's hidden states and weights equal scaling q k^T of the capture."""
    model = tiny("bert")
    batch = _batch(pad=False)
    with torch.no_grad():
        hidden = model(**batch, output_hidden_states=True).hidden_states  # hidden_states[l] enters layer l
    for cap, X in zip(capture_attention(model, batch), hidden, strict=False):
        att = model.encoder.layer[cap.layer.index].attention.self
        assert torch.allclose(cap.X, X)
        q = (X @ att.query.weight.T + att.query.bias).view(2, 9, 2, 8).transpose(1, 2)  # (B, H, T, d)
        k = (X @ att.key.weight.T + att.key.bias).view(2, 9, 2, 8).transpose(1, 2)
        S = q @ k.mT / 8**0.5  # BERT: q . k / sqrt(d_head)
        assert torch.allclose(cap.scaling * cap.q @ cap.k.mT, S, atol=1e-5)
        W, b = projection_weights(cap.layer)["q"]
        assert W.shape == (16, 16) and torch.allclose(X @ W + b, q.transpose(1, 2).reshape(2, 9, 16), atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_causal_mask(family):
    """Decoder layers: allowed pairs are j <= i among real tokens, in every attention implementation.

    Without padding, sdpa layers get no mask at all (causality is the kernel's is_causal flag), so
    this fails if the capture trusts the model's mask alone."""
    tril = torch.ones(9, 9, dtype=torch.bool).tril()
    for attn in ("eager", "sdpa"):
        for pad in (False, True):
            for cap in capture_attention(tiny(family, attn), _batch(pad=pad)):
                assert cap.layer.causal
                assert torch.equal(cap.allowed[0, 0], tril)
                want = tril.clone()
                if pad:
                    want[6:, :] = False
                    want[:, 6:] = False
                assert torch.equal(cap.allowed[1, 0], want)


def test_encoder_is_not_causal_and_masks_padding():
    for attn in ("eager", "sdpa"):
        (cap, _) = capture_attention(tiny("bert", attn), _batch(pad=True))
        assert not cap.layer.causal
        assert bool(cap.allowed[0].all())
        assert bool(cap.allowed[1, 0, :6, :6].all()) and not bool(cap.allowed[1, 0, 6:].any()) and not bool(cap.allowed[1, 0, :, 6:].any())
        assert cap.lengths.tolist() == [9, 6]


def test_gpt2_projection_weights_from_conv1d():
    model = tiny("gpt2")
    batch = _batch(pad=False)
    (cap,) = capture_attention(model, batch, layers=[-1])
    assert cap.layer.index == 1
    for mu, t in (("q", cap.q), ("k", cap.k), ("v", cap.v)):
        W, b = projection_weights(cap.layer)[mu]
        assert torch.allclose(cap.X @ W + b, t.transpose(1, 2).reshape(2, 9, 16), atol=1e-6), mu


def test_lora_wrapped_projections_are_captured_with_the_adapter():
    """q captured through a toolkit and a PEFT adapter equals X (W0^T + s A^T B^T) + b."""
    from lora_theory.lora.layer import add_lora
    from lora_theory.lora.peft_bridge import find_lora_layers

    peft = pytest.importorskip("peft")
    for kind in ("toolkit", "peft"):
        model = tiny("bert")
        if kind == "toolkit":
            add_lora(model, ["query", "value"], r=2, alpha=6)
        else:
            model = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=6, target_modules=["query", "value"]))
        handles = {h.name: h for h in find_lora_layers(model)}
        with torch.no_grad():
            for h in handles.values():
                h.B.normal_()
        (cap, _) = capture_attention(model, _batch(pad=False))
        h = handles[f"{cap.layer.name}.query"]
        W, b = projection_weights(cap.layer)["q"]
        q = cap.X @ (W + h.scaling * h.A.T @ h.B.T) + b
        assert torch.allclose(q, cap.q.transpose(1, 2).reshape(2, 9, 16), atol=1e-5), kind
        assert cap.layer.name == "encoder.layer.0.attention.self"


def test_bfloat16_model():
    cap = capture_attention(tiny("bert", dtype=torch.bfloat16), _batch())[0]
    assert cap.q.dtype == torch.bfloat16 and cap.allowed.dtype == torch.bool


def test_hooks_removed_even_on_error():
    model = tiny("bert")
    attn = model.encoder.layer[0].attention.self
    capture_attention(model, _batch())
    assert not attn._forward_pre_hooks and not attn.query._forward_hooks
    with pytest.raises(Exception):
        capture_attention(model, {"input_ids": torch.full((1, 4), VOCAB + 5)})  # the embedding lookup fails inside the model
    assert not attn._forward_pre_hooks and not attn.query._forward_hooks


def test_bad_input():
    with pytest.raises(InvalidArgumentError, match="model: expected attention layers .* found none in Sequential"):
        find_attention_layers(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(InvalidArgumentError, match="model: expected a torch.nn.Module"):
        find_attention_layers("bert")
    model = tiny("bert")
    with pytest.raises(InvalidArgumentError, match="layers: expected an integer <= 1, got 2"):
        capture_attention(model, _batch(), layers=[2])
    with pytest.raises(InvalidArgumentError, match="layers: expected an integer >= -2"):
        capture_attention(model, _batch(), layers=-3)
    with pytest.raises(InvalidArgumentError, match="batch: expected a dict with an 'input_ids'"):
        capture_attention(model, [1, 2])
    with pytest.raises(InvalidArgumentError, match=r"batch: expected input_ids of shape \(B, T\)"):
        capture_attention(model, {"input_ids": torch.zeros(0, 3, dtype=torch.long)})
    with pytest.raises(InvalidArgumentError, match="attention_mask of shape"):
        capture_attention(model, {"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 4)})


@pytest.mark.gpu
def test_cuda_capture_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = tiny("llama")
    cpu = capture_attention(model, _batch())
    gpu = capture_attention(model.cuda(), _batch())
    for a, b in zip(cpu, gpu, strict=True):
        assert b.q.is_cuda and torch.allclose(a.q, b.q.cpu(), atol=1e-5) and torch.equal(a.allowed, b.allowed.cpu())
