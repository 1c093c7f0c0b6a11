"""Symbolic checks for LoRA-GA (claims ``lora_ga.thm3.1``, ``toolkit.sign_invariance``), in sympy.

1. :func:`check_one_step_expansion`: for a loss whose gradient at W is G (held fixed over the
   step: the first-order setting of the paper), one SGD step of size lr on A and B changes
   eta B A by exactly -lr eta^2 (G A^T A + B B^T G) + lr^2 eta^3 G A^T B^T G (symbolic
   matrices, expand == 0).
2. :func:`check_projection_identity`: with an exactly orthogonal U, V (rational, by the
   Cayley transform of a random rational skew-symmetric matrix) and symbolic singular values,
   G = U diag(sigma) V^T, A = c V_{I_A}^T, B = c U_{I_B}: G A^T A + B B^T G = c^2 G_2r for
   every direction (polynomial identity in sigma and c).
3. :func:`check_sign_invariance`: replacing (u_i, v_i) by (-u_i, -v_i) leaves
   G A^T A + B B^T G unchanged (symbolic signs s_i with s_i^2 = 1).

Each raises :class:`~proofs_checks.ProofCheckFailed` on a mismatch (also under ``python -O``); the
formula under check (the split of singular indices, the update) is a parameter, so a test can hand
in a wrong one and watch the check fail.
"""
from __future__ import annotations

import random

import sympy as sp

from . import require

__all__ = ["cayley_orthogonal", "check_one_step_expansion", "check_projection_identity", "check_sign_invariance", "run_all"]


def _mat(name: str, rows: int, cols: int) -> sp.Matrix:
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True))


def _expansion_paper(lr, eta, A, B, G):
    return -lr * eta**2 * (G * A.T * A + B * B.T * G) + lr**2 * eta**3 * G * A.T * B.T * G


def check_one_step_expansion(m: int = 3, n: int = 2, r: int = 1, claimed=_expansion_paper) -> dict:
    """eta (B' A' - B A) == -lr eta^2 (G A^T A + B B^T G) + lr^2 eta^3 G A^T B^T G, exactly (``claimed(lr, eta, A, B, G)``)."""
    lr, eta = sp.symbols("lr eta", positive=True)
    A, B, G = _mat("a", r, n), _mat("b", m, r), _mat("g", m, n)
    A1 = A - lr * eta * B.T * G  # grad_A = eta B^T G
    B1 = B - lr * eta * G * A.T  # grad_B = eta G A^T
    delta = eta * (B1 * A1 - B * A)
    require((delta - claimed(lr, eta, A, B, G)).expand() == sp.zeros(m, n), "one-step expansion fails")
    return {"m": m, "n": n, "r": r}


def cayley_orthogonal(k: int, seed: int) -> sp.Matrix:
    """An exactly orthogonal rational k x k matrix (I - S)(I + S)^{-1} for a random skew S."""
    rng = random.Random(seed)
    S = sp.zeros(k, k)
    for i in range(k):
        for j in range(i + 1, k):
            v = sp.Rational(rng.randint(-5, 5), rng.randint(1, 4))
            S[i, j], S[j, i] = v, -v
    I = sp.eye(k)
    return (I - S) * (I + S).inv()


def _split(r: int, direction: str):
    from lora_theory.lora_ga import init  # the code under check: the toolkit's split of singular indices

    return init.split_indices(r, direction, seed=0)


def check_projection_identity(m: int = 5, n: int = 4, r: int = 1, seed: int = 0, split=_split) -> dict:
    """G A^T A + B B^T G == c^2 G_2r for every direction, symbolic sigmas and c (exact); ``split(r, direction) -> (I_A, I_B)``."""
    k = min(m, n)
    Um = cayley_orthogonal(m, seed)[:, :k]
    Vn = cayley_orthogonal(n, seed + 1)[:, :k]
    require((Um.T * Um - sp.eye(k)).expand() == sp.zeros(k, k), "the Cayley transform is not orthogonal")
    sig = sp.symbols(f"sigma0:{k}", positive=True)
    c = sp.Symbol("c", positive=True)
    G = Um * sp.diag(*sig) * Vn.T
    G2r = Um[:, : 2 * r] * sp.diag(*sig[: 2 * r]) * Vn[:, : 2 * r].T
    checked = []
    for direction in ("ArB2r", "A2rBr", "ArBr", "random"):
        iA, iB = split(r, direction)
        A = c * sp.Matrix.hstack(*[Vn[:, i] for i in iA]).T
        B = c * sp.Matrix.hstack(*[Um[:, i] for i in iB])
        require((G * A.T * A + B * B.T * G - c**2 * G2r).expand() == sp.zeros(m, n), f"projection identity fails for {direction}")
        checked.append(direction)
    return {"m": m, "n": n, "r": r, "directions": checked}


def _update_first_order(G, A, B):
    return G * A.T * A + B * B.T * G


def check_sign_invariance(m: int = 4, n: int = 3, r: int = 1, seed: int = 2, step=_update_first_order) -> dict:
    """Signs s_i on (u_i, v_i) with s_i^2 = 1 leave G A^T A + B B^T G unchanged (``step(G, A, B)``: the claimed update)."""
    k = min(m, n)
    Um = cayley_orthogonal(m, seed)[:, :k]
    Vn = cayley_orthogonal(n, seed + 1)[:, :k]
    sig = sp.symbols(f"sigma0:{k}", positive=True)
    s = sp.symbols(f"s0:{2 * r}", real=True)
    G = Um * sp.diag(*sig) * Vn.T
    iA, iB = _split(r, "ArB2r")

    def update(sign):
        A = sp.Matrix.hstack(*[sign[i] * Vn[:, i] for i in iA]).T
        B = sp.Matrix.hstack(*[sign[i] * Um[:, i] for i in iB])
        return step(G, A, B)

    diff = (update(s) - update([1] * (2 * r))).expand()
    diff = diff.subs({si**2: 1 for si in s})
    require(diff == sp.zeros(m, n), "sign flip changes the update")
    return {"m": m, "n": n, "r": r}


def run_all() -> dict:
    return {
        "one_step": check_one_step_expansion(),
        "projection_r1": check_projection_identity(),
        "projection_r2": check_projection_identity(m=5, n=4, r=2),
        "signs": check_sign_invariance(),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_all(), indent=2))
