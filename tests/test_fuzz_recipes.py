"""Property-based fuzzing of recipe parsing and ``key=value`` overrides (hypothesis, derandomized).

Properties: whatever document, file or override list it is given, ``load_recipe`` returns a ``Recipe`` or raises
a one-line ``KdlabError``, never any other exception; a recipe it returns dumps to YAML that loads back to the
same recipe (``config.yaml`` repeats a run); and ``kdlab train`` with a recipe that fails validation exits with
status 2, prints one ``kdlab: error:`` line and creates no ``--out`` folder.

Documents are drawn as edits of a valid recipe at key paths made of the real section, field and method-parameter
names plus junk, so the fuzzer reaches every section's fields and every registered method's parameters.
"""

from __future__ import annotations

import copy
import math
import tempfile
import types
import typing
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from _cli import kdlab_main
from kdlab import methods, models
from kdlab.config import Recipe, apply_overrides, dump_recipe, load_recipe, parse_override
from kdlab.data import SOURCES
from kdlab.errors import KdlabError

VALID = {
    "data": {"source": "digits"},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 1},
    "runtime": {"progress": False},
}
FUZZ = settings(max_examples=1000, derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models inside a field annotation (``LogMelConfig | None`` -> [LogMelConfig])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]
    return []


def _paths(model: type[BaseModel], prefix: tuple = ()) -> list[tuple[str, ...]]:
    found = []
    for name, field in model.model_fields.items():
        found.append((*prefix, name))
        for sub in _models_in(field.annotation):
            found += _paths(sub, (*prefix, name))
    return found


def _choices(model: type[BaseModel]) -> set:
    """Every Literal value of every field (``cosine``, ``skip``, ``slaney``, ...), to be drawn as values."""
    values = set()
    for field in model.model_fields.values():
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            if typing.get_origin(arg) is typing.Literal:
                values |= {v for v in typing.get_args(arg) if isinstance(v, str)}
        for sub in _models_in(field.annotation):
            values |= _choices(sub)
    return values


METHODS = methods.names()
PARAMS = {name: sorted(methods.get(name).Params.model_fields) for name in METHODS}
PATHS = _paths(Recipe) + [("method", p) for params in PARAMS.values() for p in params]
NAMES = sorted({part for path in PATHS for part in path})
JUNK = ["", " ", "x", "0", "-1", "1.5", "null", "~", "true", "__class__", "__init__", "model_config", "a.b", ".",
        "ключ", "名前", "\t", "\x00", "=", "${HOME}", "~root"]
WORDS = sorted(_choices(Recipe) | set(METHODS) | set(models.names()) | set(SOURCES) | {"wrn_16_2", "wrn_13_1"})
TRICKY = ["", " ", "~", "null", "yes", "off", "on", "0x1f", "0o17", "1e400", "-.inf", ".nan", "1_000", "12:30:00",
          "2001-12-14", "[", "]", "{", "}", "{a: 1}", "[1, 2]", "&a [*a]", "&a {x: *a}", "*undefined", "!!binary aGk=",
          "!!set {a, b}", "!!python/object/apply:os.system [true]", "!!float nan", "!!int 12", "!!int ~", "!!float", "!!timestamp x", "!!bool 2", "!!str", "!!null x", "!!map [1]", "? complex",
          "- item", "a: b: c", "'quoted'", '"dq\\u0000"', "|\n  block", "%YAML 1.1", "---", "...", "#comment", "\\",
          "9" * 5000, "[" * 400 + "]" * 400]

keys = st.one_of(st.sampled_from(NAMES), st.sampled_from(JUNK), st.text(max_size=6))
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(-3, 3), st.sampled_from([0, 1, 2**31, 2**32, 2**63, -(2**63), 10**30]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e-320, 1e308, 0.1, 0.5, 0.999, 1.0]),
    st.sampled_from(WORDS), st.sampled_from(TRICKY), st.text(max_size=10),
)
#: values at and beyond the bounds of the fields (drawn often, so each field meets each of them)
boundary = st.sampled_from([math.nan, math.inf, -math.inf, 0, -1, 1, 0.5, 1.0, 1.5, 2**32, 2**63, 10**30, "", "x",
                            None, True, False, [], {}, [0.5], [math.nan], "9" * 5000])
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=10)
paths = st.one_of(
    st.sampled_from(PATHS),
    st.tuples(st.sampled_from(PATHS), st.lists(keys, min_size=1, max_size=2)).map(lambda pk: (*pk[0], *pk[1])),
    st.lists(keys, min_size=1, max_size=3).map(tuple),
)


def set_path(doc: dict, path: tuple, value) -> None:
    node = doc
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


def delete_path(doc: dict, path: tuple) -> None:
    node = doc
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


@st.composite
def documents(draw) -> dict:
    """A valid recipe, possibly with a registered method, then a few random edits and deletions."""
    doc = copy.deepcopy(VALID)
    if draw(st.booleans()):
        doc["method"] = {"name": draw(st.sampled_from(METHODS))}
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            delete_path(doc, draw(paths))
        elif kind <= 2:  # a real field at a boundary value
            set_path(doc, draw(st.sampled_from(PATHS)), draw(boundary))
        else:
            set_path(doc, draw(paths), draw(values))
    return doc


def value_text(value) -> str:
    """How a user would type ``value`` after ``=``: YAML flow style (``.nan``, ``[1, 2]``, ``{a: b}``)."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


dotted = st.one_of(st.sampled_from([".".join(p) for p in PATHS]),
                   st.lists(keys, min_size=1, max_size=4).map(".".join), st.text(max_size=12))
override_values = st.one_of(values.map(value_text), boundary.map(value_text), st.sampled_from(TRICKY),
                            st.sampled_from(WORDS), st.text(max_size=12))
overrides = st.one_of(
    st.tuples(dotted, override_values).map("=".join),                      # key=value
    st.tuples(st.sampled_from([".".join(p) for p in PATHS]), boundary.map(value_text)).map("=".join),
    st.tuples(dotted, override_values, override_values).map("=".join),     # key=value=more
    override_values.map(lambda v: "=" + v),                                # =value
    dotted,                                                                # no '=' at all
    st.text(max_size=20),                                                  # anything
)


@st.composite
def method_overrides(draw) -> list[str]:
    """``method.name=<registered>`` and overrides of that method's parameters, plus a few random ones."""
    name = draw(st.sampled_from(METHODS))
    chosen = [f"method.name={name}"]
    params = PARAMS[name] or ["eps"]
    for _ in range(draw(st.integers(0, 3))):
        chosen.append(f"method.{draw(st.sampled_from(params))}={draw(override_values)}")
    chosen += draw(st.lists(overrides, max_size=2))
    return draw(st.permutations(chosen))


def check_load(*, path=None, overrides=(), raw=None) -> Recipe | None:
    """``load_recipe``: a Recipe that round-trips through YAML, or a one-line KdlabError; nothing else."""
    try:
        recipe = load_recipe(path, list(overrides), raw=raw)
    except KdlabError as error:
        message = str(error)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        return None
    again = load_recipe(raw=yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe
    return recipe


@FUZZ
@given(documents())
def test_any_document_gives_a_recipe_or_a_one_line_error(doc):
    check_load(raw=doc)


@settings(FUZZ, max_examples=300)
@given(documents())
def test_any_document_read_from_a_file_gives_a_recipe_or_a_one_line_error(doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        text = repr(doc)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        check_load(path=path)


@settings(FUZZ, max_examples=500)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.lists(st.sampled_from(TRICKY + [": ", "\n", "  ", "- ", "data:", "model:", "train:", "epochs: 1"]),
                          max_size=12).map(lambda parts: "".join(parts).encode())))
def test_any_bytes_as_a_recipe_file_give_a_recipe_or_a_one_line_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipe.yaml"
        path.write_bytes(content)
        check_load(path=path)


@FUZZ
@given(st.lists(overrides, max_size=5))
def test_random_overrides_of_a_valid_recipe(texts):
    check_load(raw=copy.deepcopy(VALID), overrides=texts)


@FUZZ
@given(method_overrides())
def test_method_parameter_overrides_of_every_registered_method(texts):
    check_load(raw=copy.deepcopy(VALID), overrides=texts)


@FUZZ
@given(overrides)
def test_parse_override_gives_keys_and_a_value_or_a_one_line_error(text):
    try:
        keys, _ = parse_override(text)
    except KdlabError as error:
        assert "\n" not in str(error)
        return
    assert keys and all(isinstance(k, str) for k in keys)
    try:
        apply_overrides({"train": 3}, [text])
    except KdlabError as error:
        assert "\n" not in str(error)


def failing(doc: dict, texts: list[str]) -> bool:
    try:
        load_recipe(raw=copy.deepcopy(doc), overrides=texts)
    except KdlabError:
        return True
    return False


def write_document(folder: Path, doc: dict) -> Path:
    """``doc`` as ``folder/recipe.yaml`` (its repr where YAML cannot hold it: the file is then simply invalid)."""
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        text = repr(doc)
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@settings(FUZZ, max_examples=60)
@given(documents(), st.lists(overrides.filter(lambda t: not t.startswith("-")), max_size=3))
def test_train_with_a_bad_recipe_exits_2_with_one_line_and_writes_nothing(doc, texts):
    # only recipes that fail validation: a valid one would start training
    if not failing(doc, texts):
        texts = [*texts, "train.epochs=0"]
    with tempfile.TemporaryDirectory() as folder:
        path = write_document(Path(folder), doc)
        out = Path(folder) / "out"
        result = kdlab_main("train", path, *texts, "--out", out)
        lines = result.stderr.splitlines()
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("kdlab: error: "), result.stderr
        assert not out.exists()
        assert sorted(p.name for p in Path(folder).iterdir()) == ["recipe.yaml"]


#: what keeps a fuzzed recipe that validates quick to train: one short epoch, no compile, few images
QUICK = ["train.epochs=1", "data.train_size=120", "data.val_size=0.2", "runtime.compile=false", "train.batch_size=32",
         "data.cache_dir=null", "logging.tensorboard=false", "robustness=null"]


@settings(FUZZ, max_examples=60)
@given(st.one_of(st.tuples(documents(), st.lists(overrides.filter(lambda t: not t.startswith("-")), max_size=2)),
                 method_overrides().map(lambda texts: (copy.deepcopy(VALID), [t for t in texts if not t.startswith("-")]))))
def test_train_with_any_recipe_exits_0_1_or_2_with_at_most_one_line_never_a_traceback(case):
    """Valid or not, a fuzzed recipe given to ``kdlab train`` ends with status 0 (trained), 2 (a user error: one
    line) or 1 (diverged: one line), never a traceback; a refused one leaves no run folder."""
    doc, texts = case
    with tempfile.TemporaryDirectory() as folder:
        path = write_document(Path(folder), doc)
        out = Path(folder) / "out"
        result = kdlab_main("train", path, *texts, *QUICK, "--out", out, "--quiet")
        errors = [line for line in result.stderr.splitlines() if line.startswith("kdlab:") or "Traceback" in line]
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1, 2), (result.returncode, result.stderr)
        if result.returncode == 0:
            assert errors == [] and (out / "summary.json").is_file()
        else:
            assert len(errors) == 1 and errors[0].startswith("kdlab: error: "), result.stderr
        if result.returncode == 2:
            assert not out.exists()
