"""Client-side tasks: the :class:`Task` contract, the registry, the built-in tasks and partitioning.

Importing this package registers the built-in tasks ``topics`` and ``arithmetic``.
"""

from client.tasks.base import ModelKind, Task, TaskMetrics
from client.tasks.registry import build_task, get_task_class, register_task, task_names
from client.tasks.partition import clear_partition_cache, partition_dataset
from client.tasks.topics import TopicClassification
from client.tasks.arithmetic import ArithmeticWordProblems
from client.tasks.guideq import GuidedClassification  # noqa: F401  (registers "guideq")
from client.tasks.structformer import StructureMLM  # noqa: F401  (registers "structformer")
from client.tasks.safety.task import SafetyArithmetic  # noqa: F401  (registers "safety-arithmetic")
from client.tasks.tokenswap.task import Memorization  # noqa: F401  (registers "memorization")
from client.tasks.instruct import InstructionTuning  # noqa: F401  (registers "instruct")
from client.tasks.bbc_news import BBCNews  # noqa: F401  (registers "bbc-news")

__all__ = [
    "ArithmeticWordProblems",
    "ModelKind",
    "Task",
    "TaskMetrics",
    "TopicClassification",
    "build_task",
    "clear_partition_cache",
    "get_task_class",
    "partition_dataset",
    "register_task",
    "task_names",
]
