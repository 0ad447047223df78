"""The result-file schema, re-exported for leaderboard code: it lives in the core,
:mod:`ctbench.result_schema` (the runner validates what it writes with it, so the core must
not depend on ``ctbench.leaderboards``)."""

from __future__ import annotations

from ctbench.result_schema import (
    MIGRATIONS, SCHEMA_VERSION, AdapterInfo, BootstrapInfo, CardInfo, CardInput, CardWeights, CaseNote, ConfigInfo,
    ConvergenceWarnings, EnvironmentInfo, MetricValue, Migration, ModelInfo, ProbeInfo, ResultFile, SplitInfo,
    TaskInfo, TimingsInfo, WeightsInfo, detect_version, is_plain_file_name, migrate, parse_result, read_result,
)

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "AdapterInfo", "BootstrapInfo", "CardInfo", "CardInput", "CardWeights", "CaseNote",
    "ConfigInfo", "ConvergenceWarnings", "EnvironmentInfo", "MetricValue", "Migration", "ModelInfo", "ProbeInfo",
    "ResultFile", "SplitInfo", "TaskInfo", "TimingsInfo", "WeightsInfo", "detect_version", "is_plain_file_name",
    "migrate", "parse_result", "read_result",
]
