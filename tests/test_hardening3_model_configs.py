"""Model folders whose configs hold values the models cannot use are refused when the folder is
opened (before any weight is read), naming the file and the field, never with a traceback; values
diffusers accepts (``"sample_size": null`` in a UNet config) stay accepted."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from unclip_nodes.graph.cli import main
from unclip_nodes.nodes.core.checkpoint import POCKET, clear_model_cache
from unclip_nodes.nodes.core.family import STAGES
from unclip_nodes.nodes.errors import UserError, UserErrors
from unclip_nodes.nodes.loaders import load_unclip, open_checkpoint


@pytest.fixture
def pocket(tmp_path) -> Path:
    return Path(shutil.copytree(POCKET, tmp_path / "pocket"))


def edit(path: Path, **values) -> None:
    cfg = json.loads(path.read_text())
    cfg.update(values)
    path.write_text(json.dumps(cfg))


def refusal(root: Path) -> str:
    with pytest.raises((UserError, UserErrors)) as e:
        open_checkpoint(str(root), STAGES, layout=True)
    return str(e.value)


@pytest.mark.parametrize("part, file, key, value, says", [
    ("prior_scheduler", "scheduler_config.json", "beta_schedule", "cosine-ish",
     "'beta_schedule' must be one of 'linear'"),
    ("decoder_scheduler", "scheduler_config.json", "variance_type", "learned_wide",
     "'variance_type' must be one of"),
    ("super_res_scheduler", "scheduler_config.json", "prediction_type", "noise",
     "'prediction_type' must be one of 'epsilon', 'sample', 'v_prediction'"),
    ("prior_scheduler", "scheduler_config.json", "num_train_timesteps", 1_000_000_000,
     "'num_train_timesteps' must be a whole number from 1 to 100,000"),
    ("prior_scheduler", "scheduler_config.json", "num_train_timesteps", "1000",
     "'num_train_timesteps' must be a whole number from 1 to 100,000"),
    ("decoder", "config.json", "sample_size", 0, "'sample_size' must be at least 1, got 0"),
    ("decoder", "config.json", "in_channels", "three", "'in_channels' must be a whole number"),
    ("feature_extractor", "preprocessor_config.json", "image_mean", "grey",
     "'image_mean' must be a list of 3 numbers"),
    ("decoder_scheduler", "scheduler_config.json", "beta_start", 2.0,
     "'beta_start' must be a number between 0 and 1"),
])
def test_a_config_value_the_models_cannot_use_names_its_file_and_field(
        pocket, part, file, key, value, says):
    path = pocket / part / file
    if path.is_file():
        edit(path, **{key: value})
    else:
        path.write_text(json.dumps({key: value}))
    text = refusal(pocket)
    assert says in text and str(path) in text and "Traceback" not in text


def test_an_empty_vocabulary_is_refused_naming_the_tokenizers_file(pocket):
    (pocket / "tokenizer" / "vocab.json").write_text("{}")
    text = refusal(pocket)
    assert "tokenizer/vocab.json" in text and "non-empty" in text


def test_a_null_sample_size_which_diffusers_accepts_still_loads_and_draws(pocket):
    edit(pocket / "decoder" / "config.json", sample_size=None)
    clear_model_cache()
    handles = load_unclip(str(pocket), "cpu", "fp32", False)
    assert handles[3].sample_size == 64
    assert handles[3].output_size(0, 0) == (64, 64)
    from unclip_nodes.nodes.decoder import decoder_node
    from unclip_nodes.nodes.types import ImageEmbeds
    z = ImageEmbeds(torch.zeros(1, handles[3].clip_dim))
    image = decoder_node(handles[3], z, None, steps=2, guidance_scale=1.0, seed=0,
                         images_per_embedding=1)
    assert image.shape[1:3] == (64, 64) and torch.isfinite(image).all()


def test_the_command_line_says_so_in_one_line_with_exit_code_2(pocket, tmp_path, capsys):
    edit(pocket / "prior_scheduler" / "scheduler_config.json", beta_schedule=[1, 2])
    rc = main(["validate", "text_to_image", "--set", f"model={pocket}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "beta_schedule" in err and "scheduler_config.json" in err and "node 'model'" in err
