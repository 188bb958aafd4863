"""The recipe's ``logging`` section: which experiment trackers a run writes to (TensorBoard, MLflow, W&B).

Tracking observes a run and never changes it: the section is left out of a run's identity (study stage keys, cache
keys), so turning a tracker on or off reuses every finished run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LoggingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    tensorboard: Literal["auto", True, False] = Field(
        "auto", description="TensorBoard event files in RUN_DIR/tensorboard/; auto: when the tensorboard package is "
        "installed")
    mlflow: bool = Field(False, description="log to MLflow (the mlflow extra)")
    mlflow_uri: str | None = Field(None, description="MLflow tracking URI; None: a file store ./mlruns in the "
                                   "working directory")
    mlflow_experiment: str = Field("kdlab", min_length=1, description="MLflow experiment name")
    wandb: bool = Field(False, description="log to Weights & Biases (the wandb extra)")
    wandb_mode: Literal["offline", "online"] = Field("offline", description="W&B mode; offline writes RUN_DIR/wandb/ "
                                                      "for a later `wandb sync`")
    wandb_project: str = Field("kdlab", min_length=1, description="W&B project name")
    every_steps: int = Field(50, ge=1, description="per-step scalars (every loss term, lr, gradient norm, "
                             "throughput) every this many optimizer steps")
