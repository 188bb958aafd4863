"""TensorBoard event files in ``RUN_DIR/tensorboard/``, written with ``torch.utils.tensorboard.SummaryWriter``.

What one run's event directory holds:

* the per-step scalars (``loss/<term>``, ``loss/total``, ``lr``, ``grad_norm``, ``images_per_second``) at their
  global optimizer step, and every numeric value of each epoch record as ``epoch/<key>`` at the epoch's last step;
* the resolved config as YAML text (tag ``config``) at step 0;
* at the end of a completed run: the test split's reliability diagram and confusion matrix as images
  (``test/reliability_diagram``, ``test/confusion_matrix``) and the hparams plugin's summaries (method, its
  parameters, model and seed against the final test_acc, test_nll, test_ece as ``hparam/<metric>``) in this same
  directory, so ``tensorboard --logdir`` on a study folder compares its runs.

A resumed run appends to the same directory with ``purge_step`` one past the step it resumes from: TensorBoard then
hides whatever the interrupted session logged after its checkpoint, so re-done steps are not shown twice while the
checkpointed step itself (the last epoch's record) stays. Images are stored with ``add_image`` from arrays rendered
without pyplot (:mod:`kdlab.tracking.figures`), which is what ``add_figure`` would do through pyplot's global state.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from kdlab.tracking import Backend, as_text, epoch_scalars

FOLDER = "tensorboard"
#: Final metrics the hparams view compares runs on (from the summary's ``final`` block).
HPARAM_METRICS = ("test_acc", "test_nll", "test_ece")


class TensorBoardTracker(Backend):
    name = "tensorboard"
    package = "tensorboard"
    setting = "logging.tensorboard"
    _writer = None
    _step = 0

    def load(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self._writer_class = SummaryWriter

    def start(self, *, config: dict, run_dir: Path, resumed: bool, step: int) -> None:
        folder = Path(run_dir) / FOLDER
        continuing = folder.is_dir() and any(folder.iterdir())
        # An earlier session wrote here: hide what it logged past the checkpoint we go on from (everything, when the
        # run starts over because it was stopped before its first checkpoint).
        purge_step = (step + 1 if resumed else 0) if continuing else None
        self._writer = self._writer_class(log_dir=str(folder), purge_step=purge_step, flush_secs=30)
        self._step = step
        if not resumed:
            self._writer.add_text("config", config_text(config), global_step=0)
            self._writer.flush()

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._step = step

    def log_epoch(self, epoch: int, step: int, record: dict) -> None:
        for tag, value in epoch_scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._step = step
        self._writer.flush()  # an epoch is on disk once its record is: a killed run loses at most one epoch of steps

    def finish(self, *, status: str, summary: dict, run_dir: Path) -> None:
        try:
            if status == "completed":
                self._end_of_run(summary, Path(run_dir))
        finally:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()

    def _end_of_run(self, summary: dict, run_dir: Path) -> None:
        predictions = run_dir / "predictions" / "test.npz"
        if predictions.is_file():
            from kdlab.io import read_predictions
            from kdlab.tracking import figures

            arrays = read_predictions(predictions)
            logits, labels = arrays["logits"], arrays["labels"]
            for tag, build in (("test/reliability_diagram", figures.reliability_figure),
                               ("test/confusion_matrix", figures.confusion_figure)):
                self._writer.add_image(tag, figures.to_rgb(build(logits, labels)), global_step=self._step,
                                       dataformats="HWC")
        self._write_hparams(summary)

    def _write_hparams(self, summary: dict) -> None:
        """The hparams plugin's three summaries and the metric scalars, into this run's own event directory
        (``SummaryWriter.add_hparams`` would open a sub-directory named by the time instead)."""
        from torch.utils.tensorboard.summary import hparams

        final = summary.get("final") or {}
        metrics = {f"hparam/{key}": float(final[key]) for key in HPARAM_METRICS
                   if isinstance(final.get(key), (int, float))}
        if not metrics:
            return
        experiment, session_start, session_end = hparams(run_hparams(summary), metrics)
        for event in (experiment, session_start, session_end):
            self._writer.file_writer.add_summary(event, self._step)
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, value, global_step=self._step)
        self._writer.flush()


def run_hparams(summary: dict) -> dict[str, object]:
    """method, ``method.<param>`` for each method parameter, model and seed, as values the hparams plugin takes
    (bool, int, float, str; anything else as its JSON text)."""
    found = {"method": summary.get("method"), **{f"method.{key}": value for key, value in
                                                 (summary.get("method_params") or {}).items()},
             "model": summary.get("model"), "seed": summary.get("seed")}
    return {key: value if isinstance(value, (bool, int, float, str)) else as_text(value)
            for key, value in found.items()}


def config_text(config: dict) -> str:
    """The config as YAML, each line indented by four spaces: TensorBoard's text view shows it as a code block."""
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    return "\n".join("    " + line for line in text.splitlines())
