"""A user's callback, registered from outside adasp (loaded with ``--plugin``): it keeps a
device-side running sum of the loss and a step count (its state, saved in checkpoints) and
writes them to ``path`` at the end."""

from __future__ import annotations

import json

import torch

from adasp.engine import CALLBACKS, Callback


@CALLBACKS.register("loss_sum")
class LossSum(Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self.total = torch.zeros((), dtype=torch.float64)
        self.steps = 0
        self.epochs_seen: list[int] = []

    def on_step_end(self, trainer, step) -> None:
        self.total = self.total.to(step.total.device) + step.total.detach().double()
        self.steps += 1

    def on_epoch_end(self, trainer) -> None:
        self.epochs_seen.append(trainer.state.epoch)

    def on_fit_end(self, trainer) -> None:
        with open(self.path, "w") as handle:
            json.dump({"total": self.total.item(), "steps": self.steps,
                       "epochs": self.epochs_seen}, handle)  # fmt: skip

    def state_dict(self) -> dict:
        return {"total": self.total.cpu(), "steps": self.steps, "epochs": list(self.epochs_seen)}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.steps = state["total"], state["steps"]
        self.epochs_seen = list(state["epochs"])
