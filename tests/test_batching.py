"""--batch: sampling nodes that differ only in their seed run in one model call; each keeps its
own seed's noise, results differ from unbatched ones only in the last bits, and batched results
are cached apart from unbatched ones."""
from __future__ import annotations

import torch

from unclip_nodes.graph import run_sweep
from unclip_nodes.graph.cache import Cache, MemoryTier
from unclip_nodes.graph.cli import main
from unclip_nodes.nodes import decoder
from unclip_nodes.nodes.families import karlo

SWEEP = {"seed": range(4)}
FAST = {"steps": 4, "upsample_steps": 2}


def images(sweep) -> list[torch.Tensor]:
    return [sweep.outputs(c)["images"] for c in sweep.plan.combinations]


def test_a_seed_sweep_batches_decoders_and_upsamplers_and_stays_close(tmp_path):
    alone = run_sweep("workflows/image_variations.yaml", SWEEP, overrides=FAST, grid=False,
                      cache=Cache.off(), out_dir=tmp_path / "a")
    batched = run_sweep("workflows/image_variations.yaml", SWEEP, overrides=FAST, grid=False,
                        cache=Cache.off(), out_dir=tmp_path / "b", batch=4)
    counts = {r.node.split("/")[-1]: r.batched for r in batched.result.report if r.batched}
    assert counts == {"decode": 4, "upsample": 4}
    assert not any(r.batched for r in alone.result.report)
    for a, b in zip(images(alone), images(batched)):
        assert float((a - b).abs().max()) < 1e-3      # measured: at most 1e-5 on the pocket model
    first = images(alone)
    assert float((first[0] - first[1]).abs().max()) > 0.05   # the seeds differ for real


def test_a_text_to_image_seed_sweep_batches_every_sampling_stage(tmp_path):
    alone = run_sweep("workflows/text_to_image.yaml", SWEEP, overrides=FAST, grid=False,
                      cache=Cache.off(), out_dir=tmp_path / "a")
    batched = run_sweep("workflows/text_to_image.yaml", SWEEP, overrides=FAST, grid=False,
                        cache=Cache.off(), out_dir=tmp_path / "b", batch=2)
    counts = {r.node.split("/")[-1] for r in batched.result.report if r.batched == 2}
    assert counts == {"prior", "decode", "upsample"}
    for ca, cb in zip(alone.plan.combinations, batched.plan.combinations):
        a, b = alone.outputs(ca)["image"], batched.outputs(cb)["image"]
        assert float((a - b).abs().max()) < 1e-3


def test_each_batched_run_draws_its_own_seeds_noise(tmp_path, monkeypatch):
    draws = {1: [], 4: []}
    current = []

    def recording(shape, generator, device):
        from unclip_nodes.nodes.core.sampling import noise
        x = noise(shape, generator, device)
        current.append(x.clone())
        return x

    monkeypatch.setattr(decoder, "noise", recording)
    monkeypatch.setattr(karlo, "noise", recording)  # the upsampler's x_T
    for batch in (1, 4):
        current.clear()
        run_sweep("workflows/image_variations.yaml", SWEEP, overrides=FAST, grid=False,
                  cache=Cache.off(), out_dir=tmp_path / str(batch), batch=batch)
        draws[batch] = list(current)
    alone = torch.cat([d.flatten() for d in draws[1]])
    together = torch.cat([d.flatten() for d in draws[4]])
    assert torch.equal(torch.sort(alone).values, torch.sort(together).values)


def test_batched_results_never_stand_in_for_unbatched_ones(tmp_path):
    cache = Cache(tmp_path / "cache", memory=MemoryTier())
    run_sweep("workflows/image_variations.yaml", SWEEP, overrides=FAST, grid=False, cache=cache,
              out_dir=tmp_path / "b", batch=4)
    again = run_sweep("workflows/image_variations.yaml", SWEEP, overrides=FAST, grid=False,
                      cache=cache, out_dir=tmp_path / "a")
    ran = {r.node.split("/")[-1] for r in again.result.report if r.status == "ran"}
    assert {"decode", "upsample"} <= ran               # recomputed unbatched
    hits = {r.node.split("/")[-1] for r in again.result.report if "hit" in r.status}
    assert "embed" in hits                              # what batching does not touch is shared


def test_batch_must_be_at_least_one(capsys):
    assert main(["run", "text_to_image", "--batch", "0"]) == 2
    assert "--batch 0: give 1 (no batching) or more" in capsys.readouterr().err
