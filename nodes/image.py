"""Image nodes: load, save, resize, batch, grid, animation.

Images follow ComfyUI: float32 [B, H, W, C] in 0..1 (C = 3, sometimes 4).  Values are never
changed in place, because the executor caches them.

Saving.  Every saver writes under ``runtime.output_dir()`` only.  A ``prefix`` may name
subfolders ("a/b/name"; "/" and "\\" both separate) but never an absolute path or a ``..``
component.  Files are numbered like ComfyUI's (``name_00001_.png``: one more than the highest
number already there, so nothing is overwritten), encoded to hidden temp files first and then
published with a hard link (or a rename where links are not supported), so a failed run leaves no
half-written file.  A saver's ``paths`` output is the absolute paths of the written files, one per
line.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import runtime
from .declare import Input, Output, Param, node
from .errors import UserError, env_limit, excerpt, file_limit, over_limit  # noqa: F401
from .folders import PACK_DIR, input_files  # PACK_DIR: also named here
from .core.pixels import (MAX_IMAGE_PIXELS, MAX_TENSOR_BYTES, RESIZE_METHODS,  # noqa: F401
                          check_allocation, check_image, resize)

CATEGORY = "unCLIP/image"
SIZE_MAX = 16384


# --- limits on what a workflow can ask for --------------------------------------------------------

# --- conversions --------------------------------------------------------------------------------


def pil_to_tensor(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [1, H, W, 3], mask [1, H, W]) from a decoded Pillow image.

    The mask is 1 - alpha (ComfyUI's convention: transparent = the area to change), all zeros
    when the image has no alpha.  16-bit greyscale keeps its precision.
    """
    if img.mode.startswith("I;16"):
        grey = np.asarray(img, dtype=np.float32) / 65535.0
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        alpha = None
    elif "A" in img.getbands() or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    else:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        alpha = None
    image = torch.from_numpy(np.ascontiguousarray(rgb))[None]
    if alpha is None:
        mask = torch.zeros(image.shape[:3], dtype=torch.float32)
    else:
        mask = 1.0 - torch.from_numpy(np.ascontiguousarray(alpha))[None]
    return image, mask


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """One frame [H, W, C] as uint8, rounded (not truncated) so 8-bit values round-trip exactly."""
    return (frame.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def tensor_to_pil(frame: torch.Tensor) -> Image.Image:
    """One frame [H, W, C] (C = 1, 3 or 4) as a Pillow image (L, RGB or RGBA)."""
    arr = to_uint8(frame)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr)


# --- LoadImage ----------------------------------------------------------------------------------




def resolve_input_path(path: str) -> Path:
    """An absolute path.  A relative path is taken from the first of these folders where it
    names something: the current directory, the folder of the workflow file being run
    (``runtime.base_dir``, if any), the pack's folder; when none has it, the current
    directory's."""
    if not isinstance(path, str) or not path.strip():
        raise UserError("give the path of an image file", field="image")
    why = runtime.path_problem(path)
    if why:  # before any stat, which would raise instead
        raise UserError(f"the path {excerpt(path)} {why}", field="image")
    from .folders import comfy_input_path
    confined = comfy_input_path(path)  # inside ComfyUI: its input folder only
    if confined is not None:
        return confined
    p = Path(path).expanduser()
    if not p.is_absolute():
        folders = [f for f in (Path.cwd(), runtime.base_dir(), PACK_DIR) if f is not None]
        p = next((f / p for f in folders if (f / p).exists()), Path.cwd() / p)
    return p.resolve()


MAX_IMAGE_FILE_BYTES = 256 << 20
"""The largest image file LoadImage reads (it reads the file whole, to hash and decode it),
unless UNCLIP_MAX_IMAGE_FILE_BYTES says otherwise; the pixel limit applies after it."""


def _read_file(path: str) -> tuple[Path, bytes]:
    p = resolve_input_path(path)
    try:
        if not p.exists():
            raise UserError(f"no such file: {p}", field="image")
        if not p.is_file():
            raise UserError(f"not a file: {p}", field="image")
        size, limit = p.stat().st_size, env_limit("IMAGE_FILE_BYTES", MAX_IMAGE_FILE_BYTES)
        if size > limit:
            raise over_limit(f"{p} is {size:,} bytes, too big for an image file", size, limit,
                             "IMAGE_FILE_BYTES", field="image")
        data = runtime.read_bounded(p, limit)  # the size a file reports may be wrong (/proc)
        if len(data) > limit:
            raise over_limit(f"{p} holds more than {limit:,} bytes, too big for an image file",
                             limit + 1, limit, "IMAGE_FILE_BYTES", field="image")
        return p, data
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror or e}", field="image") from None


_PILLOW_CHECK = threading.Lock()


TEXT_MEMORY = 4
"""A PNG's text chunks (its metadata) may hold this many times UNCLIP_MAX_FILE_BYTES in all,
one chunk that limit (Pillow's own limits, 1 MB a chunk unpacked and 64 MB in all, refuse the
PNGs that SaveImage writes for a big workflow)."""


def text_limits() -> tuple[int, int]:
    """(bytes of one PNG text chunk, of all of them) that LoadImage accepts: never less than
    Pillow's own limits, more when UNCLIP_MAX_FILE_BYTES (a workflow's size) needs it."""
    limit = file_limit()
    return (max(limit, PngImagePlugin.MAX_TEXT_CHUNK),
            max(TEXT_MEMORY * limit, PngImagePlugin.MAX_TEXT_MEMORY))


@contextlib.contextmanager
def _our_size_check() -> Iterator[None]:
    """Pillow's own decompression-bomb check off (it would warn or refuse by its threshold,
    not ours): the caller has checked the size against our limit; and its limits on PNG text
    chunks ours (``text_limits``).  The lock keeps two of our loads from restoring each
    other's settings wrongly."""
    chunk, memory = text_limits()
    with _PILLOW_CHECK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        before = (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK,
                  PngImagePlugin.MAX_TEXT_MEMORY)
        Image.MAX_IMAGE_PIXELS = None
        PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY = chunk, memory
        try:
            yield
        finally:
            (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK,
             PngImagePlugin.MAX_TEXT_MEMORY) = before


IMAGE_KINDS = "PNG, JPEG, WebP, ..."


def _unreadable(p: Path, e: BaseException) -> UserError:
    """The message for a file Pillow cannot open or decode: it names the file, never the
    in-memory buffer Pillow was given (``<_io.BytesIO object at 0x...>``)."""
    text = str(e)
    if isinstance(e, UnidentifiedImageError) or "cannot identify image file" in text:
        return UserError(f"cannot read image {p}: not an image Pillow can read ({IMAGE_KINDS})",
                         field="image")
    if isinstance(e, ValueError) and ("text chunk" in text or "Too Large" in text
                                      or "too large" in text.lower()):
        chunk, memory = text_limits()
        return UserError(f"cannot read image {p}: its PNG text chunks (metadata) are larger than "
                         f"the limit ({chunk:,} bytes a chunk, {memory:,} in all); to allow "
                         "more, set UNCLIP_MAX_FILE_BYTES to a larger number", field="image")
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "it", text)
    if "truncated" in text.lower() or isinstance(e, (EOFError, SyntaxError)):
        return UserError(f"cannot read image {p}: the file is truncated or damaged ({text})",
                         field="image")
    return UserError(f"cannot read image {p}: {text or type(e).__name__}", field="image")


def _open_image(p: Path, data: bytes) -> Image.Image:
    """Open (header only); a UserError when Pillow does not recognise the file, or when the
    image has more pixels than the limit (checked before anything is decoded)."""
    limit = env_limit("IMAGE_PIXELS", MAX_IMAGE_PIXELS)
    try:
        with _our_size_check():
            img = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise _unreadable(p, e) from None
    pixels = img.width * img.height
    if pixels > limit:
        raise over_limit(f"{p} is too large to load: {img.width} x {img.height} = {pixels:,} "
                         "pixels", pixels, limit, "IMAGE_PIXELS", field="image")
    return img


def _load_fingerprint(params: dict) -> dict:
    """The file's identity: resolved path and content hash, so editing the file invalidates the
    cache.  Also catches a missing or unrecognisable file at validation time."""
    p, data = _read_file(params.get("image", ""))
    img = _open_image(p, data)
    if img.format == "PNG":  # a truncated PNG is found now, not when the run reaches it
        _check_png(p, data)
    return {"path": str(p), "sha256": hashlib.sha256(data).hexdigest()}


def _check_png(p: Path, data: bytes) -> None:
    """Pillow's verify() of a PNG: every chunk there and its checksum right, without
    decoding the pixels."""
    try:
        with _our_size_check():
            Image.open(io.BytesIO(data)).verify()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _unreadable(p, e) from None
    except Exception as e:  # noqa: BLE001 -- struct.error and the like: a damaged file
        raise _unreadable(p, SyntaxError(str(e) or type(e).__name__)) from None


@node("LoadImage", category=CATEGORY,
      description="Load a PNG, JPEG or WebP file as an image and a mask (1 - alpha).",
      params=[Param("image", "STRING", tooltip="Image file; relative paths start at the "
                                               "current directory, else at the workflow "
                                               "file's folder, else at the pack's folder "
                                               "(workflows/images/... are the samples). In "
                                               "ComfyUI: a file of its input folder (or "
                                               "upload one), or a sample.",
                    comfy_choices=input_files, comfy_upload=True)],
      outputs=[Output("image", "IMAGE", "[1, H, W, 3] in 0..1, EXIF orientation applied"),
               Output("mask", "MASK", "1 - alpha: transparent pixels are 1 (to change); "
                                      "all zeros without alpha")],
      fingerprint=_load_fingerprint, disk_cache=False, renamed={"path": "image"},
      display_name="unCLIP Load Image")
def load_image(image: str):
    """Only the first frame of an animated file is loaded.

    Its outputs are cached in memory only (``disk_cache=False``): the file is the source of
    truth (its hash is in the cache key) and decoding it again is cheap, while the decoded
    float tensors take 16 bytes a pixel (1.6 GB for a 10000 x 10000 image), so a disk entry
    would only be a second, far larger copy of the file."""
    p, data = _read_file(image)
    img = _open_image(p, data)
    try:
        with _our_size_check():
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            return pil_to_tensor(img)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise _unreadable(p, e) from None


# --- output files -------------------------------------------------------------------------------

_SEP = re.compile(r"[\\/]+")


def check_prefix(prefix: str, field: str = "filename_prefix") -> list[str]:
    """The parts of a saver prefix ("a/b/name" -> ["a", "b", "name"]), or a UserError when it
    could leave the output folder or names no file."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise UserError("give a file name prefix, e.g. 'unclip' or 'runs/cat'", field=field)
    if any(ord(c) < 32 for c in prefix):
        raise UserError("the prefix may not contain control characters (newlines, tabs)",
                        field=field)
    if prefix[0] in "/\\" or re.match(r"^[A-Za-z]:", prefix) or prefix.startswith("~"):
        raise UserError(f"{excerpt(prefix)} is absolute; give a path relative to the output folder",
                        field=field)
    parts = [s for s in _SEP.split(prefix) if s not in ("", ".")]
    if ".." in parts:
        raise UserError(f"{excerpt(prefix)} contains '..'; files are written inside the output "
                        f"folder only", field=field)
    if _SEP.split(prefix)[-1] in ("", "."):
        raise UserError(f"{excerpt(prefix)} names a folder; add a file name after the last '/'",
                        field=field)
    return parts


def _check_prefix_param(params: dict) -> None:
    if "filename_prefix" in params:  # absent = the (valid) default
        check_prefix(expand_prefix(params["filename_prefix"]), "filename_prefix")


_DATE_PART = re.compile(r"yyyy|yy|MM|dd|hh|mm|ss")
_DATE_CODES = {"yyyy": "%Y", "yy": "%y", "MM": "%m", "dd": "%d", "hh": "%H", "mm": "%M",
               "ss": "%S"}


def expand_prefix(prefix: str, now: float | None = None) -> str:
    """``%date:yyyy-MM-dd%`` (and ``%date%``) in a file name prefix as today's date, the way
    ComfyUI's front end fills them in before a prompt reaches a saver; the codes are yyyy, yy,
    MM, dd, hh, mm, ss.  Anything else between % signs is left as written."""
    if "%date" not in prefix:
        return prefix
    import time
    t = time.localtime(now)

    def fill(m: re.Match) -> str:
        fmt = m.group(1) or "yyyy-MM-dd"
        return _DATE_PART.sub(lambda d: time.strftime(_DATE_CODES[d.group(0)], t), fmt)
    return re.sub(r"%date(?::([^%]*))?%", fill, prefix)


# --- where outputs go: checked before a run, so that no work is lost on a bad place ------------

NUMBER_ROOM = len("_00000_.webp")
"""What a saver adds to the last part of its prefix (the number and the longest extension)."""


def _limits(existing: Path) -> tuple[int, int]:
    """(longest name, longest path) in bytes on the file system holding ``existing``."""
    try:
        return os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # not a POSIX system, or no answer
        return 255, 4096


def _too_long(name: str, name_max: int) -> str | None:
    n = len(os.fsencode(name))
    if n <= name_max:
        return None
    shown = name if len(name) <= 24 else name[:20] + "..."
    return f"is too long: the name '{shown}' has {n} bytes, more than the file system " \
           f"allows ({name_max})"


def _not_writable(folder: Path) -> str | None:
    if os.access(folder, os.W_OK | os.X_OK):
        return _refuses_files(folder)  # root passes access(); some file systems refuse it
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "is on a read-only file system"
    except (OSError, AttributeError):
        pass
    return "is read-only (no permission to write in it)"


def _refuses_files(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` although its permissions allow it (/sys, /proc,
    a read-only mount seen by root), found by making and removing one; None when it takes it."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".unclip-probe-")
    except OSError as e:
        return f"does not take new files ({e.strerror or e})"
    os.close(fd)
    os.unlink(tmp)
    return None


def folder_problem(folder: Path) -> str | None:
    """Why no file can be written in ``folder``, or None.  A missing folder is fine when it
    can be created (savers create it when they write); nothing is created here.  The reason
    completes a sentence about the folder: 'is a file, not a folder'."""
    folder = Path(os.path.abspath(folder))
    current = Path(folder.anchor)
    name_max, path_max = _limits(current)
    n = len(os.fsencode(str(folder)))
    if n >= path_max:
        return f"is too long: {n} bytes, more than the file system allows ({path_max - 1})"
    parts = folder.parts[1:]
    for i, part in enumerate(parts):
        why = _too_long(part, name_max)
        if why:
            return why
        step = current / part
        try:
            exists, is_dir = os.path.lexists(step), step.is_dir()
        except OSError as e:
            return f"cannot be looked at: {step}: {e.strerror or e}"
        if not exists:  # the rest is to be created, here
            for rest in parts[i + 1:]:
                why = _too_long(rest, name_max)
                if why:
                    return why
            why = _not_writable(current)
            return f"does not exist and cannot be created: {current} {why}" if why else None
        if not is_dir:
            if step.is_symlink() and not step.exists():
                return f"goes through a broken link: {step}"
            if step == folder:
                return "is a file, not a folder"
            return f"crosses a file: {step} is a file, not a folder"
        current = step
        name_max, _ = _limits(current)
    return _not_writable(folder)


def output_place_problem(root: Path, prefix: str) -> str | None:
    """Why a saver with ``prefix`` could not write under the output folder ``root``, or None;
    the reason names the folder (or the file name) concerned.  Creates nothing."""
    parts = check_prefix(expand_prefix(prefix))
    root = Path(os.path.abspath(root))
    folder = root.joinpath(*parts[:-1])
    why = folder_problem(folder)
    if why:
        return f"folder {folder} {why}"
    existing = folder
    while not existing.exists():
        existing = existing.parent
    inside = existing == root or root in existing.parents  # else nothing of it exists yet
    if inside and not existing.resolve().is_relative_to(root.resolve()):
        return f"folder {folder} leads outside the output folder {root.resolve()} (a link)"
    name = f"{parts[-1]}_00001_.png"
    n, name_max = len(os.fsencode(parts[-1])) + NUMBER_ROOM, _limits(existing)[0]
    if n > name_max:
        return f"file name '{name[:20]}...' is too long: {n} bytes with the number, more " \
               f"than the file system allows ({name_max})"
    return None


def _output_folder(prefix: str) -> tuple[Path, str, str]:
    """(folder, file stem, subfolder relative to the output dir) for a checked prefix; the
    folder is created."""
    parts = check_prefix(prefix)
    root = runtime.output_dir()
    if not root.is_absolute():
        root = Path.cwd() / root
    folder = root.joinpath(*parts[:-1])
    real_root = root.resolve()
    if not folder.resolve().is_relative_to(real_root):  # a symlinked subfolder
        raise UserError(f"{excerpt(prefix)} leads outside the output folder {real_root}",
                        field="filename_prefix")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder {folder}: {e.strerror or e}",
                        field="filename_prefix") from None
    return folder, parts[-1], "/".join(parts[:-1])


def _next_number(folder: Path, stem: str) -> int:
    """One more than the highest number used by ``stem_NNNNN_.*`` files in ``folder``."""
    pat = re.compile(re.escape(stem) + r"_(\d+)_\.[A-Za-z0-9]+")
    used = [int(m.group(1)) for name in os.listdir(folder) if (m := pat.fullmatch(name))]
    return max(used, default=0) + 1


def _publish(tmp: Path, target: Path) -> bool:
    """Give the finished temp file its final name unless that name is taken."""
    try:
        os.link(tmp, target)  # fails if the target exists: never overwrites
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here (some network or FAT filesystems)
        if target.exists():
            return False
        os.replace(tmp, target)
        return True


def write_outputs(prefix: str, ext: str, writers: list[Callable[[io.BufferedWriter], None]],
                  ui_key: str = "images") -> list[Path]:
    """Write one numbered file per writer under the output folder; return their paths.

    All files are encoded to temp files first, then published; on any failure the temp files
    are removed.  Each written file is listed in ``runtime.host().ui[ui_key]`` for ComfyUI.
    An OSError (disk full, permissions taken away) is a UserError naming the file.
    """
    folder, stem, subfolder = _output_folder(expand_prefix(prefix))
    temps: list[Path] = []
    written: list[Path] = []
    first = _next_number(folder, stem)
    target = folder / f"{stem}_{first:05d}_.{ext}"
    try:
        for i, write in enumerate(writers):
            target = folder / f"{stem}_{first + i:05d}_.{ext}"  # its name, unless taken by then
            fd, name = tempfile.mkstemp(dir=folder, prefix=".unclip-", suffix=".tmp")
            temps.append(Path(name))
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.chmod(name, runtime.normal_mode())  # not mkstemp's private 0600
        number = _next_number(folder, stem)
        for tmp in temps:
            while True:
                target = folder / f"{stem}_{number:05d}_.{ext}"
                number += 1
                if _publish(tmp, target):
                    written.append(target)
                    break
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}", field="filename_prefix") from None
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    ui = runtime.host().ui.setdefault(ui_key, [])
    for path in written:
        ui.append({"filename": path.name, "subfolder": subfolder, "type": "output"})
    return [p.resolve() for p in written]


_FRAMES = Input("frames", "STRING", optional=True,
                 tooltip="per-image values (e.g. a path's thetas), stored in the metadata as "
                         "'frames'")


def _metadata_text(frames: str | None = None) -> dict[str, str]:
    """The host's metadata as strings, plus ``frames`` (per-image values such as a path's
    thetas) when given.  Both hosts give ComfyUI's "prompt" (API JSON) and
    "workflow" (UI JSON), so ComfyUI opens the graph of an image dropped on it; the executor adds
    "unclip_workflow" (the workflow text) and "unclip_inputs" (its input values), from which
    ``unclip run IMAGE.png`` runs it again."""
    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True)
            for k, v in runtime.metadata().items()}
    if frames is not None:
        meta["frames"] = str(frames)
    return meta


# --- SaveImage ----------------------------------------------------------------------------------

_PREFIX_TIP = ("File name prefix inside the output folder; may contain subfolders ('runs/cat') "
               "and %date:yyyy-MM-dd%; files are numbered prefix_00001_.png, "
               "prefix_00002_.png, ...")


@node("SaveImage", category=CATEGORY,
      description="Save each image of a batch as a numbered PNG in the output folder, with the "
                  "workflow in its text chunks.",
      inputs=[Input("images", "IMAGE"), _FRAMES],
      params=[Param("filename_prefix", "STRING", default="unclip", tooltip=_PREFIX_TIP)],
      outputs=[Output("paths", "STRING", "absolute paths of the written files, one per line")],
      output_node=True, cacheable=False, check=_check_prefix_param,
      prefix="filename_prefix", files="paths", renamed={"prefix": "filename_prefix"},
      display_name="unCLIP Save Image")
def save_image(images: torch.Tensor, filename_prefix: str = "unclip", frames: str | None = None):
    check_image(images, "images")
    info = PngImagePlugin.PngInfo()
    for key, value in _metadata_text(frames).items():
        info.add_text(key, value)  # Pillow picks iTXt by itself for non-Latin-1 text

    def writer(frame):
        return lambda f: tensor_to_pil(frame).save(f, format="PNG", pnginfo=info, compress_level=4)

    paths = write_outputs(filename_prefix, "png", [writer(frame) for frame in images])
    return "\n".join(str(p) for p in paths)


# --- SaveAnimation ------------------------------------------------------------------------------


@node("SaveAnimation", category=CATEGORY,
      description="Save the frames of a batch as one animated GIF or WebP in the output folder.",
      inputs=[Input("images", "IMAGE", tooltip="the frames, in order"), _FRAMES],
      params=[Param("filename_prefix", "STRING", default="unclip_anim", tooltip=_PREFIX_TIP),
              Param("format", "COMBO", default="webp", choices=("gif", "webp"),
                    tooltip="webp is lossless; gif has 256 colours and 10 ms time steps"),
              Param("fps", "FLOAT", default=8.0, min=0.1, max=100.0, step=0.1,
                    tooltip="Playback speed in frames per second; each frame shows for 1000/fps "
                            "ms, rounded (gif to 10 ms steps, so its speed is approximate)."),
              Param("loop", "BOOLEAN", default=True, tooltip="repeat forever; off = play once")],
      outputs=[Output("paths", "STRING", "absolute path of the written file")],
      output_node=True, cacheable=False, check=_check_prefix_param,
      prefix="filename_prefix", files="paths", renamed={"prefix": "filename_prefix"},
      display_name="unCLIP Save Animation")
def save_animation(images: torch.Tensor, filename_prefix: str = "unclip_anim",
                   format: str = "webp",
                   fps: float = 8.0, loop: bool = True, frames: str | None = None):
    """The host metadata (e.g. "workflow", or per-frame values under "frames") is embedded as
    one JSON object: the GIF comment, or the WebP EXIF ImageDescription tag."""
    check_image(images, "images")
    meta = json.dumps(_metadata_text(frames), sort_keys=True)  # ASCII: safe in both containers
    pictures = [tensor_to_pil(f[..., :3]) for f in images]
    duration = max(1, round(1000.0 / fps))
    opts: dict = {"save_all": True, "append_images": pictures[1:], "duration": duration}
    if format == "gif":
        opts.update(format="GIF", comment=meta.encode("ascii"))
        if loop:
            opts["loop"] = 0  # without a loop extension a GIF plays once
    else:
        exif = Image.Exif()
        exif[0x010E] = meta  # ImageDescription
        opts.update(format="WEBP", lossless=True, loop=0 if loop else 1, exif=exif)
    paths = write_outputs(filename_prefix, format, [lambda f: pictures[0].save(f, **opts)])
    runtime.host().ui["animated"] = (True,)
    return "\n".join(str(p) for p in paths)


# --- ResizeImage --------------------------------------------------------------------------------
#
# ComfyUI has ImageScale and ImageBatch: ours compute what those compute (same sampling, same
# center crop) and are not registered inside ComfyUI; exports write ImageScale, and a chain of
# ImageBatch for our four inputs (graph/comfy_map.py, docs/comfyui_core_nodes.md).

UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
"""ComfyUI ImageScale's methods, in its order."""
OLD_METHODS = {"nearest": "nearest-exact"}
OLD_CROPS = {"none": "disabled"}
"""What ResizeImage's ``method`` and ``crop`` were called before they took ImageScale's names:
still accepted, and exported as ImageScale's."""


def target_size(w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """(width, height); a 0 follows the aspect ratio of the other side (both 0: the size as
    it is)."""
    if width <= 0 and height <= 0:
        return w, h
    if width <= 0:
        width = max(1, round(w * height / h))
    if height <= 0:
        height = max(1, round(h * width / w))
    return width, height


def center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[B, C, h, w] cut to the aspect ratio of width x height, the same number of pixels off
    each side, as ComfyUI's ``common_upscale`` cuts (the margin is rounded from the exact
    aspect ratios, in that function's arithmetic, so both keep the same pixels)."""
    h, w = x.shape[-2:]
    have, want = w / h, width / height
    left = top = 0
    if have > want:
        left = round((w - w * (want / have)) / 2)
    elif have < want:
        top = round((h - h * (have / want)) / 2)
    return x[..., top:h - top, left:w - left]


def scale(image: torch.Tensor, width: int, height: int, method: str = "bicubic",
          crop: str = "disabled") -> torch.Tensor:
    """IMAGE [B, H, W, C] at width x height as ComfyUI's ``common_upscale`` makes it: torch's
    interpolation as it is (no antialiasing, values not clamped: bicubic may overshoot 0..1), and
    lanczos through 8-bit Pillow images (the values cut to 0..255 and truncated)."""
    method, crop = OLD_METHODS.get(method, method), OLD_CROPS.get(crop, crop)
    if method not in UPSCALE_METHODS:
        raise UserError(f"unknown method {excerpt(method)}; one of {', '.join(UPSCALE_METHODS)}",
                        field="upscale_method")
    b, _, _, c = image.shape
    check_allocation("the resized image", b, height, width, c, field="width")
    x = image.float().movedim(-1, 1)
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "lanczos":
        frames = []
        for frame in x:
            eight = (frame.movedim(0, -1) * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()
            pic = Image.fromarray(eight[..., 0] if c == 1 else eight)
            pic = pic.resize((width, height), resample=Image.Resampling.LANCZOS)
            arr = np.asarray(pic).astype(np.float32) / 255.0
            frames.append(torch.from_numpy(arr.reshape(height, width, c)).movedim(-1, 0))
        out = torch.stack(frames).to(x.device)
    else:
        out = torch.nn.functional.interpolate(x, size=(height, width), mode=method)
    return out.movedim(1, -1).contiguous()


@node("ResizeImage", category=CATEGORY,
      description="Resize images to a given size (nearest, bilinear, area, bicubic or lanczos), "
                  "as ComfyUI's ImageScale.",
      inputs=[Input("image", "IMAGE")],
      params=[Param("upscale_method", "COMBO", default="bicubic",
                    choices=(*UPSCALE_METHODS, *OLD_METHODS),
                    tooltip="as ComfyUI's ImageScale ('nearest' is nearest-exact); area is best "
                            "for downscaling"),
              Param("width", "INT", default=512, min=0, max=SIZE_MAX,
                    tooltip="0 = follow the height, keeping the aspect ratio"),
              Param("height", "INT", default=512, min=0, max=SIZE_MAX,
                    tooltip="0 = follow the width, keeping the aspect ratio (both 0: unchanged)"),
              Param("crop", "COMBO", default="disabled", choices=("disabled", "center",
                                                                  *OLD_CROPS),
                    tooltip="center: cut the middle to the new aspect ratio instead of "
                            "stretching ('none' is disabled)")],
      outputs=[Output("image", "IMAGE")], renamed={"method": "upscale_method"},
      replaced_by="ImageScale", old_widget_order=("width", "height", "upscale_method", "crop"))
def resize_image(image: torch.Tensor, upscale_method: str = "bicubic", width: int = 512,
                 height: int = 512, crop: str = "disabled"):
    """ComfyUI's ImageScale, same widgets (``method`` was renamed ``upscale_method``).  This
    changed our resize: bicubic and bilinear are no longer antialiased nor clamped to 0..1,
    lanczos goes through 8 bits, the center crop rounds as ComfyUI's, and width = height = 0
    gives the image unchanged instead of an error.  The default method stays bicubic (ImageScale
    starts at nearest-exact); exports write it."""
    check_image(image)
    _, h, w, _ = image.shape
    if width <= 0 and height <= 0:
        return image
    return scale(image, *target_size(w, h, width, height), upscale_method, crop)


# --- ImageBatch ---------------------------------------------------------------------------------


@node("ImageBatch", category=CATEGORY,
      description="Join up to four image batches into one; later ones are resized (bilinear, "
                  "center crop) to the first one's size, as ComfyUI's ImageBatch does.",
      inputs=[Input("image_a", "IMAGE"), Input("image_b", "IMAGE", optional=True),
              Input("image_c", "IMAGE", optional=True), Input("image_d", "IMAGE", optional=True)],
      outputs=[Output("image", "IMAGE")], replaced_by="ImageBatch")
def image_batch(image_a: torch.Tensor, image_b=None, image_c=None, image_d=None):
    """ComfyUI's ImageBatch takes two images; ours is a chain of them (a with b, that with c,
    then d), and exports as that chain.  A later batch of another size is resized as ComfyUI's
    does: bilinear without antialiasing, center crop (before, ours was antialiased bicubic).  A
    differing channel count (RGB vs RGBA) is a UserError (ComfyUI's fails there too)."""
    check_image(image_a, "image_a")
    _, h, w, c = image_a.shape
    parts = [image_a.float()]
    for name, img in (("image_b", image_b), ("image_c", image_c), ("image_d", image_d)):
        if img is None:
            continue
        check_image(img, name)
        if img.shape[-1] != c:
            raise UserError(f"{name} has {img.shape[-1]} channels but image_a has {c}", field=name)
        parts.append(img.float() if img.shape[1:3] == (h, w) else
                     scale(img, w, h, "bilinear", "center"))
    return torch.cat(parts) if len(parts) > 1 else image_a


# --- ImageGrid ----------------------------------------------------------------------------------


def grid(images: torch.Tensor, columns: int = 0, padding: int = 0,
         background: float = 1.0) -> torch.Tensor:
    """All frames of a batch on one sheet [1, H', W', C], row by row.

    columns=0 picks ceil(sqrt(B)); padding is the gap between cells (not around the sheet).
    """
    b, h, w, c = images.shape
    cols = columns if columns > 0 else math.ceil(math.sqrt(b))
    cols = min(cols, b)
    rows = math.ceil(b / cols)
    check_allocation("the grid", 1, rows * h + (rows - 1) * padding,
                     cols * w + (cols - 1) * padding, c, field="columns")
    sheet = torch.full((1, rows * h + (rows - 1) * padding, cols * w + (cols - 1) * padding, c),
                       float(background), dtype=torch.float32)
    for i, frame in enumerate(images):
        y, x = (i // cols) * (h + padding), (i % cols) * (w + padding)
        sheet[0, y:y + h, x:x + w] = frame
    return sheet


@node("ImageGrid", category=CATEGORY,
      description="Lay out a batch as one contact sheet image.",
      inputs=[Input("images", "IMAGE")],
      params=[Param("columns", "INT", default=0, min=0, max=1024,
                    tooltip="0 = about square (ceil of the square root of the batch size)"),
              Param("padding", "INT", default=0, min=0, max=1024, tooltip="gap between cells"),
              Param("background", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.05,
                    tooltip="grey level of gaps and empty cells")],
      outputs=[Output("image", "IMAGE", "[1, H', W', C]")])
def image_grid(images: torch.Tensor, columns: int = 0, padding: int = 0, background: float = 1.0):
    check_image(images, "images")
    return grid(images, columns, padding, background)


# --- SplitImageGrid -----------------------------------------------------------------------------


def _cell(side: int, cells: int, padding: int, what: str, field: str) -> int:
    """The size of one cell along a side of ``side`` px cut into ``cells`` with gaps."""
    inner = side - (cells - 1) * padding
    if inner < cells or inner % cells:
        raise UserError(f"a sheet {side} px {what} does not split into {cells} cells with "
                        f"{padding} px gaps: ({side} - {cells - 1} x {padding}) / {cells} is "
                        f"not a whole number of pixels", field=field)
    return inner // cells


def split_grid(sheets: torch.Tensor, columns: int, rows: int, padding: int = 0,
               count: int = 0) -> torch.Tensor:
    """The cells of each sheet, row by row, as one batch: the inverse of ``grid``.

    ``count`` > 0 keeps only the first ``count`` cells of each sheet (``grid`` fills the last
    row with empty cells).
    """
    _, h, w, _ = sheets.shape
    cw = _cell(w, columns, padding, "wide", "columns")
    ch = _cell(h, rows, padding, "high", "rows")
    cells = [sheet[r * (ch + padding):r * (ch + padding) + ch,
                   c * (cw + padding):c * (cw + padding) + cw]
             for sheet in sheets for r in range(rows) for c in range(columns)]
    per = rows * columns
    if count:
        cells = [cell for i, cell in enumerate(cells) if i % per < count]
    return torch.stack(cells).contiguous()


def _check_split(params: dict) -> None:
    per = params.get("columns", 2) * params.get("rows", 2)
    if params.get("count", 0) > per:
        raise UserError(f"count {params['count']} is more than the sheet's {per} cells "
                        f"(columns x rows)", field="count")


@node("SplitImageGrid", category=CATEGORY,
      description="Cut a contact sheet into its cells, row by row (the inverse of ImageGrid): "
                  "one image file holding many pictures becomes an image batch.",
      inputs=[Input("image", "IMAGE", tooltip="the sheet; every image of a batch is cut")],
      params=[Param("columns", "INT", default=2, min=1, max=1024, tooltip="cells per row"),
              Param("rows", "INT", default=2, min=1, max=1024, tooltip="rows of cells"),
              Param("padding", "INT", default=0, min=0, max=1024,
                    tooltip="gap between cells, in pixels (ImageGrid's padding)"),
              Param("count", "INT", default=0, min=0, max=1024 * 1024,
                    tooltip="keep the first count cells of each sheet (0 = all), e.g. to drop "
                            "the empty cells at the end of an ImageGrid sheet")],
      outputs=[Output("images", "IMAGE", "[sheets x cells, h, w, C]")], check=_check_split)
def split_image_grid(image: torch.Tensor, columns: int = 2, rows: int = 2, padding: int = 0,
                     count: int = 0):
    check_image(image)
    _check_split({"columns": columns, "rows": rows, "count": count})
    return split_grid(image.float(), columns, rows, padding, count)
