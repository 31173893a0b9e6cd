"""Scoring task outputs against references: the metrics (`metrics.py`) and the report (`report.py`) behind
`bigbird eval`. Nothing here loads a model, so an earlier run's records can be scored on their own."""
