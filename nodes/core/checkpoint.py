"""What every model family shares: finding a checkpoint on disk, its files' identity, reading one
component, the process-wide model cache, and the handles that are the same in every family.

A family (``families/<name>.py``) says which components a layout has and where; this module
knows no family.  A component has a *logical* name (``prior``, ``decoder``,
``decoder_scheduler``, ...) that the stage code uses, and a folder on disk that the family chose
for it.  File identities are keyed by the logical name, so two folders that both hold a
``scheduler/`` never collide.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import UserError
from ..types import socket_type

from ..folders import POCKET  # noqa: F401 -- where loaders and tests look for it

# Model handles travel along links like any value; they have no codec, so never reach the disk.
CLIP_TEXT = socket_type("UNCLIP_CLIP_TEXT", "CLIP text encoder + tokenizer (model handle)")
CLIP_VISION = socket_type("UNCLIP_CLIP_VISION", "CLIP image encoder + its preprocessing (model handle)")
PRIOR = socket_type("UNCLIP_PRIOR", "unCLIP prior + its scheduler (model handle)")
DECODER = socket_type("UNCLIP_DECODER", "unCLIP decoder + its conditioning and scheduler (model "
                      "handle)")
UPSAMPLER = socket_type("UNCLIP_UPSAMPLER", "unCLIP super-resolution UNets + scheduler (model handle)")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def resolve_path(path: str) -> Path:
    """``pocket`` is the bundled model; a directory (``~`` expanded); or, when no such
    directory exists, the name of a checkpoint folder in the model folders (``UNCLIP_MODELS``
    headless, ComfyUI's ``models/unclip`` inside it: see folders.py)."""
    if path.strip() == "pocket":
        return POCKET
    p = Path(path).expanduser()
    if not p.exists() and not p.is_absolute():
        from ..folders import find_model
        found = find_model(path)
        if found is not None:
            return found.resolve()
    return p.resolve()


def err(msg: str, field: str = "path") -> UserError:
    return UserError(msg, field=field)


def read_json(p: Path, field: str = "path") -> dict:
    """A component's (or the checkpoint's) JSON config: an object whose values that this
    pack's own checks and handles read have the types they need (``CONFIG_TYPES``), else a
    UserError naming the file and the key."""
    from ..errors import file_limit, over_limit, parse_json
    limit = file_limit()
    try:
        with open(p, "rb") as f:
            raw = f.read(limit + 1)
        if len(raw) > limit:
            raise over_limit(f"{p} has more than {limit:,} bytes", len(raw), limit,
                             "FILE_BYTES", field=field)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise err(f"cannot read {p}: {e}", field) from None
    try:
        data = parse_json(text, None, "JSON")
    except UserError as e:
        where = f" (line {e.line}, column {e.column})" if e.line is not None else ""
        raise err(f"cannot read {p}: {e.message}{where}", field) from None
    if not isinstance(data, dict):
        raise err(f"{p} does not hold a JSON object (it holds {_json_kind(data)})", field)
    for scope, cfg in [("", data)] + [(f"{k}.", v) for k, v in data.items()
                                      if k in ("text_config", "vision_config")]:
        if not isinstance(cfg, dict):
            raise err(f"{p}: '{scope[:-1]}' must be an object, got {_json_kind(cfg)}", field)
        for key, (what, ok, *positive) in CONFIG_TYPES.items():
            if key in cfg and not ok(cfg[key]):
                raise err(f"{p}: '{scope}{key}' must be {what}, got "
                          f"{_json_value(cfg[key])}", field)
            if key in cfg and positive and not positive[0](cfg[key]):
                raise err(f"{p}: '{scope}{key}' must be at least 1, got "
                          f"{_json_value(cfg[key])}", field)
    return data


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a text", bool: "true or false",
            type(None): "null"}.get(type(value), "a number")


def _json_value(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:36] + " ..."


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _wholes(v) -> bool:
    return isinstance(v, list) and bool(v) and all(_whole(x) for x in v)


def _pos(v) -> bool:
    return _whole(v) and v >= 1


def _poss(v) -> bool:
    return isinstance(v, list) and bool(v) and all(_pos(x) for x in v)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_of(*choices):
    shown = ", ".join(repr(c) for c in choices if c is not None)
    return (f"one of {shown}" + (" or null" if None in choices else ""),
            lambda v: v in choices)


MAX_TRAIN_TIMESTEPS = 100_000
"""More training timesteps than any scheduler uses: past it a config's num_train_timesteps
would only make the schedulers allocate for minutes (1e9 of them) before anything runs."""

_TYPES = {
    "whole": ("a whole number", _whole),
    "whole?": ("a whole number or null", lambda v: v is None or _whole(v)),
    "pos": ("a whole number", _whole, _pos),
    "pos?": ("a whole number or null", lambda v: v is None or _whole(v),
             lambda v: v is None or _pos(v)),
    "poss": ("a list of whole numbers", _wholes, _poss),
    "pos|poss?": ("a whole number, a list of them or null",
                  lambda v: v is None or _whole(v) or _wholes(v),
                  lambda v: v is None or _pos(v) or _poss(v)),
    "number?": ("a number or null", lambda v: v is None or _number(v)),
    "timesteps?": (f"a whole number from 1 to {MAX_TRAIN_TIMESTEPS:,}, or null",
                   lambda v: v is None or (_pos(v) and v <= MAX_TRAIN_TIMESTEPS)),
    "beta": ("a number between 0 and 1", lambda v: _number(v) and 0 < v < 1),
    "rgb": ("a list of 3 numbers", lambda v: isinstance(v, list) and len(v) in (1, 3)
            and all(map(_number, v))),
    "size": ("a whole number or an object of them (height, width)",
             lambda v: _whole(v) or (isinstance(v, dict) and all(map(_whole, v.values()))),
             lambda v: _pos(v) or (isinstance(v, dict) and bool(v)
                                   and all(map(_pos, v.values())))),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "text?": ("a text or null", lambda v: v is None or isinstance(v, str)),
    "beta_schedule": _one_of("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"),
    "variance_type": _one_of("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log",
                             "learned", "learned_range", None),
    "prediction_type": _one_of("epsilon", "sample", "v_prediction"),
    "timestep_spacing": _one_of("linspace", "leading", "trailing"),
}
CONFIG_TYPES = {key: _TYPES[kind] for key, kind in {
    "in_channels": "pos", "out_channels": "pos", "latent_channels": "pos",
    "block_out_channels": "poss", "sample_size": "pos|poss?",
    "cross_attention_dim": "pos|poss?", "embedding_dim": "pos",
    "embedding_proj_dim": "pos?", "clip_embed_dim": "pos?", "num_embeddings": "pos",
    "projection_dim": "pos", "hidden_size": "pos", "max_position_embeddings": "pos",
    "image_size": "pos", "clip_embeddings_dim": "pos", "time_embed_dim": "pos?",
    "time_embedding_dim": "pos?", "encoder_hid_dim": "pos?", "model_max_length": "number?",
    "num_train_timesteps": "timesteps?", "crop_size": "size", "do_center_crop": "bool",
    "class_embed_type": "text?", "variance_type": "variance_type",
    "addition_embed_type": "text?", "encoder_hid_dim_type": "text?",
    "encoder_hid_proj_type": "text?", "beta_schedule": "beta_schedule",
    "prediction_type": "prediction_type", "timestep_spacing": "timestep_spacing",
    "beta_start": "beta", "beta_end": "beta", "image_mean": "rgb", "image_std": "rgb",
    "num_attention_heads": "pos|poss?", "num_hidden_layers": "pos", "vocab_size": "pos",
}.items()}
"""The config values that this pack's fit checks and handles compute with (before any model
is built), and the types they must have; everything else is the model classes' to check
when they are built (``load_part``)."""


def tokenizer_problems(folder: Path, field: str = "path") -> list[UserError]:
    """What is wrong with a CLIP tokenizer's vocabulary, before transformers reads it (an empty
    or ill-typed vocab.json makes it fail deep inside, or tokenize every prompt to nothing)."""
    vocab = folder / "vocab.json"
    if not vocab.is_file():
        return []
    from ..errors import file_limit, parse_json
    try:
        with open(vocab, "rb") as f:
            raw = f.read(file_limit() + 1)
        data = parse_json(raw.decode("utf-8"), None, "JSON")
    except (OSError, UnicodeDecodeError, UserError) as e:
        return [err(f"cannot read {vocab}: {getattr(e, 'message', None) or e}", field)]
    if not isinstance(data, dict) or not data:
        return [err(f"{vocab}: the vocabulary must be a non-empty object of token -> id, got "
                    f"{_json_kind(data) if data else 'an empty one'}", field)]
    if not all(_whole(v) for v in data.values()):
        return [err(f"{vocab}: every token's id must be a whole number", field)]
    return []


def mismatch_collector():
    """(problems, mismatch): ``mismatch(a, av, b, bv, why)`` records that two components do not
    fit together when both values are known and differ; the families' fit checks use it."""
    out: list[UserError] = []

    def mismatch(a: str, av, b: str, bv, why: str = "") -> None:
        if av is not None and bv is not None and av != bv:
            out.append(err(f"components do not fit together: {a} {av} != {b} {bv}"
                           + (f" ({why})" if why else "")))
    return out, mismatch


def hash_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:32]


def _hash_stream(p: Path) -> str:
    """``hash_file`` for files too big to read whole (weights)."""
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()[:32]


RECENT_SECONDS = (2.0, 0.1)
"""How close to now an mtime is "recent": on file systems with whole-second mtimes (FAT, HFS+,
ext3, some network shares) a second write in the same second or two keeps the mtime; with finer
stamps the clock still ticks in steps of some milliseconds."""
_SEEN: dict[str, tuple[tuple, str | None, bool]] = {}
"""path -> ((size, mtime_ns, inode, ctime_ns) last seen, its content hash or None, whether it
was not recent then)"""


def weight_identity(f: Path) -> list:
    """A weights file's identity: ``[size, mtime_ns]``, cheap and enough while those are
    trusted; ``[size, mtime_ns, content hash]`` when in doubt, that is when

    - the mtime is recent (a rewrite within the same clock step would not change it), or
    - this process saw the file with the same size and mtime but another inode or ctime: it
      was replaced or rewritten, and its mtime put back (``cp -p``, ``rsync -t``, ``os.utime``).

    Once hashed, a file keeps its hash in its identity for as long as it stays as it was then
    (so keys do not flip back); a recent file is hashed again on every call."""
    st = f.stat()
    stamp = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
    coarse = st.st_mtime_ns % 1_000_000_000 == 0
    window = RECENT_SECONDS[0] if coarse else RECENT_SECONDS[1]
    recent = abs(time.time_ns() - st.st_mtime_ns) < window * 1e9
    path = os.path.abspath(f)
    seen = _SEEN.get(path)
    if seen is not None and seen[0] == stamp and seen[2]:
        digest = seen[1]  # as it was when last looked at, and that was not while recent
    else:
        replaced = seen is not None and seen[0][:2] == stamp[:2] and seen[0] != stamp
        hashed = seen is not None and seen[0] == stamp  # hashed while recent: once more now
        digest = _hash_stream(f) if recent or replaced or hashed else None
        _SEEN[path] = (stamp, digest, not recent)
    return [st.st_size, st.st_mtime_ns] + ([digest] if digest else [])


def existing_dir(path: str, field: str = "path") -> Path:
    """The directory ``path`` names, or a UserError saying why it is not one."""
    if not isinstance(path, str) or not path.strip():
        raise err("give the checkpoint directory (or 'pocket' for the bundled model)", field)
    root = resolve_path(path)
    if not root.exists():
        hint = (" (the bundled pocket model is missing from this installation)"
                if root == POCKET else "")
        raise err(f"model directory {root} does not exist{hint}", field)
    if not root.is_dir():
        raise err(f"{root} is not a directory; give the checkpoint's root directory "
                  f"(the one holding model_index.json)", field)
    from ..folders import confine_model
    confine_model(root, field)
    return root


def pipeline_class(root: Path, field: str = "path") -> str | None:
    """``_class_name`` of ``root/model_index.json``: the only thing a family is detected by
    (never the folder's name).  None when there is no model_index.json."""
    index = root / "model_index.json"
    if not index.is_file():
        return None
    name = read_json(index, field).get("_class_name")
    return name if isinstance(name, str) else None


def scan_weights(folder: Path, key: str, files: dict, *, weighted: bool,
                 allow_pickle: bool) -> list[UserError]:
    """Record the identity of ``folder``'s files under ``key/`` in ``files`` (configs by content,
    weights by size and mtime, and content when those are in doubt: ``weight_identity``) and
    return what is wrong with its weights."""
    weights = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        rel = f"{key}/{f.relative_to(folder).as_posix()}"
        if f.suffix in (".json", ".txt"):
            files[rel] = hash_file(f)
        elif f.suffix == ".safetensors" or f.suffix in PICKLE_SUFFIXES:
            files[rel] = weight_identity(f)
            weights.append(f)
    if not weighted:
        return []
    safe = [f for f in weights if f.suffix == ".safetensors"]
    pickled = [f for f in weights if f.suffix in PICKLE_SUFFIXES]
    if not safe and not pickled:
        return [err(f"{folder.name}/ has no weights (no .safetensors file)")]
    if not safe and not allow_pickle:
        return [err(f"{folder.name}/ has only pickle weights ({pickled[0].name}); loading pickle "
                    f"can run code, so it is off by default: convert them to safetensors, or set "
                    f"allow_pickle: true if you trust this checkpoint")]
    return []


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A checked checkpoint: its family, which components it has, their configs and folders."""

    root: Path
    parts: dict[str, dict]                 # logical component -> its config (JSON)
    files: dict[str, list] = field(repr=False)   # key -> weight_identity() or content hash
    family: str = ""                       # the name of the family that opened it
    label: str = ""                        # how messages name that family
    dirs: dict[str, Path] = field(default_factory=dict, repr=False)   # component -> folder
    classes: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """component -> (library, class name) that reads it"""
    roots: dict[str, str] = field(default_factory=dict)
    """extra identity: the folders the checkpoint was assembled from, by role"""
    stepped: frozenset = frozenset()
    """the components called once per sampling step: the ones worth compiling"""

    def has(self, part: str) -> bool:
        return part in self.parts

    def config(self, part: str) -> dict:
        return self.parts[part]

    def dir(self, part: str) -> Path:
        return self.dirs.get(part, self.root / part)

    def stamp(self, part: str) -> tuple:
        """Identity of one component's files (a changed file is a new model)."""
        return tuple((k, tuple(v) if isinstance(v, list) else v)
                     for k, v in sorted(self.files.items()) if k.startswith(part + "/"))

    def identity(self, parts) -> dict:
        wanted = tuple(parts) + ("model_index.json",)
        out = {"path": str(self.root)}
        if self.roots:
            out["roots"] = dict(self.roots)
        out["files"] = {k: v for k, v in sorted(self.files.items())
                        if k == "model_index.json" or k.split("/")[0] in wanted}
        return out


# --- reading one component ------------------------------------------------------------------------

OWN_CLASSES: dict[str, "Callable[[], type]"] = {}
"""Model classes of our own (library "unclip") that a family registers, each as a function
that imports it (diffusers is slow to import): components diffusers does not ship a class
for."""


def model_class(library: str, name: str) -> type:
    """The diffusers (or our own) class that reads a component."""
    if library == "unclip":
        return OWN_CLASSES[name]()
    import diffusers
    return getattr(diffusers, name)


# --- opening once per run -------------------------------------------------------------------------

_OPENED: dict[tuple, tuple[tuple, Checkpoint]] = {}
_OPENED_MAX = 64


def tree_stamp(folders) -> tuple | None:
    """Sizes, times and inodes of every file under ``folders`` (configs and weights): what
    changes when any of them is written, replaced or removed.  None when a file was written
    so recently that a rewrite within the clock's step could keep its times (then the folder
    is opened afresh, which hashes such files: ``weight_identity``)."""
    out = []
    now = time.time_ns()
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                p = os.path.join(dirpath, name)
                try:
                    st = os.stat(p)
                except OSError:
                    continue
                coarse = st.st_mtime_ns % 1_000_000_000 == 0
                window = RECENT_SECONDS[0] if coarse else RECENT_SECONDS[1]
                if abs(now - st.st_mtime_ns) < window * 1e9:
                    return None
                out.append((p, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    return tuple(out)


def open_once(key: tuple, folders, opener) -> Checkpoint:
    """``opener()``, memoised by ``key`` for as long as the files under ``folders`` stay as
    they were: a loader's fingerprint, validation and load read a checkpoint once per run (and a
    sweep once in all), and a changed file is noticed."""
    stamp = tree_stamp(folders)
    with LOCK:
        hit = _OPENED.get(key)
        if stamp is not None and hit is not None and hit[0] == stamp:
            return hit[1]
    ck = opener()
    if stamp is not None:
        with LOCK:
            _OPENED.pop(key, None)
            _OPENED[key] = (stamp, ck)
            while len(_OPENED) > _OPENED_MAX:
                _OPENED.pop(next(iter(_OPENED)))
    return ck

def weight_variant(folder: Path, dtype: torch.dtype) -> str | None:
    """"fp16" when the folder has half-precision weight files (``*.fp16.safetensors``, as the
    hub's ``variant="fp16"``) and they should be read: half precision was asked for, or they
    are the only weights there.  They are cast to ``dtype`` on loading either way."""
    half = list(folder.glob("*.fp16.safetensors")) + list(folder.glob("*.fp16.bin"))
    if not half:
        return None
    full = [f for f in folder.iterdir() if f.suffix in (".safetensors", ".bin")
            and f.name.count(".") == 1]
    return "fp16" if dtype in (torch.float16, torch.bfloat16) or not full else None


def read_component(folder: Path, library: str, name: str, device: torch.device,
                   dtype: torch.dtype, allow_pickle: bool):
    """Instantiate ``library.name`` from ``folder`` (local files only, safetensors only unless
    ``allow_pickle``) and put it on ``device`` in eval mode."""
    common = {"local_files_only": True}
    variant = weight_variant(folder, dtype)
    if variant:
        common["variant"] = variant
    safe = None if allow_pickle else True
    if library == "transformers":
        import transformers
        from transformers.utils import logging as hf_logging
        cls = getattr(transformers, name)
        if name.endswith("Tokenizer") or name.endswith("TokenizerFast"):
            return cls.from_pretrained(str(folder), **common)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a bar per component would drown the run's own
        try:
            model = cls.from_pretrained(str(folder), use_safetensors=safe, dtype=dtype,
                                        attn_implementation="sdpa", **common)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
    else:
        cls = model_class(library, name)
        from diffusers.utils import is_accelerate_available
        model = cls.from_pretrained(str(folder), use_safetensors=safe, dtype=dtype,
                                    low_cpu_mem_usage=is_accelerate_available(), **common)
    return model.to(device).eval().requires_grad_(False)


BUILD_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError,
                AssertionError, RuntimeError)
"""What diffusers' and transformers' constructors raise for a config value of the wrong type or
size (a text where a number belongs, a number where a list does)."""


def config_file(folder: Path) -> Path:
    """The config a component is built from (the folder itself when it has none)."""
    for name in ("config.json", "scheduler_config.json", "tokenizer_config.json",
                 "preprocessor_config.json"):
        if (folder / name).is_file():
            return folder / name
    return folder


def config_error(folder: Path, name: str, e: BaseException) -> UserError:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text if len(text) <= 300 else text[:296] + " ..."
    return UserError(f"{config_file(folder)}: the config does not build a {name} "
                     f"({type(e).__name__}{': ' + text if text else ''})")


def _config_problem(folder: Path, library: str, name: str) -> BaseException | None:
    """The error that building ``library.name`` from ``folder``'s config alone raises (on the
    meta device: no memory, no weights), or None when it builds: then the weights are what
    failed."""
    try:
        with torch.device("meta"):
            if library == "transformers":
                import transformers
                cls = getattr(transformers, name)
                if name.endswith("Tokenizer") or name.endswith("TokenizerFast"):
                    return None
                cls(cls.config_class.from_pretrained(str(folder), local_files_only=True))
            else:
                cls = model_class(library, name)
                cls.from_config(cls.load_config(str(folder), local_files_only=True))
    except Exception as e:  # noqa: BLE001 -- whatever it is, the config causes it
        return e
    return None


def instantiate(ck: Checkpoint, part: str, device: str | torch.device = "meta",
                dtype: torch.dtype = torch.float32):
    """A component built from its config alone, with random (or, on the meta device, no)
    weights: the same classes and configs ``load_part`` reads, for measuring real sizes without
    the real files.  A config that does not build its class is a UserError naming the file."""
    try:
        return _instantiate(ck, part, device, dtype)
    except BUILD_ERRORS as e:
        raise config_error(ck.dir(part), ck.classes[part][1], e) from e


def _instantiate(ck: Checkpoint, part: str, device: str | torch.device, dtype: torch.dtype):
    library, name = ck.classes[part]
    cfg = {k: v for k, v in ck.config(part).items()}
    with torch.device(device):
        if library == "transformers":
            import transformers
            cls = getattr(transformers, name)
            config_cls = cls.config_class
            model = cls(config_cls(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
        else:
            model = model_class(library, name).from_config(cfg)
    if dtype != torch.float32:
        model = model.to(dtype)
    return model.eval().requires_grad_(False)


# --- the process-wide model cache -------------------------------------------------------------

LOCK = threading.RLock()
LOADED: list[tuple[str, str]] = []
"""(folder, component) each time a component is read from disk, in order (tests and benches
look)."""


_MEMOS: list[dict] = []


def memo() -> dict:
    """A dict for results memoised per checkpoint (an empty prompt's encoding), emptied with
    the model cache: it may hold tensors on the GPU."""
    d: dict = {}
    _MEMOS.append(d)
    return d


def clear_model_cache() -> None:
    from .manager import MANAGER
    MANAGER.clear()
    for d in _MEMOS:
        d.clear()
    _OPENED.clear()


_ELEMENT = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
            "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def estimate_bytes(folder: Path, dtype: torch.dtype) -> int:
    """The bytes a component's weights take once loaded in ``dtype``, from the safetensors
    headers alone (floating tensors take ``dtype``'s size, the others their own); the files'
    size when they cannot be read that way."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if f.name.count(".") == 1]  # model.safetensors, not *.fp16.*
    if weight_variant(folder, dtype) == "fp16":
        plain = [f for f in files if ".fp16." in f.name]
    size = torch.tensor([], dtype=dtype).element_size()
    total = 0
    for f in plain or files:
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n)) if 0 < n < (100 << 20) else {}
        except (OSError, ValueError, RecursionError):  # loading it will say what is wrong
            header = {}
        try:
            total += _header_bytes(header, size) if header else f.stat().st_size
        except (AttributeError, TypeError, ValueError):  # a damaged header: loading says so
            total += f.stat().st_size
    return total


def _header_bytes(header: dict, size: int) -> int:
    total = 0
    for name, t in header.items():
        if name == "__metadata__" or not isinstance(t, dict):
            continue
        numel = 1
        for d in t.get("shape", []):
            numel *= int(d)
        kind = t.get("dtype", "F32")
        total += numel * (size if kind.startswith(("F", "BF")) else _ELEMENT.get(kind, 4))
    return total


def part_key(ck: Checkpoint, part: str, device: torch.device, dtype: torch.dtype) -> tuple:
    """The model manager's key of one component on a device in a dtype: its folder first."""
    return (str(ck.dir(part)), part, str(device), str(dtype), ck.stamp(part))


def load_part(ck: Checkpoint, part: str, device: torch.device, dtype: torch.dtype,
              allow_pickle: bool = False):
    """One component through the model manager: read from disk on first use (per device and
    dtype), kept while the budgets allow, read again if it had to make room."""
    from .manager import MANAGER
    folder = ck.dir(part)
    key = part_key(ck, part, device, dtype)

    def load():
        library, name = ck.classes[part]
        try:
            obj = read_component(folder, library, name, device, dtype, allow_pickle)
        except UserError:
            raise
        except Exception as e:  # a corrupt or truncated file is the user's to fix
            wrong = _config_problem(folder, library, name) if isinstance(e, BUILD_ERRORS) \
                else None
            if wrong is not None:  # the config itself does not build the model
                raise config_error(folder, name, wrong) from e
            raise UserError(f"cannot load {folder.name}/ of {folder.parent}: "
                            f"{type(e).__name__}: {e}") from e
        LOADED.append((str(folder.parent), part))
        return obj

    obj = MANAGER.get(key, key[:4], device, load, estimate_bytes(folder, dtype),
                      name=f"{folder.parent.name}/{folder.name}")
    from ..runtime import OPTIONS
    if OPTIONS.compile and part in ck.stepped and isinstance(obj, torch.nn.Module):
        return MANAGER.compiled(key, obj, OPTIONS.compile_backend)
    return obj


def text_config(cfg: dict) -> dict:
    return cfg.get("text_config", cfg) if cfg.get("model_type") == "clip" else cfg


def vision_config(cfg: dict) -> dict:
    return cfg.get("vision_config", cfg) if cfg.get("model_type") == "clip" else cfg
