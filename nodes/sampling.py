"""What the prior, decoder and upsampler loops share: seeded noise and the sampler interface.

Seed contract: all randomness of a sampling node comes from ``torch.Generator("cpu")`` seeded with
the node's ``seed``, drawn on the CPU in float32 and moved to the device, in the order the diffusers
reference draws it (initial noise, then one draw per step but the last).  So a seed means the same
numbers whatever the device or dtype.

The loops keep the running sample in float32 and only cast the model's input to the model's dtype;
the scheduler arithmetic is never done in half precision.

A *sampler* is the part of a loop that turns a model output into the next sample.  The loops take
one as an argument, so another update rule (DDIM with eta, a RePaint-style schedule) can replace
``UnCLIPSampler`` without touching them.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from .errors import UserError

StepCallback = Callable[[int, int, "int | None", torch.Tensor], torch.Tensor]
"""``callback(i, t, prev_t, x) -> x``: runs after step ``i`` (from timestep ``t`` to ``prev_t``,
None after the last step) on the new sample ``x`` and returns the sample to continue from (e.g. with
the known region of an image pasted back in).  It must not modify ``x`` in place."""


def plain(t: torch.Tensor) -> torch.Tensor:
    """A float32 CPU copy that is an ordinary tensor (not an inference-mode one), for values that
    leave a node: the executor checks version counters to catch in-place edits of cached values,
    and inference tensors have none."""
    t = t.detach().float().cpu()
    return t.clone() if t.is_inference() else t


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


def noise(shape, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in float32, then moved to ``device``."""
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


class Sampler(Protocol):
    """The update rule of a sampling loop."""

    init_noise_sigma: float

    def timesteps(self, steps: int) -> list[int]:
        """The model's timesteps for ``steps`` sampling steps, first (noisiest) first."""

    def step(self, model_output: torch.Tensor, t: int, prev_t: int | None, x: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        """x_t -> x_prev.  ``model_output`` may carry extra (predicted variance) channels."""

    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """x_0 noised to timestep ``t`` (for editing loops)."""


class UnCLIPSampler:
    """Karlo's modified DDPM update (diffusers' ``UnCLIPScheduler``), built fresh from a config so
    that the cached model handles stay immutable and two loops never share scheduler state."""

    def __init__(self, config: dict):
        from diffusers import UnCLIPScheduler
        self.scheduler = UnCLIPScheduler.from_config(config)
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)
        self.learned_variance = self.scheduler.config.variance_type == "learned_range"
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)

    def timesteps(self, steps: int) -> list[int]:
        # set_timesteps(1) divides by zero and more steps than training timesteps repeat some:
        # both are user mistakes, reported on the node's steps field.
        if steps < 2 or steps > self.num_train_timesteps:
            raise UserError(f"steps must be between 2 and {self.num_train_timesteps} for this model, "
                            f"got {steps}", field="steps")
        self.scheduler.set_timesteps(steps)
        return [int(t) for t in self.scheduler.timesteps]

    def step(self, model_output, t, prev_t, x, generator):
        channels = x.shape[1]
        if model_output.shape[1] == 2 * channels and not self.learned_variance:
            # A model trained with learned variance, sampled with a fixed variance: the scheduler
            # would otherwise subtract a 6-channel prediction from a 3-channel sample.
            model_output = model_output[:, :channels]
        return self.scheduler.step(model_output, t, x, prev_timestep=prev_t,
                                   generator=generator).prev_sample

    def add_noise(self, x0, eps, t):
        return self.scheduler.add_noise(x0, eps, torch.tensor([int(t)]))


def uses_learned_variance(scheduler_config: dict) -> bool:
    return scheduler_config.get("variance_type", "fixed_small_log") == "learned_range"
