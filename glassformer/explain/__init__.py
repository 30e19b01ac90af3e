"""Tools to see inside a model: parameter tables (and, later, attention capture, plots, probes)."""

from .params import (
    ParamRow,
    ParamTable,
    format_param_table,
    human_count,
    param_table,
    parameter_kind,
)

__all__ = ["ParamRow", "ParamTable", "format_param_table", "human_count", "param_table", "parameter_kind"]
