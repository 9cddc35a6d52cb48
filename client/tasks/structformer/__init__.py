"""StructFormer (arXiv 2411.16618) as a task plugin: ``task.name = "structformer"`` (spec plugins.md §4).

Modules: ``docs`` (document trees from Markdown, LaTeX via pylatexenc, JSON), ``collator``
(flattening, global-attention policies, whole-word masking, the structure switch), ``slots``
(synthetic slot documents), ``metrics`` (§4c) and ``task`` (the registered :class:`StructureMLM`).
"""

from client.tasks.structformer.task import StructureMLM

__all__ = ["StructureMLM"]
