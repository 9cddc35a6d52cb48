"""The built-in adapter kinds; importing this package registers them (``adapters.kind_registry``).

========= ============================ ============= ======================= ==============
name      paper                        trains        frozen (sent once)      package
========= ============================ ============= ======================= ==============
lora      LoRA, arXiv 2106.09685       A, B (+head)  nothing                 plain_lora
ffa       FFA-LoRA, arXiv 2403.12313   B (+head)     A                       ffa_lora
lora-sb   LoRA-SB, arXiv 2411.19557    R (+head)     A, B                    lora_sb
abba      ABBA, arXiv 2505.14238       B1, A1, B2,   nothing                 abba
                                       A2 (+head)
========= ============================ ============= ======================= ==============

Another kind is one more module that subclasses ``adapters.adapter_kind.AdapterKind`` and decorates
it with ``@register_adapter_kind``; it is registered when imported and nothing here changes.
"""

from adapters import abba, ffa_lora, lora_sb, plain_lora  # noqa: F401  (each registers its kind)

BUILTIN_KINDS: tuple[str, ...] = ("lora", "ffa", "lora-sb", "abba")  # the order `corolla adapters` lists them in
