"""Values that depend only on a checkpoint's files: an empty prompt's encoding (what Karlo's
decoder reads for image variations), a zero image's embedding (what Kandinsky 2.2 guides
against).  Computed once, then kept in this process and in the run's store (the executor's
disk cache), keyed by the identity of the files they came from, so that a later run that finds
one never loads the encoder that made it."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

from .. import runtime
from .checkpoint import LOCK, memo

_KEPT: dict[str, Any] = memo()


def constant(name: str, identity: dict, stype, compute: Callable[[], Any]) -> Any:
    """The value ``compute()`` gives for ``identity`` (the checkpoint folders and files it
    reads, the device and dtype it runs on), from memory, else from the host's store, else
    computed and stored.  ``stype``: the socket type whose codec stores it."""
    key = "constant-" + hashlib.sha256(json.dumps({"constant": name, **identity}, sort_keys=True,
                                                  default=str).encode()).hexdigest()
    with LOCK:
        if key in _KEPT:
            return _KEPT[key]
    store = runtime.host().store
    value = store.get(key, stype) if store is not None else None
    if value is None:
        value = compute()
        if store is not None:
            store.put(key, stype, value)
    with LOCK:
        return _KEPT.setdefault(key, value)


def files_of(ck, parts) -> dict:
    """The identity of ``parts`` of checkpoint ``ck``: their folders and their files' identity."""
    return {"dirs": {p: str(ck.dir(p)) for p in parts}, "files": {p: ck.stamp(p) for p in parts}}

