"""GUIDEQ (arXiv 2411.05991) as a task plugin: ``task.name = "guideq"`` (``docs/tasks.md §6``).

Modules: ``data`` (synthetic set with planted keywords, the user's JSONL/CSV), ``occlusion``
(explanations and lexica), ``questioning`` (questioners, parser, answerers), ``guided`` (the
guided-question metrics) and ``task`` (the registered :class:`GuidedClassification`).
"""

from client.tasks.guideq.task import GuidedClassification

__all__ = ["GuidedClassification"]
