"""Tests for lora_theory.lora.peft_bridge: one finder of LoRA layers for toolkit and PEFT models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lora_theory import InvalidArgumentError
from lora_theory.lora.layer import add_lora
from lora_theory.lora.peft_bridge import clean_name, find_lora_layers, lora_factors, target_linears

peft = pytest.importorskip("peft")


class _Net(nn.Module):
    def __init__(self, n: int = 6) -> None:
        super().__init__()
        self.query = nn.Linear(n, n)
        self.value = nn.Linear(n, n + 2)
        self.emb = nn.Embedding(11, n)
        self.out = nn.Linear(n + 2, 1)

    def forward(self, ids):
        h = self.emb(ids)
        return self.out(self.value(self.query(h)))


def _peft(r=2, alpha=8, rslora=False, embedding=False):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    targets = ["query", "value"] + (["emb"] if embedding else [])
    return get_peft_model(_Net(), LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, use_rslora=rslora))


def test_toolkit_layers_with_their_factors_and_scale():
    m = add_lora(_Net(), ["query", "value"], r=3, alpha=6.0, rslora=True)
    hs = find_lora_layers(m)
    assert [h.name for h in hs] == ["query", "value"] and all(h.kind == "toolkit" for h in hs)
    for h in hs:
        assert h.A is h.module.lora_A and h.B is h.module.lora_B and h.r == 3
        assert h.scaling == pytest.approx(6.0 / 3**0.5)  # rsLoRA: alpha / sqrt(r)
        assert h.base.weight.shape == (h.B.shape[0], h.A.shape[1])


@pytest.mark.parametrize("rslora", [False, True])
def test_peft_layers_names_scaling_and_live_parameters(rslora):
    m = _peft(r=2, alpha=8, rslora=rslora)
    hs = find_lora_layers(m)
    assert [h.name for h in hs] == ["query", "value"]  # PEFT's base_model.model. prefix dropped
    for h in hs:
        assert h.kind == "peft" and h.r == 2
        assert h.scaling == pytest.approx(8 / 2**0.5 if rslora else 8 / 2)
        assert h.A is h.module.lora_A["default"].weight  # live parameters, not copies
        with torch.no_grad():
            h.B.fill_(1.0)
        assert bool((h.module.lora_B["default"].weight == 1.0).all())


def test_embeddings_only_when_asked_and_adapter_typos_are_errors():
    m = _peft(embedding=True)
    assert [h.kind for h in find_lora_layers(m)] == ["peft", "peft"]
    kinds = {h.name: h.kind for h in find_lora_layers(m, embeddings=True)}
    assert kinds == {"query": "peft", "value": "peft", "emb": "peft_embedding"}
    with pytest.raises(InvalidArgumentError, match="adapter: expected one of \\['default'\\]"):
        find_lora_layers(m, "defualt")


def test_lora_factors_and_error_without_adapters():
    A, B = lora_factors(_peft())
    assert [tuple(a.shape) for a in A] == [(2, 6), (2, 6)] and [tuple(b.shape) for b in B] == [(6, 2), (8, 2)]
    assert find_lora_layers(_Net()) == []
    with pytest.raises(InvalidArgumentError, match="expected LoRA layers"):
        lora_factors(_Net())


def test_target_linears_same_names_before_and_after_wrapping():
    plain = target_linears(_Net(), ["query", "value"])
    toolkit = target_linears(add_lora(_Net(), ["query"], r=2, alpha=2.0), ["query", "value"])
    wrapped = target_linears(_peft(), ["query", "value"])
    assert set(plain) == set(toolkit) == set(wrapped) == {"query", "value"}
    assert all(isinstance(v, nn.Linear) for v in wrapped.values())
    assert "query.lora_A.default" not in target_linears(_peft(), ".*")  # a LoRA layer's own Linear modules are not targets
    with pytest.raises(InvalidArgumentError, match="target_modules"):
        target_linears(_Net(), ["nothing"])
    assert clean_name("base_model.model.encoder.query") == "encoder.query"
