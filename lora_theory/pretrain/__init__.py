"""The limits paper's proof of concept (App. G) rebuilt with the mechanism switched on (issue 23).

Two small causal character-level transformer LMs are pretrained from scratch on real prose (CPython's
documentation, :func:`lora_theory.lora.text.reference_text`): a standard one and a norm-controlled one
whose attention scores stay below the threshold. Both are then LoRA-fine-tuned on held-out text at long
context with :class:`lora_theory.limits.module.LoRAAttention` in "auto" (and, for the comparison, in
"exact"). ``model``: the LM and its norm control; ``experiment``: sweep points (resumable) and tables.
"""
