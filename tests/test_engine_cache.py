"""Cache keys and tiers: sensitivity, byte budget, verified disk entries, immutability."""
import warnings

import enginenodes  # noqa: F401  -- registers the Test* node types
import networkx as nx
import pytest
import torch

from unclip_nodes.graph import Cache, CacheWarning, MemoryTier, load, run_workflow
from unclip_nodes.graph.cache import MISS, DiskTier, compute_keys, output_key
from unclip_nodes.graph.cli import main
from unclip_nodes.nodes import declare
from unclip_nodes.nodes.types import IMAGE, TEXT_EMBEDS, TextEmbeds

WF = """
outputs: {image: scale.image, value: range.value, text: read.text}
nodes:
  noise: {type: TestNoise, params: {seed: 1, size: 4, channels: rgb}}
  scale: {type: TestScale, links: {image: noise.image}, params: {factor: 2.0}}
  range: {type: TestRange, params: {low: 0, high: 1, flag: false}}
  read: {type: TestReadFile, params: {path: PATH}}
"""
OTHER_VALUE = {"seed": 2, "size": 5, "channels": "gray", "factor": 2.5, "low": -1, "high": 2,
               "flag": True}


def keys_of(path):
    rs = load(path)
    return compute_keys(rs.nodes, nx.topological_sort(rs.graph)), rs.graph


@pytest.fixture
def wf_path(write_workflow, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("hello")
    return write_workflow(WF.replace("PATH", str(data)))


def test_keys_change_with_every_parameter_for_that_node_and_its_descendants_only(wf_path):
    base, graph = keys_of(wf_path)
    text = wf_path.read_text()
    checked = 0
    for nid, rn in load(wf_path).nodes.items():
        for name, value in rn.params.items():
            if name == "path":
                continue
            old = f"{name}: {str(value).lower() if isinstance(value, bool) else value}"
            assert old in text, old
            wf_path.write_text(text.replace(old, f"{name}: {str(OTHER_VALUE[name]).lower()}"))
            keys, _ = keys_of(wf_path)
            moved = {n for n in keys if keys[n] != base[n]}
            assert moved == {nid} | nx.descendants(graph, nid), (nid, name)
            checked += 1
    assert checked == 7
    wf_path.write_text(text)
    assert keys_of(wf_path)[0] == base  # and back: keys are a pure function of the workflow


def test_keys_change_with_node_version_and_fingerprint(wf_path, tmp_path, monkeypatch):
    base, _ = keys_of(wf_path)
    (tmp_path / "data.txt").write_text("hello, longer")  # size (and mtime) change
    assert keys_of(wf_path)[0]["read"] != base["read"]
    spec = declare.get("TestScale")
    fields = {f: getattr(spec, f) for f in spec.__dataclass_fields__ if f != "_by_name"}
    monkeypatch.setitem(declare.REGISTRY, "TestScale", type(spec)(**fields | {"version": "2"}))
    keys, _ = keys_of(wf_path)
    assert keys["scale"] != base["scale"] and keys["noise"] == base["noise"]


def test_memory_tier_is_bounded_in_bytes_and_evicts_least_recently_used():
    mem = MemoryTier(budget_bytes=1000)
    a, b, c = (torch.zeros(100) for _ in range(3))  # 400 bytes each
    mem.put("a", a)
    mem.put("b", b)
    assert mem.get("a") is a  # a is now more recent than b
    mem.put("c", c)
    assert mem.get("b") is MISS and mem.get("a") is a and mem.get("c") is c
    assert mem.bytes == 800
    mem.put("big", torch.zeros(1000))  # larger than the budget: not kept, nothing evicted
    assert mem.get("big") is MISS and len(mem) == 2


def test_memory_tier_never_serves_a_value_changed_in_place():
    mem = MemoryTier()
    t = torch.ones(3)
    mem.put("k", t)
    t.add_(1)
    with pytest.warns(CacheWarning, match="changed in place"):
        assert mem.get("k") is MISS
    assert len(mem) == 0 and mem.bytes == 0


def test_disk_entry_is_named_by_its_checksum_and_round_trips(tmp_path):
    disk = DiskTier(tmp_path)
    value = torch.rand(1, 3, 3, 3)
    path = disk.put("ab" * 32, IMAGE, value)
    import hashlib
    assert path.name == f"{'ab' * 32}.{hashlib.sha256(path.read_bytes()).hexdigest()}.safetensors"
    assert torch.equal(disk.get("ab" * 32, IMAGE), value)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    assert disk.info() == (1, path.stat().st_size)


def test_records_whose_tensors_share_storage_are_stored(tmp_path):
    base = torch.rand(2, 8)
    emb = TextEmbeds(base[:, 0], base.view(2, 2, 4), torch.ones(2, 2, dtype=torch.bool), ("a", "b"))
    disk = DiskTier(tmp_path)
    disk.put("cd" * 32, TEXT_EMBEDS, emb)
    back = disk.get("cd" * 32, TEXT_EMBEDS)
    assert back.prompts == ("a", "b") and torch.equal(back.hidden_states, emb.hidden_states)
    assert torch.equal(back.text_embeds, emb.text_embeds)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_disk_entry_is_reported_and_recomputed(wf_path, tmp_path, damage):
    first = run_workflow(wf_path, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert first.status()["scale"] == "ran"
    assert len(list((tmp_path / "c" / "objects").glob("*/*.safetensors"))) == 4
    key = output_key(next(r.key for r in first.report if r.node == "scale"), "image")
    (entry,) = (tmp_path / "c" / "objects").glob(f"*/{key}.*.safetensors")
    data = entry.read_bytes()
    entry.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]) if damage == "flip"
                      else data[: len(data) // 2])
    with pytest.warns(CacheWarning, match="damaged"):
        again = run_workflow(wf_path, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert again.status() == {"noise": "disk hit", "scale": "ran", "range": "disk hit",
                              "read": "disk hit"}
    assert torch.equal(again.outputs["image"], first.outputs["image"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the entry was rewritten: a third run warns about nothing
        third = run_workflow(wf_path, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    assert set(third.status().values()) == {"disk hit", "not needed"}


def test_model_handles_stay_in_memory_only(write_workflow, tmp_path):
    wf = write_workflow("""
    outputs: {image: apply.image}
    nodes:
      model: {type: TestLoader}
      noise: {type: TestNoise}
      apply: {type: TestApply, links: {model: model.model, image: noise.image}}
    """)
    cache = Cache(tmp_path / "c", memory=MemoryTier())
    run_workflow(wf, cache=cache)
    assert cache.disk.info()[0] == 2 and len(cache.memory) == 3  # TEST_MODEL has no codec


def test_no_cache_reads_and_writes_nothing(wf_path):
    off = Cache.off()
    run_workflow(wf_path, cache=off)
    assert set(run_workflow(wf_path, cache=off).status().values()) == {"ran"}


def test_cache_info_and_clear_commands(wf_path, tmp_path, capsys):
    run_workflow(wf_path, cache=Cache(tmp_path / "c", memory=MemoryTier()))
    (tmp_path / "c" / "keep.txt").write_text("not ours")
    assert main(["cache", "info", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"path: {tmp_path / 'c'}" in out and "entries: 4" in out
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "c")]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert DiskTier(tmp_path / "c").info() == (0, 0)
    assert (tmp_path / "c" / "keep.txt").exists()


def test_default_cache_dir_follows_xdg_cache_home(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["cache", "info"]) == 0
    assert f"path: {tmp_path / 'xdg' / 'unclip-nodes'}" in capsys.readouterr().out
