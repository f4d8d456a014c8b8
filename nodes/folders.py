"""Where model folders and input files are looked up, and where they may be read from.

Headless, a loader's ``path`` is a directory, ``pocket``, or the name of a checkpoint folder
under one of the folders listed in ``UNCLIP_MODELS`` (a path list like ``PATH``).  Inside
ComfyUI, checkpoint folders live in ComfyUI's model directories under the type ``unclip``
(``models/unclip/``, and any ``unclip:`` entry of ``extra_model_paths.yaml``): loaders offer them
as a drop-down, and no loader or LoadImage reads outside ComfyUI's known folders (models, its
``input/`` folder, and the bundled pocket model), so that a shared ComfyUI server never lets a
remote client read arbitrary files.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from .errors import UserError

PACK_DIR = Path(__file__).resolve().parent.parent
"""The pack's own folder (the repository root): the last place a relative path is looked up,
so that ``workflows/images/...`` names the shipped sample images from anywhere, also inside
an installed wheel."""
POCKET = PACK_DIR / "models" / "pocket"
"""The bundled pocket checkpoint, what ``path: pocket`` means."""

FOLDER_TYPE = "unclip"
"""The model folder type we register with ComfyUI's folder_paths."""

def comfy_folder_paths():
    """ComfyUI's folder_paths module when we run inside ComfyUI (it is importable), else None.
    Registers our folder type on first use."""
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return None
    needed = ("get_input_directory", "get_folder_paths", "add_model_folder_path", "models_dir")
    if not all(hasattr(folder_paths, n) for n in needed):
        return None  # not ComfyUI's module (a stand-in that only serves output folders)
    default = os.path.join(folder_paths.models_dir, FOLDER_TYPE)
    known = getattr(folder_paths, "folder_names_and_paths", {})
    # get_folder_paths raises KeyError for a type nobody registered yet
    paths = folder_paths.get_folder_paths(FOLDER_TYPE) if FOLDER_TYPE in known else []
    if default not in paths:  # an extra_model_paths.yaml 'unclip:' entry may come first
        folder_paths.add_model_folder_path(FOLDER_TYPE, default, is_default=True)
        try:  # where a user is told to put checkpoints: there from the start
            os.makedirs(default, exist_ok=True)
        except OSError:
            pass  # a read-only ComfyUI: the drop-downs are empty, the loaders say where to look
        copy_samples(Path(folder_paths.get_input_directory()))
    return folder_paths


SAMPLES = "workflows/images"
"""Where the pack's sample pictures lie, in the pack and (copied) in ComfyUI's input folder."""


def copy_samples(input_dir: Path) -> None:
    """The pack's sample pictures, copied into ComfyUI's input folder under the names the
    example workflows use (``workflows/images/...``), so that its front end previews them like
    any input file (it fetches them from there) and the mask editor can paint on them.  Files
    already there are left as they are."""
    target = input_dir / SAMPLES
    for f in sorted((PACK_DIR / SAMPLES).glob("*.png")):
        try:
            if not (target / f.name).exists():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target / f.name)
        except OSError:
            return  # a read-only input folder: LoadImage still finds them in the pack


def model_roots() -> list[Path]:
    """The folders checkpoint names are looked up in: ComfyUI's ``unclip`` model folders inside
    ComfyUI, else those of ``UNCLIP_MODELS``."""
    fp = comfy_folder_paths()
    if fp is not None:
        return [Path(p) for p in fp.get_folder_paths(FOLDER_TYPE)]
    raw = os.environ.get("UNCLIP_MODELS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def _pipeline(folder: Path) -> str | None:
    try:
        name = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        return name.get("_class_name") if isinstance(name, dict) else None
    except (OSError, ValueError):
        return None


def checkpoints(roots: list[Path] | None = None) -> dict[str, tuple[Path, str | None]]:
    """name -> (folder, pipeline class) for every checkpoint folder (one holding a
    model_index.json) directly in a root or one level below (``kandinsky22/prior``); the first
    root with a name wins."""
    found: dict[str, tuple[Path, str | None]] = {}
    for root in roots if roots is not None else model_roots():
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir()):
            if not d.is_dir():
                continue
            if (d / "model_index.json").is_file():
                found.setdefault(d.name, (d, _pipeline(d)))
                continue
            for sub in sorted(d.iterdir()) if d.is_dir() else ():
                if sub.is_dir() and (sub / "model_index.json").is_file():
                    found.setdefault(f"{d.name}/{sub.name}", (sub, _pipeline(sub)))
    return found


def model_choices(holds: Callable[[str | None], tuple[str, ...]] | None = None,
                  stage: str | None = None) -> list[str]:
    """A loader's drop-down: the bundled pocket model, then every checkpoint folder found that
    holds ``stage`` (any, for LoadUnCLIP); ``holds(pipeline class)`` says which stages a folder
    holds (the family registry's ``stages_held``)."""
    return ["pocket", *(n for n, (_, cls) in checkpoints().items()
                        if stage is None or holds is None or stage in holds(cls))]


def prior_choices(holds: Callable[[str | None], tuple[str, ...]]) -> list[str]:
    """LoadUnCLIP's prior_path drop-down: none, or a folder that holds a prior and no decoder
    (a prior that ships in a folder of its own)."""
    return ["", *(n for n, (_, cls) in checkpoints().items()
                  if "prior" in holds(cls) and "decoder" not in holds(cls))]


def find_model(name: str) -> Path | None:
    """The checkpoint folder ``name`` stands for in the model roots, if any."""
    hit = checkpoints().get(name.strip().strip("/"))
    return hit[0] if hit else None


def inside(path: Path, folders) -> bool:
    path = path.resolve()
    for f in folders:
        try:
            path.relative_to(Path(f).resolve())
            return True
        except ValueError:
            continue
    return False


def confine_model(path: Path, field: str = "path") -> None:
    """Inside ComfyUI: a UserError unless ``path`` lies in one of its unclip model folders (or is
    the bundled pocket model)."""
    if comfy_folder_paths() is None or inside(path, [POCKET]):
        return
    roots = model_roots()
    if not inside(path, roots):
        shown = ", ".join(str(r) for r in roots) or "models/unclip"
        raise UserError(f"{path} is outside ComfyUI's unclip model folders ({shown}); put the "
                        f"checkpoint folder there and pick it from the list", field=field)


def input_files() -> list[str]:
    """Inside ComfyUI: the image files of its input folder (LoadImage's drop-down), then the
    pack's sample pictures (``workflows/images/...``, what the example workflows load)."""
    fp = comfy_folder_paths()
    if fp is None:
        return []
    folder = Path(fp.get_input_directory())
    names = [f.name for f in folder.iterdir() if f.is_file()] if folder.is_dir() else []
    if hasattr(fp, "filter_files_content_types"):
        names = fp.filter_files_content_types(names, ["image"])
    samples = sorted(f"workflows/images/{f.name}"
                     for f in (PACK_DIR / "workflows" / "images").glob("*.png"))
    return sorted(names) + samples


def comfy_input_path(name: str, field: str = "image") -> Path | None:
    """Inside ComfyUI: the file ``name`` (as the upload widget gives it) in ComfyUI's input
    folder, annotated names included (the mask editor's ``clipspace/x.png [input]``, a
    ``x.png [output]``); a UserError for anything outside them.  None outside ComfyUI."""
    fp = comfy_folder_paths()
    if fp is None:
        return None
    folder = Path(fp.get_input_directory())
    p = Path(fp.get_annotated_filepath(name)) if hasattr(fp, "get_annotated_filepath") \
        else folder / name
    if not p.is_absolute():
        p = folder / p
    sample = PACK_DIR / SAMPLES / Path(name).name
    if Path(name).as_posix().startswith(SAMPLES + "/") and not p.exists() and sample.is_file():
        return sample.resolve()  # the example workflows' sample pictures
    from . import runtime
    base = runtime.base_dir()  # a preset run inside ComfyUI: its default names a pack sample
    if base is not None and not p.exists() and not Path(name).is_absolute():
        near = (base / name).resolve()
        if inside(near, [PACK_DIR / SAMPLES]) and near.is_file():
            return near
    allowed = [folder]
    if name.rstrip().endswith(("[output]", "[temp]")):  # what ComfyUI's own LoadImage takes too
        allowed += [Path(get()) for get in (getattr(fp, "get_output_directory", None),
                                            getattr(fp, "get_temp_directory", None)) if get]
    if not inside(p, allowed):
        raise UserError(f"{name}: ComfyUI's LoadImage reads only from its input folder "
                        f"({folder}); upload the image or pick it from the list", field=field)
    return p.resolve()
