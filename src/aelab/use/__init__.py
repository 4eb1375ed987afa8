"""Use a trained model: the Python inference API (``aelab.load``), file jobs, code files, export, the estimator."""
