"""Experiments: many runs, planned and run together.

* :mod:`kdlab.experiments.pipeline`: stages chained by teacher (``teacher: "@stage"``), generations and sweeps,
  with unchanged stages reused.
* :mod:`kdlab.experiments.study`: a pipeline over seeds with a baseline; :mod:`kdlab.experiments.quickstart` is one.
* :mod:`kdlab.experiments.tune`: Optuna searches; :mod:`kdlab.experiments.optuna_storage` their storage.
* :mod:`kdlab.experiments.workqueue` and :mod:`kdlab.experiments.workers`: runs shared out between processes.
"""
