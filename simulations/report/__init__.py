"""The communication-vs-accuracy report, rendered from run folders (``corolla compare`` / ``corolla report``)."""

from simulations.report.render import markdown_table, write_report
from simulations.report.runs import RunData, RunFolderError, headline, load_run

__all__ = ["RunData", "RunFolderError", "headline", "load_run", "markdown_table", "write_report"]
