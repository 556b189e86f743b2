"""The applications built on the library: the command line (``cli``: ``dali-mixup``, ``python -m dali_mixup``),
the flags its subcommands share (``args``), the trainer (``train``), the benchmark (``bench``), the demo
(``demo``) and timm's train.py flags (``timm_flags``). The library core (``dali_mixup``'s own modules) never
imports from here."""
