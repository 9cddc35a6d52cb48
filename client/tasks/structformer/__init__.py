"""StructFormer (arXiv 2411.16618) as a task plugin: ``task.name = "structformer"`` (``docs/tasks.md §7``).

Modules: ``docs`` (document trees from Markdown, LaTeX via pylatexenc, JSON), ``collator``
(flattening, global-attention policies, whole-word masking, the structure switch), ``slots``
(synthetic slot documents), ``metrics`` (``docs/tasks.md §7``) and ``task`` (the registered :class:`StructureMLM`).
"""

from client.tasks.structformer.task import StructureMLM

__all__ = ["StructureMLM"]
