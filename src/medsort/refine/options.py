"""Names and choices of the refine stage, light enough for ``medsort --help``."""

PREDICTIONS = "predictions.csv"
REFINE_RUN = "refine.json"
METHODS = ("spread", "svm", "logreg", "knn")
DEFAULT_METHOD = "spread"
TEXT_PRIOR_MODES = ("auto", "on", "off")
