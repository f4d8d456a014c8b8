"""What every family's sampling loops share: seeded noise, the sampler interface, the generic
denoising loop and classifier-free guidance batching.

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

from ..errors import UserError

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


def cfg_batch(text, uncond, guided: bool):
    """(pooled, hidden, mask) with the unconditional rows first when guiding, so classifier-free
    guidance runs both branches in one forward."""
    if not guided:
        return text
    if uncond is None:
        raise ValueError("guidance needs the unconditional branch")
    return tuple(torch.cat([u, c]) for u, c in zip(uncond, text))


def step_tensor(t: int) -> torch.Tensor:
    """A timestep as the 0-d int64 tensor diffusers' pipelines pass: the models treat it as
    they treat an int, and a compiled model then sees one input, not a new constant (and a new
    graph) at every step."""
    return torch.tensor(int(t), dtype=torch.int64)


def make_generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed))


class Generators:
    """The generators of several runs batched into one model call (``--batch``): ``groups`` is
    [(generator, rows)], each run's rows consecutive.  Every draw takes each run's rows from that
    run's own generator, with the shape the run alone would draw, so each run's noise is exactly
    what it draws unbatched; only the model's arithmetic sees the larger batch."""

    def __init__(self, groups: list[tuple[torch.Generator, int]]):
        self.groups = list(groups)

    @property
    def rows(self) -> int:
        return sum(r for _, r in self.groups)

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.split([r for _, r in self.groups]))


def noise(shape, generator, device: torch.device | str) -> torch.Tensor:
    """Standard normal noise drawn on the CPU in float32, then moved to ``device``; with
    ``Generators``, each run's rows from its own generator."""
    if isinstance(generator, Generators):
        if shape[0] != generator.rows:
            raise ValueError(f"{shape[0]} rows drawn for batched runs of {generator.rows}")
        return torch.cat([torch.randn((r, *shape[1:]), generator=g, dtype=torch.float32)
                          for g, r in generator.groups]).to(device)
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def per_run(step):
    """A sampler's ``step`` that, under ``Generators``, steps each run's rows on their own
    (the update is elementwise, so this is exactly the unbatched arithmetic, and the noise each
    run's scheduler draws comes from its own generator)."""
    def wrapped(self, model_output, t, prev_t, x, generator):
        if not isinstance(generator, Generators):
            return step(self, model_output, t, prev_t, x, generator)
        sizes = [r for _, r in generator.groups]
        parts = [step(self, o, t, prev_t, xi, g) for o, xi, (g, _) in
                 zip(model_output.split(sizes), x.split(sizes), generator.groups)]
        return torch.cat(parts)
    return wrapped


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

    @per_run
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


SCHEDULERS = ("UnCLIPScheduler", "DDPMScheduler", "DDIMScheduler", "PNDMScheduler")


def scheduler_class(config: dict):
    """The diffusers scheduler class a config names (UnCLIPScheduler when it names none)."""
    name = config.get("_class_name") or "UnCLIPScheduler"
    if name not in SCHEDULERS:
        raise UserError(f"the checkpoint's scheduler is a {name}; unclip-nodes samples with "
                        f"{', '.join(SCHEDULERS)}", field="decoder")
    import diffusers
    return getattr(diffusers, name)


class SchedulerSampler:
    """A checkpoint's own diffusers scheduler as the update rule (Kandinsky 2.2's DDPM, Stable
    unCLIP's PNDM or DDIM), built fresh from the config, like ``UnCLIPSampler``.  Predicted
    variance channels are dropped unless the scheduler uses them, as diffusers' pipelines do.
    A scheduler that draws noise (DDPM) steps each batched run's rows with its own generator;
    the others step the whole batch at once (PNDM keeps a history between steps)."""

    def __init__(self, config: dict):
        self.scheduler = scheduler_class(config).from_config(config)
        self.init_noise_sigma = float(self.scheduler.init_noise_sigma)
        self.learned_variance = getattr(self.scheduler.config, "variance_type", None) in (
            "learned", "learned_range")
        self.num_train_timesteps = int(self.scheduler.config.num_train_timesteps)
        import inspect
        self.draws = type(self.scheduler).__name__ in ("DDPMScheduler", "UnCLIPScheduler")
        self.takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters

    def timesteps(self, steps: int) -> list[int]:
        if steps < 1 or steps > self.num_train_timesteps:
            raise UserError(f"steps must be between 1 and {self.num_train_timesteps} for this "
                            f"model, got {steps}", field="steps")
        self.scheduler.set_timesteps(steps)
        return [int(t) for t in self.scheduler.timesteps]

    def _step(self, model_output, t, prev_t, x, generator):
        if model_output.shape[1] == 2 * x.shape[1] and not self.learned_variance:
            model_output = model_output[:, :x.shape[1]]
        kw = {"generator": generator} if self.takes_generator else {}
        return self.scheduler.step(model_output, t, x, **kw).prev_sample

    _per_run = per_run(_step)

    def step(self, model_output, t, prev_t, x, generator):
        if self.draws:
            return self._per_run(model_output, t, prev_t, x, generator)
        if isinstance(generator, Generators):
            generator = None  # nothing is drawn: one step over every run's rows
        return self._step(model_output, t, prev_t, x, generator)

    def add_noise(self, x0, eps, t):
        return self.scheduler.add_noise(x0, eps, torch.tensor([int(t)]))

    def renoise(self, x_prev, prev_t, t, eps):
        return renoise(self.scheduler.alphas_cumprod, x_prev, prev_t, t, eps)


def uses_learned_variance(scheduler_config: dict) -> bool:
    return scheduler_config.get("variance_type", "fixed_small_log") == "learned_range"


# --- editing support: alphas, re-noising, DDIM ---------------------------------------------------

def _alpha_bar(alphas_cumprod: torch.Tensor, t: int | None) -> torch.Tensor:
    """alpha_bar at timestep ``t``; None (or a negative t) is the clean image, alpha_bar = 1."""
    if t is None or t < 0:
        return torch.tensor(1.0, dtype=torch.float64)
    return alphas_cumprod[int(t)].double()


def renoise(alphas_cumprod: torch.Tensor, x_prev: torch.Tensor, prev_t: int | None, t: int,
            eps: torch.Tensor) -> torch.Tensor:
    """One forward jump q(x_t | x_prev): the sample at ``prev_t`` diffused back up to ``t``
    (RePaint's resampling).  ``eps`` is fresh standard noise."""
    ratio = float(_alpha_bar(alphas_cumprod, t) / _alpha_bar(alphas_cumprod, prev_t))
    return ratio ** 0.5 * x_prev + (1.0 - ratio) ** 0.5 * eps


def _unclip_renoise(self, x_prev, prev_t, t, eps):
    return renoise(self.scheduler.alphas_cumprod, x_prev, prev_t, t, eps)


UnCLIPSampler.renoise = _unclip_renoise  # defined here to keep the editing helpers together


class DDIMSampler:
    """DDIM (Song et al. 2021) over the model's own training schedule (the alphas_cumprod of its
    scheduler config: Karlo's UnCLIPScheduler, Kandinsky's DDPM).  eta = 0 is deterministic (what DDIM inversion undoes); eta = 1
    adds as much noise per step as DDPM's posterior.  The model's predicted variance, if any, is
    ignored.  x_0 predictions are clipped only when ``clip_sample`` is asked for: clipping is not
    invertible, and eta = 0 decoding of an inverted latent must retrace the inversion."""

    def __init__(self, config: dict, eta: float = 0.0, clip_sample: bool = False):
        sched = scheduler_class(config).from_config(config)
        self.alphas_cumprod = sched.alphas_cumprod.clone()
        self.num_train_timesteps = int(sched.config.num_train_timesteps)
        self.prediction_type = sched.config.prediction_type
        self.clip_range = float(sched.config.clip_sample_range) if clip_sample else None
        self.init_noise_sigma = 1.0
        self.eta = float(eta)

    def timesteps(self, steps: int) -> list[int]:
        """Evenly spaced from 0 ("leading", as diffusers' DDIMScheduler): the noisiest step is
        T - T/steps, not T - 1.  With Karlo's cosine schedule alpha_bar(T - 1) is ~1e-9, and a
        deterministic step from there divides the model's error by its square root, which would
        make inversion useless."""
        if steps < 2 or steps > self.num_train_timesteps:
            raise UserError(f"steps must be between 2 and {self.num_train_timesteps} for this "
                            f"model, got {steps}", field="steps")
        ratio = self.num_train_timesteps // steps
        return [i * ratio for i in reversed(range(steps))]

    def predict(self, model_output: torch.Tensor, t: int | None, x: torch.Tensor):
        """(x_0, eps) from the model's output for ``x`` at level ``t`` (None = clean)."""
        out = model_output[:, :x.shape[1]]
        a = _alpha_bar(self.alphas_cumprod, t)
        sa, sb = float(a.sqrt()), float((1 - a).sqrt())
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x - sb * eps) / sa
        else:  # "sample"
            x0 = out
            eps = (x - sa * x0) / sb if sb > 0 else torch.zeros_like(x)
        if self.clip_range is not None and sb > 0:
            x0 = x0.clamp(-self.clip_range, self.clip_range)
            eps = (x - sa * x0) / sb
        return x0, eps

    @per_run
    def step(self, model_output, t, prev_t, x, generator):
        x0, eps = self.predict(model_output, t, x)
        a_t, a_prev = _alpha_bar(self.alphas_cumprod, t), _alpha_bar(self.alphas_cumprod, prev_t)
        sigma = 0.0
        if self.eta > 0 and prev_t is not None:
            sigma = self.eta * float(((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt())
        direction = max(float(1 - a_prev) - sigma ** 2, 0.0) ** 0.5
        x_prev = float(a_prev.sqrt()) * x0 + direction * eps
        if sigma > 0:
            x_prev = x_prev + sigma * noise(x.shape, generator, x.device)
        return x_prev

    def invert_step(self, model_output, t, next_t, x):
        """The eta = 0 update run backwards: x at level ``t`` (None = clean, which the caller
        gives the model as timestep 0) -> x at ``next_t``, with the model output evaluated at
        x.  DDIM inversion chains these."""
        x0, eps = self.predict(model_output, t, x)
        a_next = _alpha_bar(self.alphas_cumprod, next_t)
        return float(a_next.sqrt()) * x0 + float((1 - a_next).sqrt()) * eps

    def add_noise(self, x0, eps, t):
        a = _alpha_bar(self.alphas_cumprod, t)
        return float(a.sqrt()) * x0 + float((1 - a).sqrt()) * eps

    def renoise(self, x_prev, prev_t, t, eps):
        return renoise(self.alphas_cumprod, x_prev, prev_t, t, eps)


# --- the denoising loop every family runs ----------------------------------------------------------

def choose_sampler(own: Callable[[dict], Sampler], scheduler_config: dict, name: str,
                   eta: float) -> Sampler:
    """The checkpoint's own update rule (``own``, built from its scheduler config) for
    ``name`` "unclip", DDIM with ``eta`` for "ddim"; eta without DDIM is a user mistake."""
    if name == "ddim":
        return DDIMSampler(scheduler_config, eta=eta)
    if eta != 0:
        raise UserError("eta is DDIM's noise level; set sampler: ddim to use it (or eta 0)",
                        field="eta")
    return own(scheduler_config)


def sample(model: Callable[[torch.Tensor, int], torch.Tensor], sampler: Sampler,
           timesteps: list[int], x: torch.Tensor, generator: torch.Generator, *,
           callback: StepCallback | None = None, resample: int = 1,
           desc: str = "decoder") -> torch.Tensor:
    """Run ``sampler`` over ``timesteps`` from ``x`` (already at the first level) with
    ``model(x, t)``; returns the sample after the last step (float32, unclamped).

    Random draws, all from ``generator``: one per step (inside the sampler).  ``resample`` > 1
    repeats every step but the last that many times, diffusing the result back up in between
    (RePaint's jumps, which let a ``callback``'s edits spread); each jump draws its noise after
    the step's own draws.
    """
    from .. import runtime
    device = x.device
    for i in runtime.steps(len(timesteps), desc):
        t = timesteps[i]
        prev_t = timesteps[i + 1] if i + 1 < len(timesteps) else None
        for jump in range(resample if prev_t is not None else 1):
            if jump > 0:
                x = sampler.renoise(x, prev_t, t, noise(x.shape, generator, device))
            x = sampler.step(model(x, t), t, prev_t, x, generator)
            if callback is not None:
                x = callback(i, t, prev_t, x)
    return x


def repaint_callback(sampler: Sampler, known: torch.Tensor, keep: torch.Tensor, generator):
    """A StepCallback that puts the known sample, noised to the step's level, where ``keep`` is
    1 (soft values blend): RePaint (Lugmayr et al. 2022).  After the last step the known sample
    goes in as it is."""
    def callback(i, t, prev_t, x):
        if prev_t is None:
            target = known
        else:
            target = sampler.add_noise(known, noise(known.shape, generator, known.device), prev_t)
        return keep * target + (1 - keep) * x
    return callback
