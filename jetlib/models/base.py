"""The interface every network has: features, a head, a head reset per task (as timm's models).

``forward_features`` (B, C, H, W) -> (B, num_features) is what pretraining, the k-NN monitor and
the report's activation maps share; ``forward_head`` maps features to the task's output;
``reset_head(task, **head_cfg)`` swaps the head for a task's (the task builds it, see
:mod:`jetlib.tasks`), so fine-tuning needs no wrapper class around the encoder. A network starts
with no head (``nn.Identity``): ``forward`` is then the feature vector.

A linear probe freezes the features (:meth:`Encoder.freeze_features`): their parameters stop
training, their modules stay in eval mode (no dropout noise) and run without autograd.
"""

from __future__ import annotations

import torch
from torch import nn


class Encoder(nn.Module):
    """Base of every registered network (:func:`jetlib.models.register_model`).

    A subclass sets ``num_features`` and implements ``forward_features``; everything else has a default.

    Attributes:
        arch: the registered name it was built under (set by :func:`jetlib.models.create`).
        task: the task whose head it carries, or None (no head: ``forward`` gives features).
        head_config: the keyword arguments of that head, recorded in ``model.pt``.
        tasks: the tasks this network has heads for; None: any registered task.
        first_conv: the weight of its input convolution, which :func:`jetlib.weights.load_adapted` adapts
            to another channel count (None: none is adapted).
    """

    tasks: tuple[str, ...] | None = None
    first_conv: str | None = None
    num_features: int

    def __init__(self):
        super().__init__()
        self.arch = ""
        self.task: str | None = None
        self.head_config: dict = {}
        self.features_frozen = False
        self.head: nn.Module = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, num_features)
        raise NotImplementedError

    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.features_frozen:
            with torch.no_grad():  # frozen features: no graph through the encoder
                h = self.forward_features(x)
        else:
            h = self.forward_features(x)
        return self.forward_head(h)

    def make_head(self, task: str, **head_cfg) -> nn.Module:
        """The head for ``task`` on these features; the task builds it (overridden by VGG's ensemble)."""
        from jetlib import tasks  # tasks import models.heads: resolved at call time, not at import

        return tasks.get(task).head(self.num_features, **head_cfg)

    def reset_head(self, task: str, **head_cfg) -> Encoder:
        """Replace the head by ``task``'s (new weights); returns self.

        Raises:
            ConfigError: this network has no head for ``task``.
        """
        if self.tasks is not None and task not in self.tasks:
            from jetlib.errors import ConfigError

            raise ConfigError(f"the {self.arch or type(self).__name__} network has heads for "
                              f"{', '.join(self.tasks)} only, not {task!r}")
        self.head = self.make_head(task, **head_cfg)
        self.task, self.head_config = task, dict(head_cfg)
        return self

    def freeze_features(self) -> Encoder:
        """Linear probe: only the head trains; the feature modules stay in eval mode. Returns self."""
        for name, p in self.named_parameters():
            if not name.startswith("head."):
                p.requires_grad_(False)
        self.features_frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.features_frozen:
            for name, child in self.named_children():
                if name != "head":
                    child.train(False)  # frozen features: no dropout noise, fixed statistics
        return self

    def config(self) -> dict:
        """The keyword arguments that rebuild this network with :func:`jetlib.models.create`."""
        return dict(getattr(self, "_create_args", {}))

    def stages(self) -> dict[str, nn.Module]:
        """Named feature stages, input to output, for the report's activation maps (forward hooks).

        Default: the network's direct submodules other than the head, in order."""
        return {name: m for name, m in self.named_children() if name != "head"}
