"""Teachers: the frozen networks that give a distilling student its soft targets.

* :mod:`kdlab.teacher.module`: :class:`Teacher`, what a method calls (network, re-normalisation, compiled graph,
  logit cache).
* :mod:`kdlab.teacher.run`: a teacher from a kdlab run directory, checked against the student's task.
* how the engine builds a run's teachers (``MethodContext.load_teacher``) is :mod:`kdlab.train.teachers`.
* :mod:`kdlab.teacher.cache`: the logit cache per (image, view); :mod:`kdlab.teacher.compiled`: frozen graphs.
"""

from kdlab.teacher.module import Renormalise, Teacher

__all__ = ["Renormalise", "Teacher"]
