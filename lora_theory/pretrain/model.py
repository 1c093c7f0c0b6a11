"""A small causal character-level transformer LM, standard or norm-controlled (the proof of concept's two models).

Per block (pre-norm, no positional embedding: causal attention orders the tokens by itself):

    h = x + Attn(LN(x)) W_O,    x' = h + MLP(LN(h)),    Attn: H heads of width d, S = beta Q K^T, Q = LN(x) W_Q

Norm control (``controlled=True``), the choice documented in paper_notes/computational_limits.md: the
LayerNorm before attention has no gain and no bias, so every row of its output has norm sqrt(n) (up to
LayerNorm's epsilon), and after every optimizer step W_Q and W_K of each head are rescaled so that
beta n ||W_Q,h||_2 ||W_K,h||_2 <= R_max (spectral norms): by Cauchy-Schwarz every score then satisfies
|beta q . k| <= R_max: a capped temperature on normalized inputs, which keeps the Cauchy-Schwarz score
range the polynomial method covers at R_max whatever the weights learn. The standard model has a free
LayerNorm gain and no constraint.

Reference: Hu et al. (2024), App. G (standard vs outlier-free models) and Thm 3.1 (the norm threshold).
"""
from __future__ import annotations

import torch
from torch import nn

from ..limits.module import LoRAAttention

__all__ = ["TinyLM", "char_vocab", "count_parameters", "encode_text", "nats_per_char"]


def char_vocab(text: str) -> list[str]:
    """The sorted distinct characters of ``text`` (the token set)."""
    return sorted(set(text))


def encode_text(text: str, vocab: list[str]) -> torch.Tensor:
    """(len(text),) long token ids; characters outside ``vocab`` map to id 0."""
    idx = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([idx.get(c, 0) for c in text], dtype=torch.long)


class _Block(nn.Module):
    def __init__(self, n: int, heads: int, d: int, controlled: bool) -> None:
        super().__init__()
        self.heads, self.d = heads, d
        self.ln1 = nn.LayerNorm(n, elementwise_affine=not controlled)
        self.q, self.k, self.v = (nn.Linear(n, heads * d, bias=False) for _ in range(3))
        self.o = nn.Linear(heads * d, n, bias=False)
        self.ln2 = nn.LayerNorm(n)
        self.mlp = nn.Sequential(nn.Linear(n, 4 * n), nn.GELU(), nn.Linear(4 * n, n))
        self.lora: LoRAAttention | None = None

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln1(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attention_input(x)
        if self.lora is not None:
            att = self.lora(a)
        else:
            B, L, _ = a.shape
            q, k, v = (p(a).view(B, L, self.heads, self.d).transpose(1, 2) for p in (self.q, self.k, self.v))
            att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.d**-0.5).transpose(1, 2).reshape(B, L, -1)
        h = x + self.o(att)
        return h + self.mlp(self.ln2(h))


class TinyLM(nn.Module):
    """Character LM: embedding (vocab, n) -> ``layers`` blocks -> LayerNorm -> tied output.

    Args:
        vocab: number of tokens; n: width; heads, d: attention heads and head width (heads * d need not be n).
        layers: blocks; controlled: the norm control (see the module docstring); R_max: its cap on the score range.
    """

    def __init__(self, vocab: int, n: int = 8, heads: int = 2, d: int = 4, layers: int = 2, *, controlled: bool = False, R_max: float = 2.0) -> None:
        super().__init__()
        self.n, self.heads, self.d, self.controlled, self.R_max = n, heads, d, controlled, R_max
        self.emb = nn.Embedding(vocab, n)
        self.blocks = nn.ModuleList(_Block(n, heads, d, controlled) for _ in range(layers))
        self.ln = nn.LayerNorm(n)

    @property
    def beta(self) -> float:
        return self.d**-0.5

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L, vocab) logits."""
        x = self.emb(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x) @ self.emb.weight.T

    def last_attention_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """The input of the last block's attention (after its LayerNorm), (B, L, n)."""
        x = self.emb(tokens)
        for blk in self.blocks[:-1]:
            x = blk(x)
        return self.blocks[-1].attention_input(x)

    @torch.no_grad()
    def apply_norm_control(self) -> None:
        """Rescale W_Q, W_K per head so that beta n ||W_Q,h||_2 ||W_K,h||_2 <= R_max (no-op for the standard model)."""
        if not self.controlled:
            return
        for blk in self.blocks:
            Wq = blk.q.weight.view(self.heads, self.d, self.n)  # (H, d, n): nn.Linear stores W^T per head
            Wk = blk.k.weight.view(self.heads, self.d, self.n)
            sq, sk = torch.linalg.matrix_norm(Wq, ord=2), torch.linalg.matrix_norm(Wk, ord=2)  # (H,)
            top = self.beta * self.n * sq * sk
            f = torch.where(top > self.R_max, (self.R_max / top).sqrt(), torch.ones_like(top))  # split the shrink between W_Q and W_K
            Wq.mul_(f[:, None, None])
            Wk.mul_(f[:, None, None])

    @torch.no_grad()
    def head_ranges(self, tokens: torch.Tensor) -> torch.Tensor:
        """(H,) Cauchy-Schwarz score range R_h = beta max_i ||q_i|| max_j ||k_j|| of the last block's heads on ``tokens`` (B, L)."""
        a = self.last_attention_input(tokens)
        blk = self.blocks[-1]
        B, L, _ = a.shape
        q = blk.q(a).view(B, L, self.heads, self.d)
        k = blk.k(a).view(B, L, self.heads, self.d)
        return self.beta * q.norm(dim=-1).amax(dim=(0, 1)) * k.norm(dim=-1).amax(dim=(0, 1))

    def attach_lora(self, *, r: int = 2, mode: str = "auto", eps: float = 1e-3, seed: int = 0) -> LoRAAttention:
        """Replace the last block's attention by a LoRAAttention with its weights (LoRA on q, k, v); freeze everything else."""
        blk = self.blocks[-1]
        W = {mu: getattr(blk, mu).weight.detach().T.clone() for mu in "qkv"}  # (n, H d) row convention
        attn = LoRAAttention(self.n, self.heads, self.d, r=r, adapt="qkv", causal=True, beta=self.beta, eps=eps, mode=mode, W=W, seed=seed)
        for p in self.parameters():
            p.requires_grad_(False)
        blk.lora = attn
        return attn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def nats_per_char(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy (nats): logits (B, L, V) predict tokens shifted by one."""
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


