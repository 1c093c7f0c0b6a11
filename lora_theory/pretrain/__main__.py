"""``python -m lora_theory.pretrain [--full]``: run (or read back from the store) the proof of concept and print its tables.

Prints the per-(model, L, path) summary (fast-path shares, CPU seconds per epoch, validation loss) and the
pretraining curves' R / sqrt(ln L) range per model, as Markdown (the source of the numbers in
paper_notes/computational_limits.md). Finished points are read from the store, never recomputed.
"""
from __future__ import annotations

import sys

from .experiment import experiment, summary_table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--full" not in argv
    res = experiment(quick)
    df = summary_table(res)
    print("| " + " | ".join(df.columns) + " |")
    print("|" + "---|" * len(df.columns))
    for row in df.itertuples(index=False):
        print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |")
    print()
    for _, p in res["pretrain"].iterrows():
        Rs = [r for c in p["curve"] if c["R_over_sqrt_lnL"] for r in c["R_over_sqrt_lnL"]]
        losses = [c["loss"] for c in p["curve"] if c["loss"] == c["loss"]]
        print(f"- pretrain {p['kind']}: {p['pre_steps']} steps, {p['cpu_seconds']:.1f} CPU s, final training loss {losses[-1]:.3f}, "
              f"validation loss {p['val_loss']:.3f} nats/char; last-layer heads' R / sqrt(ln {p['ft_L']}) at the start {Rs[0]:.2f}, over training "
              f"{min(Rs):.2f}-{max(Rs):.2f} (final {', '.join(f'{r:.2f}' for r in p['curve'][-1]['R_over_sqrt_lnL'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
