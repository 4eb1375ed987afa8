"""Report: one function per figure, the run's HTML page and its templates, and comparison tables across runs."""

from aelab.report.compare import compare, markdown_table, write_comparison
from aelab.report.page import write_report
from aelab.report.run_figures import SCATTER_SAMPLE, TSNE_SAMPLE

__all__ = ["SCATTER_SAMPLE", "TSNE_SAMPLE", "compare", "markdown_table", "write_comparison", "write_report"]
