"""Workflows that mix our nodes with ComfyUI's own (``type: comfy:KSampler``).

They are checked like any workflow (links typed against ComfyUI's declarations), export to
both of ComfyUI's formats with ComfyUI's class names, read back from an API prompt, and are
refused headless with a message that says where they run.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from comfy_validator import validate_prompt, with_core
from test_comfy_contract import comfy_import, object_info  # noqa: F401  (fixtures)
from unclip_nodes.graph import cli, comfy
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import declare
from unclip_nodes.nodes.errors import UserError, UserErrors

MIXED = textwrap.dedent("""
    description: our prior's embedding into a ComfyUI checkpoint
    nodes:
      models: {type: LoadUnCLIP, params: {path: pocket}}
      text: {type: CLIPTextEncode, links: {clip: models.clip_text}, params: {text: a red circle}}
      prior: {type: Prior, links: {prior: models.prior, text: text.text}, params: {steps: 3}}
      ckpt: {type: "comfy:CheckpointLoaderSimple", params: {ckpt_name: sd21-unclip-l.safetensors}}
      pos: {type: "comfy:CLIPTextEncode", links: {clip: ckpt.CLIP}, params: {text: a photo}}
      latent: {type: "comfy:EmptyLatentImage", params: {width: 768, height: 768}}
      sample: {type: "comfy:KSampler", links: {model: ckpt.MODEL, positive: pos.CONDITIONING,
               negative: pos.CONDITIONING, latent_image: latent.LATENT}, params: {seed: 7}}
      decode: {type: "comfy:VAEDecode", links: {samples: sample.LATENT, vae: ckpt.VAE}}
      save: {type: SaveImage, links: {images: decode.IMAGE}}
    """)


@pytest.fixture
def mixed(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(MIXED)
    return path


def test_mixed_workflow_exports_a_prompt_that_comfys_validation_accepts(mixed, object_info):
    api = comfy.to_api(load(mixed))
    by_title = {n["_meta"]["title"]: n for n in api.values()}
    assert by_title["sample"]["class_type"] == "KSampler"
    assert by_title["sample"]["inputs"]["seed"] == 7
    assert by_title["sample"]["inputs"]["cfg"] == 8.0  # ComfyUI's default, filled in
    assert by_title["prior"]["class_type"] == "unCLIP Prior"
    assert validate_prompt(api, with_core(object_info, api)) == {}
    by_title["decode"]["inputs"]["vae"] = [next(k for k, n in api.items()
                                                if n["_meta"]["title"] == "ckpt"), 0]
    errors = validate_prompt(api, with_core(object_info, api))
    assert [e["type"] for errs in errors.values() for e in errs] == ["return_type_mismatch"]


def test_mixed_workflow_ui_export_uses_comfys_class_names_and_widget_order(mixed):
    ui = comfy.to_ui(load(mixed))
    nodes = {n["title"] if "title" in n else n["type"]: n for n in ui["nodes"]}
    sampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    # ComfyUI's order, with the seed's "control after generate" value after it
    assert sampler["widgets_values"] == [7, "fixed", 20, 8.0, "euler", "normal", 1.0]
    assert [i["name"] for i in sampler["inputs"]] == ["model", "positive", "negative",
                                                      "latent_image"]
    assert any(n["type"] == "unCLIP Prior" for n in ui["nodes"]) and nodes


def test_a_link_between_our_embedding_and_comfys_conditioning_is_type_checked(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(MIXED.replace("positive: pos.CONDITIONING", "positive: prior.image_embeds"))
    with pytest.raises(UserError) as e:
        load(path)
    errs = e.value.errors if isinstance(e.value, UserErrors) else [e.value]
    assert any("gives UNCLIP_IMAGE_EMBEDS but input 'positive' of comfy:KSampler takes "
               "CONDITIONING" in str(x) and x.node == "sample" for x in errs)


def test_an_unknown_comfy_node_type_is_named_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(MIXED.replace("comfy:KSampler", "comfy:KSamplr"))
    with pytest.raises(UserError) as e:
        load(path)
    assert "unknown node type 'comfy:KSamplr'" in str(e.value)


def test_headless_run_of_a_mixed_workflow_says_it_runs_only_inside_comfyui(mixed, tmp_path,
                                                                          capsys):
    code = cli.main(["run", str(mixed), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{mixed}:7:3: node 'ckpt'" in err
    assert "uses ComfyUI's own nodes" in err and "runs only inside ComfyUI" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_an_api_prompt_with_comfys_nodes_reads_back_as_the_same_workflow(mixed):
    rs = load(mixed)
    api = comfy.to_api(rs)
    back = comfy.load_api(json.loads(json.dumps(api)))
    types = sorted(rn.spec.type for rn in back.nodes.values())
    assert types == sorted(rn.spec.type for rn in rs.nodes.values())
    def bare(prompt):  # ids and titles aside (the ids are the YAML's no longer)
        return sorted(json.dumps({k: v for k, v in n.items() if k != "_meta"}, sort_keys=True)
                      for n in prompt.values())
    assert bare(comfy.to_api(back)) == bare(api)


def test_comfy_nodes_are_never_registered_as_ours():
    declare.get("comfy:KSampler")
    from unclip_nodes.nodes import NODE_CLASS_MAPPINGS
    assert not any(k.startswith(("KSampler", "comfy:")) for k in NODE_CLASS_MAPPINGS)
    assert all(not declare.is_foreign(s) for s in declare.REGISTRY.values())
