"""Computational limits of LoRA on attention (Hu, Su, Chen, Liu, Liu 2024; claims ``limits.*``).

Read in dependency order:

- ``instance``: the LoRA-attention instance (X, W*, A, B, Y, beta) and its norm bounds;
- ``exact``: the exact gradients (closed form of Lemma 3.1 / 3.2, row-blocked) and the autograd reference;
- ``polynomial``: the exp polynomial P(t) ~ e^{R t} on [-1, 1] and its degree;
- ``features``: the polynomial feature maps phi, psi with phi(q) . psi(k) = P(q . k), k = C(g + d, d);
- ``lowrank``: the LoRA gradient chain with exp(S) replaced by any positive factorization U V^T;
- ``approx``: the polynomial method (features + the low-rank chain + a certified error bound);
- ``plan``: degree, rank, bytes and seconds of both methods before they run (and ``check_resources``);
- ``calibration``: the cost model's coefficients, fitted by timing both methods here;
- ``random_features``: the FAVOR+ peer (random features + the same low-rank chain);
- ``norm_sweeps``: sweeps over the norm bound Gamma, L and d (the phase transition);
- ``regime``: real models' attention heads on the phase diagram (score range R per head on real
  text, real layers as instances, the report during fine-tuning).
"""
