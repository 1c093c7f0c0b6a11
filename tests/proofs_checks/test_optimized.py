"""The proof checks still fail under ``python -O`` (which strips ``assert``): they raise ProofCheckFailed."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent("""
    import sys
    assert False, "asserts are live: not running under -O"
    from proofs_checks import ProofCheckFailed, lora_ga, limits_lemma31, limits_polynomial, lora_plus
    # the right identities pass
    lora_ga.check_projection_identity(m=4, n=3, r=1)
    limits_polynomial.check_multinomial_identity(d=2, g=2)
    lora_plus.check_prop2()
    # wrong ones must still raise, assert statements or not
    wrong = [
        lambda: lora_ga.check_projection_identity(m=4, n=3, r=1, split=lambda r, d: (list(range(r)), list(range(r)))),
        lambda: limits_polynomial.check_multinomial_identity(d=2, g=2, weight=lambda j, c: 1),
        lambda: limits_lemma31.check_lemma31_score_gradient(L=2, d=1, p_formula=lambda f, q, rho, i, j: f[i, j] * q[i, j]),
        lambda: limits_polynomial.check_normalizer_perturbation(L=2, bound=lambda delta: delta),
    ]
    caught = 0
    for w in wrong:
        try:
            w()
        except ProofCheckFailed:
            caught += 1
    print(f"caught {caught} of {len(wrong)}")
    sys.exit(0 if caught == len(wrong) else 1)
""")


def test_proof_checks_fail_under_python_O():
    res = subprocess.run([sys.executable, "-O", "-c", _SCRIPT], cwd=_ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "caught 4 of 4" in res.stdout
