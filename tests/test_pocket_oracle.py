"""The pixel oracle reads the shapes world back correctly, and the world itself is well behaved."""
import numpy as np
import pytest

from unclip_nodes.pocket import oracle, world


@pytest.mark.parametrize("size", [32, 64])
def test_oracle_reads_the_generators_own_images(size):
    images, _, labels = world.sample(7, 300, size, split="all")
    right = [r.label == lab for r, lab in zip(oracle.read_batch(images), labels)]
    assert np.mean(right) >= 0.99


def test_oracle_accepts_float_images_and_torch_tensors():
    import torch
    images, _, labels = world.sample(3, 4, 32, as_float=True)
    for im, lab in zip(images, labels):
        assert oracle.read(im).label == lab
        assert oracle.read(torch.from_numpy(im)).label == lab


def test_oracle_says_none_for_a_blank_picture():
    blank = np.full((32, 32, 3), world.BACKGROUNDS["grey"], dtype=np.uint8)
    r = oracle.read(blank)
    assert (r.colour, r.shape, r.background) == ("none", "none", "grey")


def test_oracle_is_not_fooled_by_a_tinted_background_and_mild_noise():
    images, _, labels = world.sample(11, 60, 32)
    rng = np.random.default_rng(0)
    noisy = np.clip(images.astype(np.float32) + rng.normal(0, 6, images.shape) + 10, 0, 255).astype(np.uint8)
    right = [r.label == lab for r, lab in zip(oracle.read_batch(noisy), labels)]
    assert np.mean(right) >= 0.95


def test_world_is_deterministic_for_a_seed_and_varies_across_seeds():
    a, ca, la = world.sample(5, 8, 32)
    b, cb, lb = world.sample(5, 8, 32)
    c, _, _ = world.sample(6, 8, 32)
    assert np.array_equal(a, b) and ca == cb and la == lb
    assert not np.array_equal(a, c)


def test_training_split_never_shows_a_held_out_combination():
    _, captions, labels = world.sample(1, 500, 32, split="train")
    assert not set(labels) & world.HELD_OUT
    assert all(c == world.caption(*lab) for c, lab in zip(captions, labels))
    # every single attribute value still appears in training
    for i, values in enumerate((world.OBJECT_COLOURS, world.SHAPES, world.BACKGROUNDS)):
        assert {lab[i] for lab in world.TRAIN_COMBOS} == set(values)
    _, _, held = world.sample(1, 50, 32, split="heldout")
    assert set(held) <= world.HELD_OUT


def test_rendering_is_anti_aliased():
    images, _, labels = world.sample(2, 10, 32)
    for im, (colour, _, bg) in zip(images, labels):
        pure = {world.OBJECT_COLOURS[colour], world.BACKGROUNDS[bg]}
        colours = {tuple(p) for p in im.reshape(-1, 3)}
        assert len(colours - pure) > 0   # edge pixels mix the two colours


def test_object_and_background_colours_are_far_apart():
    for o in world.OBJECT_COLOURS.values():
        for b in world.BACKGROUNDS.values():
            assert np.linalg.norm(np.subtract(o, b, dtype=float)) > 90
