"""Our nodes that ComfyUI has too compute what ComfyUI's compute, export as ComfyUI's, and read
back as ours.

The ComfyUI side is a model of each core node written here from what ComfyUI 0.3.64's code does
(nodes_mask.py, nodes.py, comfy/utils.py's common_upscale), in our own words: GrowMask repeats a
3x3 grey dilation/erosion with SciPy's default mirrored border, ImageScale and ImageBatch go
through common_upscale (plain torch interpolation, center crop by rounded margins, Lanczos via
8-bit Pillow images), ImagePadForOutpaint fills with 0.5 and feathers quadratically.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_validator import validate_prompt, with_core
from test_comfy_contract import shipped_workflow_sets
from stages_util import tiny_checkpoint  # noqa: F401  (fixture)
from unclip_nodes.graph import comfy
from unclip_nodes.graph.cache import Cache
from unclip_nodes.graph.comfy_map import FROM_CORE, TO_CORE, api_to_core, from_core, to_core
from unclip_nodes.graph.run import execute
from unclip_nodes.graph.validate import load
from unclip_nodes.nodes import NODE_CLASS_MAPPINGS, REGISTRY, declare
from unclip_nodes.nodes import mask as masks

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "workflows"
REPLACED = {"GrowMask": "GrowMask", "InvertMask": "InvertMask", "MaskToImage": "MaskToImage",
            "ResizeImage": "ImageScale", "ImageBatch": "ImageBatch"}
RENAMED = {"FeatherMask": "BlurMask", "OutpaintPad": "OutpaintBorder"}


# --- models of ComfyUI's nodes --------------------------------------------------------------------

def core_grow(mask: torch.Tensor, expand: int, tapered_corners: bool) -> torch.Tensor:
    """GrowMask: |expand| times, each pixel becomes the max (min when shrinking) of its 3x3
    footprint (corners left out when tapered); beyond the canvas the image is mirrored with the
    edge pixel repeated (SciPy's 'reflect'), one mask of the batch at a time, in float32."""
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if not (tapered_corners and dy and dx)]
    pick = np.minimum if expand < 0 else np.maximum
    out = []
    for m in mask.reshape(-1, *mask.shape[-2:]).numpy():
        for _ in range(abs(expand)):
            p = np.pad(m, 1, mode="symmetric")
            h, w = m.shape
            acc = None
            for dy, dx in offsets:
                window = p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                acc = window.copy() if acc is None else pick(acc, window)
            m = acc
        out.append(torch.from_numpy(np.ascontiguousarray(m)))
    return torch.stack(out)


def core_invert(mask):
    return 1.0 - mask


def core_mask_to_image(mask):
    return mask.reshape(-1, 1, *mask.shape[-2:]).movedim(1, -1).expand(-1, -1, -1, 3)


def core_upscale(x: torch.Tensor, width: int, height: int, method: str, crop: str):
    """common_upscale on [B, C, H, W]."""
    if crop == "center":
        ow, oh = x.shape[-1], x.shape[-2]
        old, new = ow / oh, width / height
        dx = dy = 0
        if old > new:
            dx = round((ow - ow * (new / old)) / 2)
        elif old < new:
            dy = round((oh - oh * (old / new)) / 2)
        x = x.narrow(-2, dy, oh - 2 * dy).narrow(-1, dx, ow - 2 * dx)
    if method == "lanczos":
        frames = []
        for frame in x:
            arr = np.clip(255.0 * frame.movedim(0, -1).numpy(), 0, 255).astype(np.uint8)
            pic = Image.fromarray(arr).resize((width, height), resample=Image.Resampling.LANCZOS)
            frames.append(torch.from_numpy(np.array(pic).astype(np.float32) / 255.0).movedim(-1, 0))
        return torch.stack(frames)
    return torch.nn.functional.interpolate(x, size=(height, width), mode=method)


def core_image_scale(image, upscale_method, width, height, crop):
    if width == 0 and height == 0:
        return image
    x = image.movedim(-1, 1)
    if width == 0:
        width = max(1, round(x.shape[3] * height / x.shape[2]))
    elif height == 0:
        height = max(1, round(x.shape[2] * width / x.shape[3]))
    return core_upscale(x, width, height, upscale_method, crop).movedim(1, -1)


def core_image_batch(image1, image2):
    if image1.shape[1:] != image2.shape[1:]:
        image2 = core_upscale(image2.movedim(-1, 1), image1.shape[2], image1.shape[1],
                              "bilinear", "center").movedim(1, -1)
    return torch.cat((image1, image2))


def core_pad_for_outpaint(image, left, top, right, bottom, feathering):
    b, h, w, c = image.shape
    out = torch.ones(b, h + top + bottom, w + left + right, c) * 0.5
    out[:, top:top + h, left:left + w] = image
    mask = torch.ones(h + top + bottom, w + left + right)
    inner = torch.zeros(h, w)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        for i in range(h):
            for j in range(w):
                d = min(i if top else h, h - i if bottom else h, j if left else w,
                        w - j if right else w)
                if d < feathering:
                    inner[i, j] = ((feathering - d) / feathering) ** 2
    mask[top:top + h, left:left + w] = inner
    return out, mask[None]


CORE = {"GrowMask": core_grow, "InvertMask": core_invert, "MaskToImage": core_mask_to_image,
        "ImageScale": core_image_scale, "ImageBatch": core_image_batch,
        "ImagePadForOutpaint": core_pad_for_outpaint}


def ours(type_, **kw):
    return REGISTRY[type_].call(**kw)


def masks_to_try():
    g = torch.Generator().manual_seed(0)
    border = torch.zeros(1, 9, 11)
    border[0, 0, 3] = border[0, 4, 0] = border[0, 8, 10] = 1.0  # on three borders and a corner
    border[0, 2:5, 6:11] = 1.0
    holes = torch.ones(2, 7, 5)
    holes[0, 3, 2] = holes[1, 0, 0] = holes[1, 6, 4] = 0.0
    return [
        ("binary 8x8 x3", (torch.rand(3, 8, 8, generator=g) > 0.7).float()),
        ("grey 7x5", torch.rand(1, 7, 5, generator=g)),
        ("touching the border 9x11", border),
        ("holes at the corners 7x5 x2", holes),
        ("one row 1x13", (torch.rand(1, 1, 13, generator=g) > 0.5).float()),
        ("one pixel 1x1", torch.ones(1, 1, 1)),
        ("full", torch.ones(1, 4, 6)),
    ]


# --- pixels: our headless node against the model of ComfyUI's -------------------------------------

@pytest.mark.parametrize("name,mask", masks_to_try(), ids=[n for n, _ in masks_to_try()])
@pytest.mark.parametrize("expand", [-4, -1, 0, 1, 2, 5])
@pytest.mark.parametrize("tapered", [False, True])
def test_grow_mask_equals_comfys_grow_mask(name, mask, expand, tapered):
    before = mask.clone()
    (got,) = ours("GrowMask", mask=mask, expand=expand, tapered_corners=tapered)
    assert torch.equal(got, core_grow(mask, expand, tapered)), (name, expand, tapered)
    assert torch.equal(mask, before)


def test_grow_mask_takes_a_single_hw_mask_as_comfy_does():
    m = (torch.rand(6, 7, generator=torch.Generator().manual_seed(3)) > 0.6).float()
    (got,) = ours("GrowMask", mask=m, expand=2, tapered_corners=True)
    assert got.shape == (1, 6, 7) and torch.equal(got, core_grow(m, 2, True))


@pytest.mark.parametrize("name,mask", masks_to_try(), ids=[n for n, _ in masks_to_try()])
def test_invert_mask_and_mask_to_image_equal_comfys(name, mask):
    (inv,) = ours("InvertMask", mask=mask)
    assert torch.equal(inv, core_invert(mask))
    (img,) = ours("MaskToImage", mask=mask)
    assert torch.equal(img, core_mask_to_image(mask))
    over = mask * 1.5 - 0.25  # values outside 0..1 stay as they are in both
    assert torch.equal(ours("MaskToImage", mask=over)[0], core_mask_to_image(over))


def images_to_try():
    g = torch.Generator().manual_seed(1)
    return [("rgb 2x9x13", torch.rand(2, 9, 13, 3, generator=g)),
            ("rgba 1x8x6", torch.rand(1, 8, 6, 4, generator=g)),
            ("flat 1x5x7", torch.full((1, 5, 7, 3), 0.25))]


@pytest.mark.parametrize("name,image", images_to_try(), ids=[n for n, _ in images_to_try()])
@pytest.mark.parametrize("method", ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"])
@pytest.mark.parametrize("size", [(5, 3), (16, 23), (7, 0), (0, 4), (0, 0), (13, 9)])
@pytest.mark.parametrize("crop", ["disabled", "center"])
def test_resize_image_equals_comfys_image_scale(name, image, method, size, crop):
    (got,) = ours("ResizeImage", image=image, upscale_method=method, width=size[0],
                  height=size[1], crop=crop)
    want = core_image_scale(image, method, size[0], size[1], crop)
    assert got.shape == want.shape and torch.equal(got, want), (name, method, size, crop)


def test_resize_image_old_spellings_are_comfys_nearest_exact_and_disabled():
    image = torch.rand(1, 6, 10, 3)
    (got,) = ours("ResizeImage", image=image, upscale_method="nearest", width=4, height=9,
                  crop="none")
    assert torch.equal(got, core_image_scale(image, "nearest-exact", 4, 9, "disabled"))


def test_image_batch_of_four_equals_a_chain_of_comfys_image_batch():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 6, 9, 3, generator=g), torch.rand(1, 6, 9, 3, generator=g)
    c, d = torch.rand(1, 11, 7, 3, generator=g), torch.rand(3, 4, 17, 3, generator=g)
    (got,) = ours("ImageBatch", image_a=a, image_b=b, image_c=c, image_d=d)
    assert torch.equal(got, core_image_batch(core_image_batch(core_image_batch(a, b), c), d))
    (two,) = ours("ImageBatch", image_a=a, image_c=c)
    assert torch.equal(two, core_image_batch(a, c))
    (one,) = ours("ImageBatch", image_a=a)
    assert torch.equal(one, a)


@pytest.mark.parametrize("sides", [(2, 0, 3, 1), (0, 0, 0, 0), (8, 8, 8, 8), (0, 5, 0, 0)])
def test_grey_outpaint_border_without_feather_equals_comfys_pad_for_outpaint(sides):
    image = torch.rand(2, 5, 7, 3)
    got_image, got_mask = ours("OutpaintBorder", image=image, left=sides[0], top=sides[1],
                               right=sides[2], bottom=sides[3], fill="grey", feather=0, seed=0)
    want_image, want_mask = core_pad_for_outpaint(image, *sides, feathering=0)
    assert torch.equal(got_image, want_image)
    assert want_mask.shape[0] == 1 and torch.equal(got_mask, want_mask.expand_as(got_mask))


# --- exports name ComfyUI's nodes, and read back as ours ------------------------------------------

def picture(path: Path, size=(13, 9), alpha=True) -> Path:
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (size[1], size[0], 4 if alpha else 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def mixed_workflow(tmp_path: Path, ids: str = "names") -> tuple[Path, dict[str, str]]:
    """Every mapped node, with the old names (types, fields and values) where they had any."""
    src = picture(tmp_path / "in.png")
    small = picture(tmp_path / "small.png", (6, 11), alpha=False)
    names = ["load", "small", "shape", "soft", "grow", "taper", "inv", "show", "big", "pad",
             "grey", "blur", "batch", "one", "save"]
    n = {k: (str(i) if ids == "numbers" else k) for i, k in enumerate(names, 1)}
    wf = tmp_path / f"mixed_{ids}.yaml"
    wf.write_text(textwrap.dedent(f"""
        description: Every node that ComfyUI has too.
        nodes:
          '{n['load']}': {{type: LoadImage, params: {{path: "{src}"}}}}
          '{n['small']}': {{type: LoadImage, params: {{path: "{small}"}}}}
          '{n['shape']}': {{type: EllipseMask, links: {{like: '{n['load']}.image'}}, params: {{x: 1, y: 0, w: 9, h: 6}}}}
          '{n['soft']}': {{type: MaskFromImage, links: {{image: '{n['load']}.image'}}, params: {{channel: red}}}}
          '{n['grow']}': {{type: GrowMask, links: {{mask: '{n['shape']}.mask'}}, params: {{pixels: 2}}}}
          '{n['taper']}': {{type: GrowMask, links: {{mask: '{n['soft']}.mask'}}, params: {{expand: -1, tapered_corners: true}}}}
          '{n['inv']}': {{type: InvertMask, links: {{mask: '{n['taper']}.mask'}}}}
          '{n['show']}': {{type: MaskToImage, links: {{mask: '{n['inv']}.mask'}}}}
          '{n['big']}': {{type: ResizeImage, links: {{image: '{n['load']}.image'}}, params: {{width: 20, height: 0, method: nearest, crop: none}}}}
          '{n['pad']}': {{type: OutpaintPad, links: {{image: '{n['big']}.image'}}, params: {{left: 3, bottom: 2, fill: grey}}}}
          '{n['grey']}': {{type: MaskToImage, links: {{mask: '{n['pad']}.mask'}}}}
          '{n['blur']}': {{type: FeatherMask, links: {{mask: '{n['grow']}.mask'}}, params: {{pixels: 2}}}}
          '{n['batch']}': {{type: ImageBatch, links: {{image_a: '{n['load']}.image', image_b: '{n['small']}.image', image_c: '{n['show']}.image', image_d: '{n['grey']}.image'}}}}
          '{n['one']}': {{type: ImageBatch, links: {{image_a: '{n['batch']}.image'}}}}
          '{n['save']}': {{type: SaveImage, links: {{images: '{n['one']}.image'}}, params: {{prefix: mixed}}}}
        outputs:
          batch: '{n['one']}.image'
          grown: '{n['grow']}.mask'
          blurred: '{n['blur']}.mask'
          padded: '{n['pad']}.image'
          shown: '{n['show']}.image'
        """).lstrip())
    return wf, n


def run_api_with_core_models(prompt: dict) -> dict[str, tuple]:
    """An API prompt evaluated as ComfyUI would: its own nodes by the models above, ours by our
    node functions; savers left out.  Outputs per node id."""
    done: dict[str, tuple] = {}

    def evaluate(key: str) -> tuple:
        if key not in done:
            entry = prompt[key]
            kw = {k: evaluate(str(v[0]))[v[1]] if isinstance(v, list) else v
                  for k, v in entry["inputs"].items()}
            ct = entry["class_type"]
            if ct in CORE:
                out = CORE[ct](**kw)
                done[key] = out if isinstance(out, tuple) else (out,)
            else:
                done[key] = declare.get(ct[len(declare.COMFY_PREFIX):]).call(**kw)
        return done[key]

    for key, entry in prompt.items():
        if entry["class_type"] != "unCLIP SaveImage":
            evaluate(key)
    return done


def headless(rs, tmp_path) -> dict:
    return execute(rs, out_dir=tmp_path / "out", device="cpu", cache=Cache.off()).outputs


OUTPUTS = {"grown": ("grow", "mask"), "blurred": ("blur", "mask"), "padded": ("pad", "image"),
           "shown": ("show", "image")}


@pytest.mark.parametrize("ids", ["names", "numbers"])
def test_exported_prompt_computes_in_comfy_what_the_workflow_computes_headless(tmp_path, ids):
    path, n = mixed_workflow(tmp_path, ids)
    rs = load(path)
    api = comfy.to_api(rs)
    classes = {node["class_type"] for node in api.values()}
    assert {"GrowMask", "InvertMask", "MaskToImage", "ImageScale", "ImageBatch",
            "ImagePadForOutpaint"} <= classes
    assert not classes & {declare.comfy_id(t) for t in (*REPLACED, *RENAMED)}
    assert {"unCLIP BlurMask", "unCLIP LoadImage", "unCLIP SaveImage"} <= classes
    assert sum(node["class_type"] == "ImageBatch" for node in api.values()) == 3  # a+b, +c, +d
    if ids == "numbers":  # ComfyUI's ids are kept; inserted nodes take new numbers
        assert all(k.isdigit() for k in api)
        assert set(n.values()) - {n["one"]} <= set(api) and n["one"] not in api
    want = headless(rs, tmp_path)
    got = run_api_with_core_models(api)
    title = {node["_meta"]["title"]: k for k, node in api.items()}
    for out, (node, _) in OUTPUTS.items():
        assert torch.equal(got[title[n[node]]][0], want[out]), out
    saver = next(node for node in api.values() if node["class_type"] == "unCLIP SaveImage")
    src, index = saver["inputs"]["images"]  # the one-input ImageBatch is gone: the chain's end
    assert api[src]["class_type"] == "ImageBatch" and src == title[n["batch"]]
    assert got[src][index].shape[0] == 4 and torch.equal(got[src][index], want["batch"])


def test_exported_ui_names_only_registered_nodes_and_links_the_chain(tmp_path):
    ui = comfy.to_ui(load(mixed_workflow(tmp_path)[0]))
    types = [node["type"] for node in ui["nodes"] if node["type"] != "Note"]
    declare.get("comfy:GrowMask")
    core = {declare.class_type(s) for s in declare.FOREIGN.values()}
    assert all(t in core or (t in NODE_CLASS_MAPPINGS and not getattr(
        NODE_CLASS_MAPPINGS[t], "DEPRECATED", False)) for t in types), types
    assert types.count("ImageBatch") == 3
    by_id = {node["id"]: node for node in ui["nodes"]}
    for link_id, src, slot, dst, dslot, typ in ui["links"]:
        assert by_id[src]["outputs"][slot]["type"] == typ == by_id[dst]["inputs"][dslot]["type"]
        assert link_id in by_id[src]["outputs"][slot]["links"]
        assert by_id[dst]["inputs"][dslot]["link"] == link_id
    grows = sorted(node["widgets_values"] for node in ui["nodes"] if node["type"] == "GrowMask")
    assert grows == [[-1, True], [2, False]]  # our square corners, written out


def test_exported_prompt_runs_headless_again_with_the_same_pixels(tmp_path):
    path, n = mixed_workflow(tmp_path)
    rs = load(path)
    api = comfy.to_api(rs)
    back = comfy.load_api(api, file=str(tmp_path / "p.json"))
    assert not any(declare.is_foreign(rn.spec) for rn in back.nodes.values())
    assert {rn.spec.type for rn in back.nodes.values()} >= {
        "GrowMask", "InvertMask", "MaskToImage", "ResizeImage", "ImageBatch", "OutpaintBorder"}
    want = headless(rs, tmp_path)
    title = {node["_meta"]["title"]: k for k, node in api.items()}
    for out, (node, socket) in OUTPUTS.items():
        assert torch.equal(run_to(back, tmp_path, title[n[node]], socket), want[out]), out
    saver = next(k for k, node in api.items() if node["class_type"] == "unCLIP SaveImage")
    src = back.nodes[saver].links["images"][0]
    assert torch.equal(run_to(back, tmp_path, src, "image"), want["batch"])


def run_to(rs, tmp_path, node: str, socket: str) -> torch.Tensor:
    from dataclasses import replace
    return execute(replace(rs, outputs={"x": (node, socket)}), out_dir=tmp_path / "o2",
                   device="cpu", cache=Cache.off()).outputs["x"]


def test_a_comfyui_made_prompt_with_core_nodes_runs_headless_as_ours(tmp_path):
    src = picture(tmp_path / "in.png")
    prompt = {
        "1": {"class_type": "unCLIP LoadImage", "inputs": {"path": str(src)}},
        "2": {"class_type": "GrowMask", "inputs": {"mask": ["1", 1], "expand": 3,
                                                   "tapered_corners": True}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "4": {"class_type": "ImageScale", "inputs": {"image": ["3", 0], "upscale_method": "area",
                                                     "width": 7, "height": 5, "crop": "center"}},
        "5": {"class_type": "ImagePadForOutpaint", "inputs": {"image": ["4", 0], "left": 2,
                                                              "top": 0, "right": 1, "bottom": 0,
                                                              "feathering": 0}},
        "6": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["5", 0]}},
        "7": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["6", 0], "prefix": "c"}},
    }
    mine = from_core(prompt)
    assert [mine[k]["class_type"] for k in "234567"] == [
        "unCLIP GrowMask", "unCLIP MaskToImage", "unCLIP ResizeImage", "unCLIP OutpaintBorder",
        "unCLIP ImageBatch", "unCLIP SaveImage"]
    assert prompt["2"]["class_type"] == "GrowMask"  # the caller's prompt is left alone
    got = run_to(comfy.load_api(prompt), tmp_path, "6", "image")
    want = run_api_with_core_models(prompt)["6"][0]
    assert torch.equal(got, want)
    feathered = json.loads(json.dumps(prompt))
    feathered["5"]["inputs"]["feathering"] = 2  # quadratic feather: ours has none, stays core
    assert from_core(feathered)["5"]["class_type"] == "ImagePadForOutpaint"


# --- shipped workflows, ComfyUI's registry, old prompts -------------------------------------------

def pack_object_info() -> dict:
    """What ComfyUI's /object_info lists for the pack's own nodes (as the contract tests'
    fixture, without the subprocess)."""
    info = {}
    for key, cls in NODE_CLASS_MAPPINGS.items():
        info[key] = json.loads(json.dumps({
            "input_types": cls.INPUT_TYPES(), "return_types": list(cls.RETURN_TYPES),
            "output_node": getattr(cls, "OUTPUT_NODE", False)}))
    return info


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.yaml")))
def test_shipped_workflows_export_without_replaced_nodes_and_comfy_accepts_them(
        name, tiny_checkpoint, tmp_path):  # noqa: F811
    path = WORKFLOWS / f"{name}.yaml"
    rs = load(path, shipped_workflow_sets(path, tiny_checkpoint, tmp_path))
    api = comfy.to_api(rs)
    ui = comfy.to_ui(rs)
    gone = {declare.comfy_id(t) for t in (*REPLACED, *RENAMED)}
    assert not {n["class_type"] for n in api.values()} & gone
    assert not {n["type"] for n in ui["nodes"]} & gone
    assert validate_prompt(api, with_core(pack_object_info(), api)) == {}


def test_the_shipped_workflows_use_the_new_names():
    """All of them, also those the export test cannot load here (other families' models)."""
    import yaml
    checked = 0
    for path in sorted(WORKFLOWS.rglob("*.yaml")):
        for nid, node in (yaml.safe_load(path.read_text()).get("nodes") or {}).items():
            type_ = node.get("type") if isinstance(node, dict) else None
            if not isinstance(type_, str):
                continue
            assert type_ not in RENAMED, (path.name, nid)
            spec = declare.get(type_)
            for section in ("params", "links"):
                assert not set(node.get(section) or {}) & set(spec.renamed if spec else ()), (
                    path.name, nid)
            checked += 1
    assert checked > 100


def test_replaced_nodes_are_only_deprecated_in_comfyui_and_their_core_nodes_are_what_exports_use():
    """ComfyUI leaves DEPRECATED classes out of its search and node library: no doubles there,
    while a graph saved with the old node still opens."""
    current = {k for k, c in NODE_CLASS_MAPPINGS.items() if not getattr(c, "DEPRECATED", False)}
    for ours_, core in REPLACED.items():
        spec = declare.get(ours_)
        assert spec.replaced_by == core
        assert declare.comfy_id(ours_) not in current
        assert NODE_CLASS_MAPPINGS[declare.comfy_id(ours_)].DEPRECATED is True
        assert declare.get("comfy:" + core) is not None
        assert ours_ in TO_CORE and FROM_CORE[core][0] == ours_
    for old, new in RENAMED.items():
        assert declare.current_type(old) == new and declare.get(old) is None
        assert declare.comfy_id(new) in current and declare.comfy_id(old) not in current
        assert NODE_CLASS_MAPPINGS[declare.comfy_id(old)].DEPRECATED is True
        assert declare.get(new).replaced_by is None


def test_an_old_ui_graph_gives_resize_image_its_widget_values_in_the_old_order():
    """A saved graph gives widget values by position: the deprecated ResizeImage lists them as
    the old node did (width, height, method, crop), so [24, 0, 'nearest', 'none'] still means
    24 wide, nearest, not cropped."""
    old = NODE_CLASS_MAPPINGS["unCLIP ResizeImage"]
    required = old.INPUT_TYPES()["required"]
    assert list(required) == ["image", "width", "height", "upscale_method", "crop"]
    values = dict(zip(["width", "height", "upscale_method", "crop"], [24, 0, "nearest", "none"]))
    assert "nearest" in required["upscale_method"][0] and "none" in required["crop"][0]
    image = torch.rand(1, 6, 12, 3)
    (got,) = old().run(image=image, **values)
    assert got.shape == (1, 12, 24, 3)
    assert not {s.type for s in REGISTRY.values() if s.replaced_by} - set(REPLACED)


OLD_YAML = """
nodes:
  load: {type: LoadImage, params: {path: "%s"}}
  shape: {type: RectangleMask, links: {like: load.image}, params: {x: 4, y: 3, w: 1, h: 1}}
  grow: {type: GrowMask, links: {mask: shape.mask}, params: {pixels: 3}}
  soft: {type: FeatherMask, links: {mask: grow.mask}, params: {pixels: 2}}
  pad: {type: OutpaintPad, links: {image: load.image}, params: {left: 2, top: 1, fill: edge, feather: 1}}
  big: {type: ResizeImage, links: {image: load.image}, params: {width: 26, height: 0, method: nearest, crop: none}}
outputs:
  grown: grow.mask
  soft: soft.mask
  padded: pad.image
  border: pad.mask
  big: big.image
"""


def test_an_old_workflow_with_old_names_loads_and_gives_the_pixels_it_gave_before(tmp_path):
    src = picture(tmp_path / "in.png", alpha=False)
    wf = tmp_path / "old.yaml"
    wf.write_text(textwrap.dedent(OLD_YAML % src).lstrip())
    rs = load(wf)
    assert rs.nodes["grow"].params == {"expand": 3, "tapered_corners": False}
    assert rs.nodes["big"].params["upscale_method"] == "nearest"
    out = headless(rs, tmp_path)
    square = torch.zeros(1, 9, 13)
    square[0, 0:7, 1:8] = 1  # the pixel (4, 3) grown by a 7x7 square, clipped at the top
    assert torch.equal(out["grown"], square)
    assert torch.equal(out["soft"], masks.feather(square, 2))
    image = torch.from_numpy(np.asarray(Image.open(src), dtype=np.float32) / 255.0)[None]
    edge = torch.nn.functional.pad(image.movedim(-1, 1), (2, 0, 1, 0), mode="replicate")
    assert torch.equal(out["padded"], edge.movedim(1, -1))
    border = torch.ones(1, 10, 15)
    border[0, 1:, 2:] = 0
    border[0, 1, 2:] = border[0, 1:, 2] = 0.5  # feather 1: (1 - 0) / (1 + 1) next to the border
    assert torch.equal(out["border"], border)
    nearest = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(18, 26),
                                              mode="nearest-exact").movedim(1, -1)
    assert torch.equal(out["big"], nearest)


def old_prompt(src: Path) -> dict:
    """An API prompt as the exporter wrote it before ComfyUI's nodes took over."""
    return {
        "1": {"class_type": "unCLIP LoadImage", "inputs": {"path": str(src)},
              "_meta": {"title": "load"}},
        "2": {"class_type": "unCLIP GrowMask", "inputs": {"mask": ["1", 1], "pixels": 2},
              "_meta": {"title": "grow"}},
        "3": {"class_type": "unCLIP FeatherMask", "inputs": {"mask": ["2", 0], "pixels": 2},
              "_meta": {"title": "soft"}},
        "4": {"class_type": "unCLIP InvertMask", "inputs": {"mask": ["3", 0]},
              "_meta": {"title": "inv"}},
        "5": {"class_type": "unCLIP MaskToImage", "inputs": {"mask": ["4", 0]},
              "_meta": {"title": "show"}},
        "6": {"class_type": "unCLIP ResizeImage",
              "inputs": {"image": ["1", 0], "width": 20, "height": 0, "method": "nearest",
                         "crop": "none"}, "_meta": {"title": "big"}},
        "7": {"class_type": "unCLIP OutpaintPad",
              "inputs": {"image": ["6", 0], "left": 2, "top": 0, "right": 0, "bottom": 3,
                         "fill": "grey", "feather": 0, "seed": 0}, "_meta": {"title": "pad"}},
        "8": {"class_type": "unCLIP OutpaintPad",
              "inputs": {"image": ["1", 0], "left": 4, "top": 0, "right": 0, "bottom": 0,
                         "fill": "edge", "feather": 2, "seed": 0}, "_meta": {"title": "edge"}},
        "9": {"class_type": "unCLIP ImageBatch",
              "inputs": {"image_a": ["1", 0], "image_b": ["5", 0], "image_c": ["7", 0]},
              "_meta": {"title": "batch"}},
        "10": {"class_type": "unCLIP ImageBatch", "inputs": {"image_a": ["9", 0]},
               "_meta": {"title": "alone"}},
        "11": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["10", 0], "prefix": "o"},
               "_meta": {"title": "save"}},
        "12": {"class_type": "unCLIP SaveImage", "inputs": {"images": ["8", 0], "prefix": "e"},
               "_meta": {"title": "save2"}},
    }


def test_api_to_core_makes_an_old_prompt_one_that_comfy_accepts_with_the_same_pixels(tmp_path):
    src = picture(tmp_path / "in.png", alpha=True)
    old = old_prompt(src)
    before = json.loads(json.dumps(old))
    new = api_to_core(old)
    assert old == before  # not changed in place
    assert validate_prompt(new, with_core(pack_object_info(), new)) == {}
    classes = {k: n["class_type"] for k, n in new.items()}
    assert classes["2"] == "GrowMask" and new["2"]["inputs"] == {
        "mask": ["1", 1], "expand": 2, "tapered_corners": False}
    assert classes["3"] == "unCLIP BlurMask" and classes["8"] == "unCLIP OutpaintBorder"
    assert classes["6"] == "ImageScale" and new["6"]["inputs"]["upscale_method"] == "nearest-exact"
    assert new["6"]["inputs"]["crop"] == "disabled"
    assert classes["7"] == "ImagePadForOutpaint" and new["7"]["inputs"]["feathering"] == 0
    assert "10" not in new and new["11"]["inputs"]["images"] == ["9", 0]  # a one-image batch
    assert list(classes.values()).count("ImageBatch") == 2
    assert not set(classes.values()) & {declare.comfy_id(t) for t in (*REPLACED, *RENAMED)}
    assert api_to_core(new) == new  # nothing left to do
    # ComfyUI computes from the new prompt what the old one computes headless
    old_run = run_api_old_headless(old, tmp_path)
    got = run_api_with_core_models(new)
    assert torch.equal(got["9"][0], old_run)


def run_api_old_headless(prompt: dict, tmp_path: Path) -> torch.Tensor:
    return run_to(comfy.load_api(prompt), tmp_path, "10", "image")


def test_to_core_leaves_a_workflow_without_such_nodes_as_it_is(tmp_path):
    src = picture(tmp_path / "in.png")
    wf = tmp_path / "plain.yaml"
    wf.write_text(textwrap.dedent(f"""
        nodes:
          load: {{type: LoadImage, params: {{path: "{src}"}}}}
          edge: {{type: OutpaintBorder, links: {{image: load.image}}, params: {{left: 2}}}}
          save: {{type: SaveImage, links: {{images: edge.image}}, params: {{prefix: p}}}}
        """).lstrip())
    rs = load(wf)
    assert to_core(rs) is rs
