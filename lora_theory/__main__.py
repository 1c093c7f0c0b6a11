"""``python -m lora_theory``: the command line (:mod:`lora_theory.cli`)."""
from .cli import main

main()
