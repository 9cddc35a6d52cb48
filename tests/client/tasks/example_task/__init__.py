"""An example task package, as docs/extending.md shows it: ``task.name = "digit-parity"``.

Importing the package registers its config section (``digit-parity.*``) and the task; nothing
else in Corolla changes. ``tests/client/tasks/test_example_task.py`` imports it and runs it.
"""

from tests.client.tasks.example_task.config import DigitParityConfig
from tests.client.tasks.example_task.task import DigitParity

__all__ = ["DigitParity", "DigitParityConfig"]
