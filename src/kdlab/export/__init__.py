"""``kdlab export``: what a run trained, in another form.

* :func:`export_head` (:mod:`kdlab.export.heads`): one branch of an online-distillation run as a run directory of
  its own, which ``kdlab eval``, teachers and :func:`kdlab.analysis.runs.load_run` read like any run;
* :func:`export_model` (:mod:`kdlab.export.deployable`): the inference network of any completed run as one
  deployable file (ONNX, TorchScript or plain safetensors, :mod:`kdlab.export.formats`) with a JSON record beside
  it, published only after the file was loaded back and run on the run's own test images
  (:mod:`kdlab.export.check`). docs/export.md says how to load each format.

The two compose through the run directory: ``kdlab export RUN --head peer2 --out P2`` then
``kdlab export P2 --format onnx``.
"""

from kdlab.export.deployable import ExportedFile, export_model
from kdlab.export.formats import FORMATS
from kdlab.export.heads import export_head

__all__ = ["FORMATS", "ExportedFile", "export_head", "export_model"]
