"""Instruction tuning as a task plugin: ``task.name = "instruct"``, settings in ``instruct.*``.

Modules, one stage each: ``config`` (the ``instruct.*`` section), ``sources`` (files, folders, HF
datasets) and ``reasoning`` (reasoning-gym generators and their scorers), ``formats`` (alpaca /
chat / prompt-completion rows -> examples), ``splits`` (pool, held-out test split, partition
label), ``prompting`` (templates, response-only labels, truncation), ``scoring`` and
``evaluation``, and ``task`` (the registered :class:`InstructionTuning`).
"""

from client.tasks.instruct.config import InstructConfig
from client.tasks.instruct.task import InstructionTuning

__all__ = ["InstructConfig", "InstructionTuning"]
