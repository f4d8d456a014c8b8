"""Random documents and overrides never crash the loader and validator: only UserError comes out."""
import os

import enginenodes  # noqa: F401  -- registers the Test* node types
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unclip_nodes.graph import load
from unclip_nodes.nodes import declare
from unclip_nodes.nodes.errors import UserError

TYPES = sorted(t for t in declare.REGISTRY if t.startswith("Test"))
NAMES = ["a", "b", "seed", "image", "model", "factor", "size", "steps", "x", "path", "low",
         "high", "flag", "text", "channels", "value", "total", "paths"]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
name = st.sampled_from(NAMES) | text
scalar = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | text
          | st.sampled_from(["$seed", "$x", "$$x", "$", "$ 1", "rgb", "gray", "/no/file"])
          | st.builds(lambda a, b: f"{a}.{b}", st.sampled_from(NAMES), st.sampled_from(NAMES)))
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(name, inner, max_size=3), max_leaves=6)
node = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(TYPES) | value,
    "links": st.dictionaries(name, value, max_size=3) | value,
    "params": st.dictionaries(name, value, max_size=4) | value,
    "extra": value})
winput = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["INT", "FLOAT", "STRING", "BOOLEAN", "int"]) | value,
    "default": value, "description": value})
document = st.fixed_dictionaries({}, optional={
    "description": value,
    "inputs": st.dictionaries(name, winput | value, max_size=3) | value,
    "nodes": st.dictionaries(st.sampled_from(NAMES) | text, node | value, max_size=5) | value,
    "outputs": st.dictionaries(name, value, max_size=3) | value,
    "other": value}) | value
overrides = st.dictionaries(name, text | st.sampled_from(["1", "0x1f", "2.5", "true", "no", "nan"]),
                            max_size=3)


def expect_only_user_errors(source, sets):
    try:
        load(source, sets)
    except UserError as e:
        assert str(e)  # prints without failing


FUZZ = settings(max_examples=int(os.environ.get("ENGINE_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(doc=document, sets=overrides,
       cut=st.none() | st.tuples(st.integers(0, 400), st.integers(0, 5), text))
def test_random_yaml_documents_give_only_user_errors(tmp_path, doc, sets, cut):
    src = yaml.safe_dump(doc, allow_unicode=True, default_flow_style=None, sort_keys=False)
    if cut is not None:  # damage the text: a slice removed, something else put in
        at, n, junk = cut
        src = src[:at] + junk + src[at + n:]
    path = tmp_path / "fuzz.yaml"
    path.write_text(src, encoding="utf-8")
    expect_only_user_errors(path, sets)


@FUZZ
@given(doc=document, sets=overrides)
def test_random_python_mappings_give_only_user_errors(doc, sets):
    if isinstance(doc, dict):
        expect_only_user_errors(doc, sets)


@FUZZ
@given(src=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
       | st.sampled_from(["&a [*a]", "a: &a {<<: *a}", "nodes: &n {x: *n}", "- 1", "",
                          "!!python/object:os.system x", "nodes: {a: {type: !!int x}}",
                          "? [1]\n: 2", "a: 1\n---\nb: 2"]),
       sets=overrides)
def test_random_text_gives_only_user_errors(tmp_path, src, sets):
    path = tmp_path / "fuzz.yaml"
    path.write_text(src, encoding="utf-8")
    expect_only_user_errors(path, sets)
