"""Model folders and input confinement: names resolve through UNCLIP_MODELS headless and through
ComfyUI's 'unclip' model folders inside it, where loaders offer a drop-down and neither they nor
LoadImage read outside ComfyUI's known folders.  ComfyUI's folder_paths is modelled."""
from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from kandinsky_util import tiny_kandinsky  # noqa: F401
from stages_util import tiny_checkpoint  # noqa: F401
from unclip_nodes.nodes import image as images
from unclip_nodes.nodes.declare import REGISTRY, comfy_input_types
from unclip_nodes.nodes.errors import UserError

PARAMS = dict(device="cpu", dtype="fp32", allow_pickle=False)


def fake_folder_paths(base: Path):
    """ComfyUI's folder_paths, as far as we use it: model folders by type (extra paths
    included), the input folder, annotated input names."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(base / "models")
    fp.folder_names_and_paths = {}

    def add_model_folder_path(name, path, is_default=False):
        paths = fp.folder_names_and_paths.setdefault(name, ([], set()))[0]
        if path not in paths:
            paths.insert(0, path) if is_default else paths.append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])  # KeyError too
    fp.get_input_directory = lambda: str(base / "input")
    fp.get_output_directory = lambda: str(base / "output")
    fp.get_annotated_filepath = lambda name: str(base / "input" / name)
    return fp


@pytest.fixture
def comfy(tmp_path, monkeypatch, tiny_checkpoint, tiny_kandinsky):
    base = tmp_path / "ComfyUI"
    (base / "input").mkdir(parents=True)
    unclip = base / "models" / "unclip"
    unclip.mkdir(parents=True)
    shutil.copytree(tiny_checkpoint, unclip / "karlo-tiny")
    for name in ("prior", "decoder"):
        shutil.copytree(tiny_kandinsky / name, unclip / "kandinsky22" / name)
    extra = tmp_path / "elsewhere"                 # an extra_model_paths.yaml 'unclip:' entry
    shutil.copytree(tiny_kandinsky / "decoder-inpaint", extra / "k22-inpaint")
    fp = fake_folder_paths(base)
    fp.add_model_folder_path("unclip", str(extra))
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(base / "input" / "red.png")
    (tmp_path / "secret.png").write_bytes((base / "input" / "red.png").read_bytes())
    return base


def test_names_in_unclip_models_resolve_headless(tiny_checkpoint, tmp_path, monkeypatch):
    shutil.copytree(tiny_checkpoint, tmp_path / "models" / "my-karlo")
    monkeypatch.setenv("UNCLIP_MODELS", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    handles = REGISTRY["LoadUnCLIP"].fn(path="my-karlo", **PARAMS)
    assert handles[3].source == str((tmp_path / "models" / "my-karlo").resolve())
    with pytest.raises(UserError, match="does not exist"):
        REGISTRY["LoadUnCLIP"].fn(path="not-there", **PARAMS)


def test_loaders_offer_comfyuis_unclip_folders_as_a_drop_down(comfy):
    inputs = comfy_input_types(REGISTRY["LoadUnCLIP"])["required"]
    paths, _ = inputs["path"]
    assert paths == ["pocket", "kandinsky22/decoder", "kandinsky22/prior", "karlo-tiny",
                     "k22-inpaint"]          # models/unclip first, then the extra folder
    priors, opts = inputs["prior_path"]
    assert priors == ["", "kandinsky22/prior"] and opts["default"] == ""
    decoders, _ = comfy_input_types(REGISTRY["LoadUnCLIPDecoder"])["required"]["path"]
    assert decoders == ["pocket", "kandinsky22/decoder", "karlo-tiny", "k22-inpaint"]


def test_each_per_stage_loader_lists_only_the_folders_that_hold_its_stage(comfy):
    def listed(node):
        return comfy_input_types(REGISTRY[node])["required"]["path"][0]
    assert listed("LoadUnCLIPPrior") == ["pocket", "kandinsky22/prior", "karlo-tiny"]
    assert listed("LoadUnCLIPClipText") == ["pocket", "kandinsky22/prior", "karlo-tiny"]
    assert listed("LoadUnCLIPUpsampler") == ["pocket", "karlo-tiny"]
    assert listed("LoadUnCLIPClipVision") == ["pocket", "kandinsky22/prior", "karlo-tiny"]


def test_comfyuis_unclip_model_folder_is_made_when_the_pack_first_asks_for_it(tmp_path,
                                                                            monkeypatch):
    fp = fake_folder_paths(tmp_path / "ComfyUI")
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    assert not (tmp_path / "ComfyUI" / "models" / "unclip").exists()
    comfy_input_types(REGISTRY["LoadUnCLIP"])
    assert (tmp_path / "ComfyUI" / "models" / "unclip").is_dir()


def test_a_kandinsky_pair_from_the_drop_down_loads(comfy):
    handles = REGISTRY["LoadUnCLIP"].fn(path="kandinsky22/decoder",
                                        prior_path="kandinsky22/prior", **PARAMS)
    assert handles[3].family == "kandinsky22" and handles[2] is not None
    dec = REGISTRY["LoadUnCLIPDecoder"].fn(path="k22-inpaint", **PARAMS)
    assert dec.variant == "inpaint"


def test_inside_comfyui_no_loader_reads_outside_its_model_folders(comfy, tiny_checkpoint):
    with pytest.raises(UserError) as e:
        REGISTRY["LoadUnCLIP"].fn(path=str(tiny_checkpoint), **PARAMS)
    assert "outside ComfyUI's unclip model folders" in e.value.message
    assert e.value.field == "path"
    assert REGISTRY["LoadUnCLIP"].fn(path="pocket", **PARAMS)[3] is not None   # bundled


def test_loadimage_lists_comfyuis_input_folder_with_an_upload_button(comfy):
    files, opts = comfy_input_types(REGISTRY["LoadImage"])["required"]["image"]
    assert files[0] == "red.png" and opts["image_upload"] is True
    assert "workflows/images/red_circle_white.png" in files   # the example workflows' samples


def test_inside_comfyui_loadimage_reads_only_its_input_folder(comfy, tmp_path):
    image, _ = images.load_image("red.png")
    assert image.shape == (1, 8, 8, 3)
    sample, _ = images.load_image("workflows/images/red_circle_white.png")
    assert sample.shape[1:3] == (64, 64)
    for outside in (str(tmp_path / "secret.png"), "../../secret.png", "/etc/passwd"):
        with pytest.raises(UserError) as e:
            images.load_image(outside)
        assert "reads only from its input folder" in e.value.message and e.value.field == "image"


def test_headless_paths_are_not_confined(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "anywhere.png")
    image, _ = images.load_image(str(tmp_path / "anywhere.png"))
    assert image.shape == (1, 4, 4, 3)


def test_the_unclip_folder_type_is_registered_when_comfyui_has_none(tmp_path, monkeypatch):
    from unclip_nodes.nodes.folders import model_roots
    fp = fake_folder_paths(tmp_path)               # no 'unclip' type yet: KeyError in ComfyUI
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    assert model_roots() == [tmp_path / "models" / "unclip"]


def test_the_pack_samples_are_copied_into_comfyuis_input_folder_to_preview(comfy):
    comfy_input_types(REGISTRY["LoadImage"])  # the pack registers its folders on first use
    copied = comfy / "input" / "workflows" / "images" / "red_circle_white.png"
    assert copied.read_bytes() == (images.PACK_DIR / "workflows" / "images" /
                                   "red_circle_white.png").read_bytes()
    copied.write_bytes(b"mine")  # the user's own file of that name is never overwritten
    from unclip_nodes.nodes import folders
    folders.copy_samples(comfy / "input")
    assert copied.read_bytes() == b"mine"


def test_a_presets_sample_image_default_resolves_inside_comfyui(comfy, tmp_path):
    from unclip_nodes.graph import Cache, run_workflow
    shipped = images.PACK_DIR / "workflows" / "image_variations.yaml"
    result = run_workflow(shipped, {"steps": 2, "upsample_steps": 2}, cache=Cache.off(),
                          out_dir=tmp_path / "out")
    assert result.outputs["images"].shape[0] >= 1
    with pytest.raises(UserError, match="no such file"):
        images.load_image("images/red_circle_white.png")  # outside a preset: the input folder
