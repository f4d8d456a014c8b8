"""scripts/comfyui_check.py without a ComfyUI: its arguments, how it finds the templates, its
UI -> API conversion (checked on the real templates against an /object_info made from the pack's
own node classes), the model rules, and its verdicts on fake /history answers and logs.  Nothing
here starts ComfyUI, a browser or a subprocess."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "comfyui_check.py"


@pytest.fixture(scope="module")
def cc():
    spec = importlib.util.spec_from_file_location("comfyui_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_check"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("comfyui_check", None)


def fake_comfyui(tmp_path: Path) -> Path:
    root = tmp_path / "ComfyUI"
    (root / "comfy").mkdir(parents=True)
    (root / "main.py").write_text("")
    (root / "nodes.py").write_text("")
    (root / "custom_nodes").mkdir()
    return root


# ---- usage --------------------------------------------------------------------------------------

def test_usage_mistakes_exit_2_with_a_short_message(cc, tmp_path, capsys):
    assert cc.main(["--comfyui", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert cc.main(["--comfyui", str(tmp_path / "empty")]) == 2
    assert "not a ComfyUI folder" in capsys.readouterr().err
    assert cc.main([]) == 2  # --comfyui is required: argparse's message
    assert "--comfyui" in capsys.readouterr().err
    comfy = fake_comfyui(tmp_path)
    assert cc.main(["--comfyui", str(comfy), "--python", str(tmp_path / "no-python")]) == 2
    assert "not an executable" in capsys.readouterr().err
    assert cc.main(["--comfyui", str(comfy), "--only", "no_such_template"]) == 2
    assert "no template named no_such_template" in capsys.readouterr().err
    assert cc.main(["--help"]) == 0


def test_python_defaults_to_the_comfyui_venv_else_this_interpreter(cc, tmp_path):
    comfy = fake_comfyui(tmp_path)
    assert cc.pick_python(comfy, None) == sys.executable
    venv = comfy / ".venv" / "bin" / "python"
    venv.parent.mkdir(parents=True)
    venv.write_text("")
    assert cc.pick_python(comfy, None) == str(venv)
    assert cc.pick_python(comfy, sys.executable) == sys.executable


def test_install_links_this_repository_and_refuses_another_pack_of_that_name(cc, tmp_path):
    comfy = fake_comfyui(tmp_path)
    assert "linked now" in cc.install_pack(comfy)
    link = comfy / "custom_nodes" / "unclip-nodes"
    assert link.resolve() == ROOT
    assert "already there" in cc.install_pack(comfy)
    link.unlink()
    link.mkdir()  # someone's copy: never replaced
    with pytest.raises(cc.UsageError, match="not this repository"):
        cc.install_pack(comfy)


# ---- templates ----------------------------------------------------------------------------------

def test_templates_are_the_example_workflows_sorted_and_only_selects(cc):
    found = cc.find_templates()
    assert [p.name for p in found] == sorted(p.name for p in
                                              (ROOT / "example_workflows").glob("*.json"))
    assert len(found) >= 6
    assert [p.stem for p in cc.find_templates(only=["text_to_image", "inpaint.json"])] == \
        ["text_to_image", "inpaint"]
    with pytest.raises(cc.UsageError, match="no template named nope"):
        cc.find_templates(only=["nope"])


def _object_info() -> dict:
    """/object_info for the pack's node types, built as ComfyUI's server builds it (and passed
    through JSON, as the script receives it)."""
    import unclip_nodes
    info = {}
    for name, cls in unclip_nodes.NODE_CLASS_MAPPINGS.items():
        types = cls.INPUT_TYPES()
        info[name] = {"input": types, "input_order": {k: list(v) for k, v in types.items()},
                      "display_name": unclip_nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
                      "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
                      "python_module": "custom_nodes.unclip-nodes"}
    from unclip_nodes.nodes import declare  # and ComfyUI's own nodes that templates use
    for spec in declare.FOREIGN.values():
        types = declare.comfy_input_types(spec)
        info[declare.class_type(spec)] = {
            "input": types, "input_order": {k: list(v) for k, v in types.items()},
            "display_name": spec.display_name, "output_node": spec.output_node,
            "python_module": "nodes"}
    return json.loads(json.dumps(info, default=str))


@pytest.mark.parametrize("path", sorted((ROOT / "example_workflows").glob("*.json")),
                         ids=lambda p: p.stem)
def test_every_template_converts_with_each_saved_value_used_once(cc, path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    info = _object_info()
    prompt, missing, notes = cc.ui_to_api(workflow, info)
    assert missing == [] and notes == []
    assert cc.node_types(workflow) <= set(info)
    runnable = [n for n in workflow["nodes"] if n["type"] not in cc.VIRTUAL_NODES]
    assert sorted(prompt) == sorted(str(n["id"]) for n in runnable)
    for node in runnable:
        spec = info[node["type"]]
        got = prompt[str(node["id"])]
        # every required input is there, as a value or as a link
        assert set(spec["input"].get("required", {})) <= set(got["inputs"]), node["type"]
        for name, value in got["inputs"].items():
            if isinstance(value, list):
                assert value[0] in prompt and isinstance(value[1], int)
        assert got["_meta"]["title"]
    assert any(info[v["class_type"]]["output_node"] for v in prompt.values())


# ---- the conversion on a made-up graph ----------------------------------------------------------

INFO = {
    "Loader": {"input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
               "input_order": {"required": ["ckpt_name"]}, "display_name": "Load It"},
    "Sampler": {"input": {
        "required": {"model": ["MODEL", {}], "seed": ["INT", {"default": 0}],
                     "steps": ["INT", {"default": 20}],
                     "noise": ["INT", {"control_after_generate": True}],
                     "text": ["STRING", {"multiline": True}]},
        "optional": {"extra": ["STRING", {"forceInput": True}], "scale": ["FLOAT", {}]}},
        "input_order": {"required": ["model", "seed", "steps", "noise", "text"],
                        "optional": ["extra", "scale"]}, "display_name": "Sample"},
    "Pass": {"input": {"required": {"model": ["MODEL", {}]}},
             "input_order": {"required": ["model"]}, "display_name": "Pass"},
    "LoadImage": {"input": {"required": {"image": [["x.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "display_name": "Load Image"},
}


def node(nid, ntype, widgets=None, inputs=(), outputs=(), mode=0, title=None):
    n = {"id": nid, "type": ntype, "mode": mode, "inputs": list(inputs),
         "outputs": list(outputs)}
    if widgets is not None:
        n["widgets_values"] = widgets
    if title:
        n["title"] = title
    return n


def graph():
    return {
        "nodes": [
            node(1, "Loader", ["a.safetensors"], outputs=[{"type": "MODEL", "links": [1]}]),
            node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
                 outputs=[{"type": "MODEL", "links": [2]}]),
            node(3, "Pass", [], inputs=[{"name": "model", "type": "MODEL", "link": 2}],
                 outputs=[{"type": "MODEL", "links": [3]}], mode=4),  # bypassed
            node(4, "Sampler", [7, "fixed", 30, 5, "randomize", "hello", 1.5],
                 inputs=[{"name": "model", "type": "MODEL", "link": 3},
                         {"name": "steps", "type": "INT", "link": 4,
                          "widget": {"name": "steps"}}], title="My sampler"),
            node(5, "PrimitiveNode", [12], outputs=[{"type": "INT", "links": [4]}]),
            node(6, "Note", ["just text"]),
            node(7, "Sampler", [1, "fixed", 2, 3, "fixed", "", 1.0], mode=2),  # muted
            node(8, "LoadImage", ["x.png", "image"]),
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 2, 0, 3, 0, "MODEL"], [3, 3, 0, 4, 0, "MODEL"],
                  [4, 5, 0, 4, 2, "INT"]],
        "version": 0.4,
    }


def test_conversion_follows_the_front_ends_rules(cc):
    prompt, missing, notes = cc.ui_to_api(graph(), INFO)
    assert missing == [] and notes == []
    assert sorted(prompt) == ["1", "4", "8"]  # no Reroute, bypassed, Primitive, Note, muted
    assert prompt["1"] == {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"},
                           "_meta": {"title": "Load It"}}
    # control_after_generate values skipped (seed by name, noise by option); the link through
    # the Reroute and the bypassed node reaches the loader; a PrimitiveNode's link keeps the
    # widget's own value; forceInput inputs take no saved value
    assert prompt["4"]["inputs"] == {"model": ["1", 0], "seed": 7, "steps": 30, "noise": 5,
                                     "text": "hello", "scale": 1.5}
    assert prompt["4"]["_meta"]["title"] == "My sampler"
    assert prompt["8"]["inputs"] == {"image": "x.png"}  # the upload button's value dropped


def test_conversion_reports_missing_types_and_values_that_do_not_fit(cc):
    g = graph()
    g["nodes"].append(node(9, "Nowhere", [1]))
    g["nodes"][0]["widgets_values"] = ["a.safetensors", "surplus"]
    _, missing, notes = cc.ui_to_api(g, INFO)
    assert missing == ["Nowhere"]
    assert any("left over" in n for n in notes)
    g = graph()
    g["nodes"][3]["widgets_values"] = [7]  # saved before the node had its other widgets
    prompt, _, notes = cc.ui_to_api(g, INFO)
    assert prompt["4"]["inputs"]["steps"] == 20  # the widget's default, as the front end gives
    assert any("no saved value and no default for noise" in n for n in notes)
    g = graph()
    g["links"] = [{"id": i, "origin_id": a, "origin_slot": b, "target_id": c, "target_slot": d,
                   "type": t} for i, a, b, c, d, t in g["links"]]  # schema 1's link objects
    assert cc.ui_to_api(g, INFO)[0]["4"]["inputs"]["model"] == ["1", 0]
    api = {"1": {"class_type": "Loader", "inputs": {"ckpt_name": "a.safetensors"}}}
    assert cc.ui_to_api(api, INFO) == (api, [], [])  # an API-format file passes through


def test_compare_prompts_names_each_difference(cc):
    ours = cc.ui_to_api(graph(), INFO)[0]
    theirs = json.loads(json.dumps(ours))
    assert cc.compare_prompts(ours, theirs) == []
    theirs["4"]["inputs"]["steps"] = 31
    del theirs["8"]
    diffs = cc.compare_prompts(ours, theirs)
    assert any("steps" in d for d in diffs) and any("node 8: only in ours" in d for d in diffs)


def test_quick_lowers_comfyuis_sampler_and_latent_size_and_leaves_the_template_alone(cc):
    prompt = {"3": {"class_type": "KSampler", "inputs": {"steps": 20, "seed": 5,
                                                          "model": ["1", 0]}},
              "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 768, "height": 128,
                                                                  "batch_size": 1}},
              "5": {"class_type": "KSampler", "inputs": {"steps": ["9", 0]}},
              "6": {"class_type": "unCLIP Prior", "inputs": {"steps": 25}}}
    before = json.loads(json.dumps(prompt))
    quick, changed = cc.quicken(prompt)
    assert prompt == before  # the web UI step compares against the template's own values
    assert changed == ["node 3 KSampler steps 20 -> 2", "node 4 EmptyLatentImage width 768 -> 256"]
    assert quick["3"]["inputs"] == {"steps": 2, "seed": 5, "model": ["1", 0]}
    assert quick["4"]["inputs"] == {"width": 256, "height": 128, "batch_size": 1}
    assert quick["5"] == prompt["5"] and quick["6"] == prompt["6"]  # links, our nodes: as they are
    assert cc.parse_args(["--comfyui", "x", "--quick"]).quick
    assert not cc.parse_args(["--comfyui", "x"]).quick


# ---- models -------------------------------------------------------------------------------------

def needs_of(cc, *nodes):
    prompt = {str(i): {"class_type": t, "inputs": inputs} for i, (t, inputs) in enumerate(nodes)}
    return {(n.value, n.provider, n.rule.folder): n.groups for n in cc.model_needs(prompt)}


def test_model_rules_pick_a_provider_per_widget_value(cc):
    needs = needs_of(
        cc,
        ("unCLIP LoadUnCLIP", {"path": "pocket", "prior_path": "", "device": "auto"}),
        ("unCLIP LoadUnCLIPDecoder", {"path": "kandinsky22/decoder-inpaint"}),
        ("unCLIP LoadUnCLIP", {"path": "kandinsky22/decoder", "prior_path": "kandinsky22/prior"}),
        ("unCLIP LoadUnCLIP", {"path": "stable-unclip-h"}),
        ("unCLIP LoadUnCLIP", {"path": "stable-unclip-txt2img"}),
        ("unCLIP LoadUnCLIP", {"path": "karlo-v1-alpha"}),
        ("unCLIP preset:inpaint", {"model": "karlo", "image": "images/red_circle_white.png"}),
        ("unCLIP LoadImage", {"path": "workflows/images/red_circle_white.png"}),
        ("unCLIPCheckpointLoader", {"ckpt_name": "sd21-unclip-h.ckpt"}),
        ("CLIPVisionLoader", {"clip_name": "clip_vision_g.safetensors"}),
        ("CLIPVisionLoader", {"clip_name": "CLIP-ViT-L-14.safetensors"}),
        ("CLIPVisionLoader", {"clip_name": "clip_vision_h.safetensors"}),
        ("CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}),
        ("unCLIPCheckpointLoader", {"ckpt_name": "stable-unclip-small.ckpt"}),
        ("LoadImage", {"image": "clipspace/clipspace-mask-1.png [input]"}),
    )
    assert needs == {
        ("pocket", "bundled", ""): {}, ("", "bundled", ""): {},
        ("kandinsky22/decoder-inpaint", "tiny-kandinsky", "unclip"):
            {"root": "kandinsky22", "part": "decoder-inpaint"},
        ("kandinsky22/decoder", "tiny-kandinsky", "unclip"):
            {"root": "kandinsky22", "part": "decoder"},
        ("kandinsky22/prior", "tiny-kandinsky", "unclip"): {"root": "kandinsky22", "part": "prior"},
        ("stable-unclip-h", "tiny-stable-unclip", "unclip"): {},
        ("stable-unclip-txt2img", "tiny-stable-unclip", "unclip"): {},
        ("karlo-v1-alpha", "tiny-karlo", "unclip"): {},
        ("karlo", "tiny-karlo", "unclip"): {},
        ("sd21-unclip-h.ckpt", "fabricate", "checkpoints"): {"variant": "h"},
        ("stable-unclip-small.ckpt", "fabricate", "checkpoints"): {},  # variant h (option)
        ("v1-5-pruned-emaonly.safetensors", "placeholder", "checkpoints"): {},
        ("clip_vision_g.safetensors", "placeholder", "clip_vision"): {},  # too big to fake
        ("CLIP-ViT-L-14.safetensors", "fabricate", "clip_vision"): {"variant": "L"},
        ("clip_vision_h.safetensors", "fabricate", "clip_vision"): {"variant": "h"},
        ("clipspace/clipspace-mask-1.png [input]", "stand-in", "input"): {},
    }  # device/auto, the pack's LoadImage path and the preset's image name no model
    layouts = {n.value: dict(n.rule.options).get("layout") for n in cc.model_needs(
        {"1": {"class_type": "unCLIP LoadUnCLIP", "inputs": {"path": "stable-unclip-h"}},
         "2": {"class_type": "unCLIP LoadUnCLIP", "inputs": {"path": "stable-unclip-txt2img"}}})}
    assert layouts == {"stable-unclip-h": "img2img", "stable-unclip-txt2img": "txt2img"}


def test_provisioner_writes_only_what_is_missing_and_removes_only_what_it_wrote(cc, tmp_path):
    comfy = fake_comfyui(tmp_path)
    (comfy / "models" / "unclip" / "kept").mkdir(parents=True)
    (comfy / "models" / "unclip" / "kept" / "model_index.json").write_text("{}")
    calls = []
    prov = cc.Provisioner(comfy, sys.executable, lambda m: None)

    def fake_builder(*args):  # the tiny builders, without running them
        calls.append(args)
        Path(args[1]).mkdir(parents=True, exist_ok=True)
        if args[0] == "tiny-kandinsky":
            for part in ("prior", "decoder", "decoder-inpaint", "controlnet-depth"):
                (Path(args[1]) / part).mkdir()
                (Path(args[1]) / part / "model_index.json").write_text("{}")
        else:
            (Path(args[1]) / "model_index.json").write_text("{}")

    prov._builder = fake_builder
    prompt = {"1": {"class_type": "unCLIP LoadUnCLIP",
                    "inputs": {"path": "kandinsky22/decoder", "prior_path": "kandinsky22/prior"}},
              "2": {"class_type": "unCLIP LoadUnCLIP", "inputs": {"path": "kept"}},
              "3": {"class_type": "unCLIP LoadUnCLIP", "inputs": {"path": "stable-unclip"}},
              "4": {"class_type": "unCLIPCheckpointLoader", "inputs": {"ckpt_name": "sd/x.ckpt"}},
              "5": {"class_type": "LoadImage",
                    "inputs": {"image": "clipspace/clipspace-mask-1.png [input]"}}}
    how = [prov.provide(n) for n in cc.model_needs(prompt)]
    assert how == ["tiny Kandinsky 2.2 (random)", "tiny Kandinsky 2.2 (random)", "present",
                   "tiny Stable unCLIP img2img (random)", "empty placeholder (validated only)",
                   "stand-in picture"]
    assert [c[0] for c in calls] == ["tiny-kandinsky", "tiny-stable-unclip"]
    assert calls[1][-2:] == ("--layout", "img2img")
    assert (comfy / "models" / "checkpoints" / "sd" / "x.ckpt").stat().st_size == 0
    assert (comfy / "input" / "clipspace" / "clipspace-mask-1.png").is_file()
    assert cc.needs_placeholder(cc.model_needs(prompt), comfy)[0].value == "sd/x.ckpt"
    prov.remove()
    assert sorted(p.name for p in (comfy / "models" / "unclip").iterdir()) == ["kept"]
    assert not (comfy / "models" / "checkpoints" / "sd" / "x.ckpt").exists()
    assert not (comfy / "input" / "clipspace" / "clipspace-mask-1.png").exists()


def test_fabricated_checkpoints_are_cached_and_linked_or_placeholders(cc, tmp_path):
    comfy = fake_comfyui(tmp_path)
    cache = tmp_path / "cache"
    made = []
    prompt = {"1": {"class_type": "unCLIPCheckpointLoader",
                    "inputs": {"ckpt_name": "sd21-unclip-l.ckpt"}},
              "2": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "vit-h.safetensors"}}}
    prov = cc.Provisioner(comfy, sys.executable, lambda m: None, cache)

    def fake_fabricated(what, variant, fmt="safetensors"):  # the real one runs ComfyUI's classes for minutes
        made.append((what, variant))
        path = cache / f"{what}-{variant}.safetensors"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"weights")
        return path

    prov._fabricated = fake_fabricated
    how = [prov.provide(n) for n in cc.model_needs(prompt)]
    assert how == ["random sd21-unclip-l (real architecture)",
                   "random clip-vision-h (real architecture)"]
    assert made == [("sd21-unclip", "l"), ("clip-vision", "h")]
    link = comfy / "models" / "checkpoints" / "sd21-unclip-l.ckpt"
    assert link.is_symlink() and link.read_bytes() == b"weights"
    assert cc.needs_placeholder(cc.model_needs(prompt), comfy) == []
    prov.remove()
    assert not link.exists() and (cache / "sd21-unclip-l.safetensors").is_file()  # cache kept
    prov = cc.Provisioner(comfy, sys.executable, lambda m: None, cache, fabricate=False)
    how = [prov.provide(n) for n in cc.model_needs(prompt)]
    assert how == ["empty placeholder (validated only)"] * 2
    assert len(cc.needs_placeholder(cc.model_needs(prompt), comfy)) == 2
    prov.remove()


# ---- verdicts -----------------------------------------------------------------------------------

def entry(outputs=None, status="success", messages=()):
    return {"outputs": outputs or {}, "status": {"status_str": status,
                                                 "completed": status == "success",
                                                 "messages": list(messages)}}


def test_judge_wants_an_image_that_exists(cc, tmp_path):
    folders = {"output": tmp_path / "output", "temp": tmp_path / "temp"}
    (tmp_path / "output" / "sub").mkdir(parents=True)
    (tmp_path / "output" / "sub" / "a_00001_.png").write_bytes(b"png")
    img = {"filename": "a_00001_.png", "subfolder": "sub", "type": "output"}
    assert cc.judge(entry({"7": {"images": [img]}}), folders) == ("ok", "1 image(s)")
    gone = {**img, "filename": "gone.png"}
    status, detail = cc.judge(entry({"7": {"images": [img, gone]}}), folders)
    assert status == "failed" and "gone.png" in detail
    assert cc.judge(entry({"7": {"text": ["hi"]}}), folders)[0] == "failed"
    assert cc.judge(entry({}), folders) == ("failed", "finished without an image in its outputs")


def test_judge_reports_comfyuis_error_text_or_validated_only(cc, tmp_path):
    err = ("execution_error", {"node_id": "3", "node_type": "unCLIP Prior",
                               "exception_type": "ValueError", "exception_message": "bad steps\n"})
    failed = entry(status="error", messages=[("execution_start", {}), err])
    assert cc.judge(failed, {}) == ("failed", "node 3 (unCLIP Prior): ValueError: bad steps")
    status, detail = cc.judge(failed, {}, placeholders=True)
    assert status == "validated" and "bad steps" in detail


def test_a_refused_prompt_reads_as_comfyuis_messages(cc):
    answer = {"error": {"type": "prompt_outputs_failed_validation",
                        "message": "Prompt outputs failed validation", "details": ""},
              "node_errors": {"3": {"class_type": "unCLIP Prior", "errors": [
                  {"message": "Value 1 smaller than min of 2", "details": "steps"}]}}}
    assert cc.prompt_error(answer) == ("Prompt outputs failed validation; node 3 (unCLIP Prior): "
                                       "Value 1 smaller than min of 2: steps")


LOG_OK = """Import times for custom nodes:
   0.0 seconds: /c/custom_nodes/websocket_image_save.py
   0.4 seconds: /c/custom_nodes/unclip-nodes

WARNING: some comfy_extras/ nodes did not import correctly.
IMPORT FAILED: nodes_audio.py
"""


def test_the_log_tells_whether_the_pack_loaded(cc):
    assert cc.pack_log_status(LOG_OK) == (True, "0.4 seconds: /c/custom_nodes/unclip-nodes")
    assert cc.other_import_failures(LOG_OK) == ["nodes_audio.py"]
    bad = ("Traceback ...\nCannot import /c/custom_nodes/unclip-nodes module for custom nodes: "
           "boom\n" + LOG_OK.replace("0.4 seconds:", "0.4 seconds (IMPORT FAILED):"))
    ok, line = cc.pack_log_status(bad)
    assert not ok and line.endswith("boom")
    assert cc.pack_log_status("Starting server\n")[0] is False
