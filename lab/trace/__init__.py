"""Traces: the DataFrame schema, its integer encoding (``Workload``), statistics and file formats."""

from lab.trace.io import read_trace, write_trace
from lab.trace.kernels import NEVER
from lab.trace.schema import REQUIRED_COLUMNS, numeric_column, require_columns
from lab.trace.stats import summarize, summarize_all
from lab.trace.workload import Workload, encode_trace, reuse_distances, reuse_distances_from_codes

__all__ = ["NEVER", "REQUIRED_COLUMNS", "Workload", "encode_trace", "numeric_column", "read_trace",
           "require_columns", "reuse_distances", "reuse_distances_from_codes", "summarize", "summarize_all",
           "write_trace"]
