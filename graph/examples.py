"""The pack's example workflows for ComfyUI's template browser (Workflow > Browse Templates).

ComfyUI lists every ``example_workflows/<name>.json`` of a custom-node pack as a template, with
``<name>.jpg`` as its thumbnail.  Ours are UI workflows exported from shipped YAML workflows,
exactly as ``unclip export workflows/<name>.yaml --comfy-ui -o example_workflows/<name>.json``
writes them; the thumbnails are what running the workflow saves (``unclip run``).

    python -m unclip_nodes.graph.examples               # rewrite the JSON files
    python -m unclip_nodes.graph.examples --previews    # and run each workflow for its .jpg

The sample images of the shipped workflows are inside the pack, so the exporter writes their
paths relative to the pack (``workflows/images/...``), which our LoadImage finds inside ComfyUI
too, whatever the pack's folder is called.  ``tests/test_comfy_examples.py`` regenerates the
JSON files and compares them with the committed ones.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from PIL import Image

from ..nodes.errors import UserError, excerpt
from ..nodes.image import PACK_DIR
from .comfy import to_ui
from .validate import load

WORKFLOWS = PACK_DIR / "workflows"
FOLDER = PACK_DIR / "example_workflows"
EXAMPLES = ("text_to_image", "image_variations", "inpaint", "interpolate_images", "text_diff",
            "pca_probe")
"""Templates that run on the bundled pocket model: ``workflows/<name>.yaml`` as it is, with a
thumbnail of what it draws."""
_K22 = {"prior": "kandinsky-2-2-prior", "decoder": "kandinsky-2-2-decoder"}
MODEL_TEMPLATES = {
    "kandinsky_2_2_text_to_image": ("kandinsky/text_to_image", _K22),
    "kandinsky_2_2_variations": ("kandinsky/variations", _K22),
    "kandinsky_2_2_inpaint": ("kandinsky/inpaint",
                              {**_K22, "decoder": "kandinsky-2-2-decoder-inpaint"}),
    # with ComfyUI's own nodes: they run only inside ComfyUI
    "karlo_prior_to_sd21_unclip": ("comfyui/karlo_prior_to_sd21_unclip",
                                   {"karlo": "karlo-v1-alpha"}),
    "kandinsky_prior_to_sdxl_revision": ("comfyui/kandinsky_prior_to_sdxl_revision",
                                         {"prior": "kandinsky-2-2-prior"}),
    "clip_vision_encode_to_decoder": ("comfyui/clip_vision_encode_to_decoder",
                                      {"model": "karlo-v1-alpha"}),
}
"""Templates for checkpoints the user puts in ComfyUI's models/unclip/: template name ->
(workflow, the model names its loaders get, as ComfyUI's drop-downs list them: the folders'
names as published).  They are exported against tiny stand-ins of those folders (nothing is
downloaded), and their thumbnail is a title card, since no real weights are at hand to draw
one."""
TEMPLATES = (*EXAMPLES, *MODEL_TEMPLATES)
PREVIEW_SIDE = 256
"""Previews are enlarged (nearest neighbour, by a whole factor) until their shorter side is at
least this, so that the pocket model's 64 px pictures stay sharp in the browser."""


def ui_json(name: str) -> str:
    """The UI workflow of template ``name`` with its default inputs, as export writes it."""
    if name in MODEL_TEMPLATES:
        workflow, sets = MODEL_TEMPLATES[name]
        with _stand_in_models():
            doc = to_ui(load(WORKFLOWS / f"{workflow}.yaml", sets))
    else:
        doc = to_ui(load(WORKFLOWS / f"{name}.yaml"))
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


_STAND_INS: dict[str, Path] = {}


class _stand_in_models:
    """UNCLIP_MODELS pointing at tiny random checkpoints under the names the model templates
    use, for as long as the block runs (made once per process)."""

    def __enter__(self):
        import os
        if "root" not in _STAND_INS:
            from ..nodes.tiny_kandinsky import save_tiny_kandinsky
            import atexit
            import shutil
            root = Path(tempfile.mkdtemp(prefix="unclip-templates-"))
            atexit.register(shutil.rmtree, root, True)
            from ..nodes.tiny import save_tiny_checkpoint
            tiny = save_tiny_kandinsky(root / "tiny")
            for part in ("prior", "decoder", "decoder-inpaint"):
                (root / f"kandinsky-2-2-{part}").symlink_to(Path(tiny) / part)
            save_tiny_checkpoint(root / "karlo-v1-alpha")
            _STAND_INS["root"] = root
        self.before = os.environ.get("UNCLIP_MODELS")
        os.environ["UNCLIP_MODELS"] = str(_STAND_INS["root"])
        return self

    def __exit__(self, *exc):
        import os
        if self.before is None:
            os.environ.pop("UNCLIP_MODELS", None)
        else:
            os.environ["UNCLIP_MODELS"] = self.before
        return False


def title_card(name: str) -> Image.Image:
    """A thumbnail for a template whose model is not at hand: its title on a plain card."""
    from PIL import ImageDraw
    side = PREVIEW_SIDE
    card = Image.new("RGB", (side, side), (32, 36, 48))
    draw = ImageDraw.Draw(card)
    proper = {"clip": "CLIP", "sd21": "SD 2.1", "sdxl": "SDXL", "unclip": "unCLIP",
              "karlo": "Karlo", "kandinsky": "Kandinsky"}
    words = [proper.get(w, w) for w in name.replace("kandinsky_2_2_", "kandinsky 2.2 ")
             .replace("_", " ").split(" ")]
    words[0] = words[0][:1].upper() + words[0][1:]
    lines, line = [], ""
    for w in words:
        if line and len(line) + len(w) > 16:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    y = side // 2 - 14 * len(lines)
    for text in lines:
        draw.text((16, y), text, fill=(235, 235, 235), font_size=22)
        y += 28
    return card


def write_examples(folder: Path = FOLDER, names: Iterable[str] = TEMPLATES) -> list[Path]:
    """Write ``<name>.json`` for each example into ``folder``; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = folder / f"{name}.json"
        path.write_text(ui_json(name), encoding="utf-8")
        written.append(path)
    return written


def preview(name: str, device: str = "auto") -> Image.Image:
    """Run ``workflows/<name>.yaml`` with its defaults and lay out the PNGs it saves (one, or
    several side by side), enlarged for a thumbnail."""
    from .cache import Cache
    from .api import run_workflow
    with tempfile.TemporaryDirectory() as out:
        result = run_workflow(WORKFLOWS / f"{name}.yaml", out_dir=out, device=device,
                              cache=Cache.off())
        pictures = [Image.open(f).convert("RGB") for f in result.files if f.endswith(".png")]
        if not pictures:
            raise UserError(f"workflow {name} saves no PNG to make a preview of", field="name")
        for p in pictures:
            p.load()
    sheet = _side_by_side(pictures)
    factor = max(1, math.ceil(PREVIEW_SIDE / min(sheet.size)))
    return sheet.resize((sheet.width * factor, sheet.height * factor), Image.Resampling.NEAREST)


def _side_by_side(pictures: list[Image.Image], gap: int = 2) -> Image.Image:
    if len(pictures) == 1:
        return pictures[0]
    cols = math.ceil(math.sqrt(len(pictures)))
    rows = math.ceil(len(pictures) / cols)
    w, h = max(p.width for p in pictures), max(p.height for p in pictures)
    sheet = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap),
                      (255, 255, 255))
    for i, p in enumerate(pictures):
        sheet.paste(p, ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    return sheet


def write_previews(folder: Path = FOLDER, names: Iterable[str] = TEMPLATES,
                   device: str = "auto") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = folder / f"{name}.jpg"
        picture = title_card(name) if name in MODEL_TEMPLATES else preview(name, device)
        picture.save(path, format="JPEG", quality=92)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unclip_nodes.graph.examples",
                                 description="Write the example workflows for ComfyUI's "
                                             "template browser.")
    ap.add_argument("--folder", type=Path, default=FOLDER,
                    help="where to write them (default: the pack's example_workflows/)")
    ap.add_argument("--previews", action="store_true",
                    help="also run each workflow and write its thumbnail <name>.jpg")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="device for --previews (default: auto)")
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"default: {' '.join(TEMPLATES)}")
    args = ap.parse_args(argv)
    names = args.names or list(TEMPLATES)
    try:
        for name in names:
            if name not in TEMPLATES:
                raise UserError(f"no template {excerpt(name)}; one of "
                                f"{', '.join(TEMPLATES)}", field="name")
        files = write_examples(args.folder, names)
        if args.previews:
            files += write_previews(args.folder, names, args.device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f"wrote {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
