"""The bundled pocket model draws what its captions say, judged by the pixel oracle.

Small fixed sets, fixed seeds and few sampling steps keep this fast and deterministic; the bounds
sit well below what the model measures (see pocket/evaluate.py for the full evaluation) so that a
numerically slightly different platform still passes, while a broken model or pipeline fails.
"""
from pathlib import Path

import pytest
import torch

from unclip_nodes.pocket import evaluate, world

POCKET = Path(__file__).resolve().parent.parent / "models" / "pocket"
assert (POCKET / "super_res_last").exists(), "the bundled pocket checkpoint is missing"

# Measured on the bundled checkpoint with these exact settings (the workflows' guidance, prior 2 and
# decoder 1): all three right 10/10; variations keep shape and colour 9/10; on the held-out
# combinations 30/40 with prior guidance, 27/40 without; the upsampler keeps the reading 6/6.
MIN_ALL = 0.8
MIN_VARIATION = 0.7
FAST = dict(prior_steps=12, decoder_steps=12, upsample_steps=4, upsample=False)
# ten training combinations covering every colour, shape and background
SEEN = [("red", "circle", "white"), ("green", "square", "black"), ("blue", "triangle", "grey"),
        ("yellow", "square", "white"), ("purple", "triangle", "black"), ("red", "square", "grey"),
        ("green", "triangle", "white"), ("blue", "circle", "black"), ("yellow", "triangle", "grey"),
        ("purple", "circle", "white")]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_text_to_image_draws_colour_shape_and_background_of_the_caption():
    r, _, _ = evaluate.eval_text_to_image(SEEN, [0], evaluate.Settings(**FAST))
    assert r["all"] >= MIN_ALL, r


def test_guidance_reaches_the_model_with_the_measured_effect_and_a_wide_margin():
    # Karlo's guidance (prior 4, decoder 8) overshoots on this small model: measured 30 % right on
    # the seen captions (seeds 0-3 and 4-7 alike) against 100 % at the workflows' 2/1.  (On the
    # held-out captions the effect of 2/1 against no guidance is within seed noise: 30/40 against
    # 27/40 on seeds 0-7, 113/160 against 120/160 on seeds 8-39, so it is not asserted.)  The
    # guidance formula itself is checked exactly in test_stages_nodes.py.
    default, _, _ = evaluate.eval_text_to_image(SEEN, [0, 1], evaluate.Settings(**FAST))
    strong, _, _ = evaluate.eval_text_to_image(
        SEEN, [0, 1], evaluate.Settings(**FAST, prior_guidance=4.0, decoder_guidance=8.0))
    assert default["all"] >= MIN_ALL, default
    assert default["all"] - strong["all"] >= 0.4, (default, strong)


def test_image_variations_keep_shape_and_colour():
    r, _, _ = evaluate.eval_variations(10, 0, evaluate.Settings(**FAST), size=32)
    assert r["shape+colour"] >= MIN_VARIATION, r


def test_upsampler_keeps_what_the_decoder_drew():
    from unclip_nodes.pocket import oracle
    s = evaluate.Settings(**FAST)
    low = evaluate.text_to_image([world.caption(*c) for c in SEEN[:6]], 0, s)
    high = evaluate.upsample(low, 0, steps=4)
    assert high.shape[1:3] == (64, 64)
    same = [a.label == b.label for a, b in zip(oracle.read_batch(low), oracle.read_batch(high))]
    assert sum(same) >= 5, same
