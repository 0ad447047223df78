"""Built-in task categories, one module each, registered lazily by reference.

Third-party packages add categories through the ``ctbench.tasks`` entry-point group.
"""

BUILTIN_TASKS: dict[str, str] = {
    "classification": "ctbench.tasks.classification:ClassificationTask",
    "regression": "ctbench.tasks.regression:RegressionTask",
    "survival": "ctbench.tasks.survival:SurvivalTask",
    "retrieval": "ctbench.tasks.retrieval:RetrievalTask",
    "localisation": "ctbench.tasks.localisation:LocalisationTask",
    "segmentation": "ctbench.tasks.segmentation:SegmentationTask",
    "report-generation": "ctbench.tasks.report_generation:ReportGenerationTask",
}
