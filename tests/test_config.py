"""Recipe validation: every mistake names its key; resolution fills every default."""

import pytest
import yaml

from kdlab.config import dump_recipe, load_recipe
from kdlab.errors import KdlabError

BASE = {"data": {"source": "digits"}, "model": {"name": "cnn_small8"}, "train": {"epochs": 2}}


def load(raw, overrides=()):
    return load_recipe(raw=yaml.safe_load(yaml.safe_dump(raw)), overrides=list(overrides))


def test_defaults_are_filled_including_method_params():
    recipe = load({**BASE, "method": {"name": "ls"}})
    assert recipe.method.model_extra == {"eps": 0.1, "split": "uniform"}
    assert recipe.optim.lr == 0.1 and recipe.schedule.name == "multistep"
    again = load_recipe(raw=yaml.safe_load(dump_recipe(recipe)))
    assert again == recipe


@pytest.mark.parametrize(
    "raw, message",
    [
        ({**BASE, "optim": {"lrr": 0.1}}, "unknown key 'optim.lrr'"),
        ({**BASE, "bogus": 1}, "unknown key 'bogus'"),
        ({**BASE, "train": {"epochs": -1}}, "train.epochs"),
        ({**BASE, "train": {"epochs": "many"}}, "train.epochs"),
        ({**BASE, "method": {"name": "ls", "eps": 1.5}}, "method.eps"),
        ({**BASE, "method": {"name": "ls", "eps": -0.1}}, "method.eps"),
        ({**BASE, "method": {"name": "ls", "epsilon": 0.1}}, "unknown key 'method.epsilon'"),
        ({**BASE, "method": {"name": "ls", "split": "sideways"}}, "method.split"),
        ({**BASE, "method": {"name": "nope"}}, "unknown method 'nope'"),
        ({**BASE, "method": {"name": "ce", "eps": 0.1}}, "unknown key 'method.eps'"),
        ({**BASE, "optim": {"lr": 0}}, "optim.lr"),
        ({**BASE, "schedule": {"milestones": [5, 3]}}, "schedule.milestones"),
        ({**BASE, "data": {"source": "digits", "val_size": 2.5}}, "data.val_size"),
        ({"model": {"name": "x"}, "train": {"epochs": 1}}, "missing key 'data'"),
    ],
)
def test_bad_recipes_name_the_key(raw, message):
    with pytest.raises(KdlabError, match=message.replace(".", r"\.").replace("(", r"\(")) as info:
        load(raw)
    assert "\n" not in str(info.value)


def test_overrides_are_typed_and_checked():
    recipe = load(BASE, ["train.epochs=5", "method.name=ls", "method.eps=0.2", "optim.nesterov=true", "seed=3"])
    assert recipe.train.epochs == 5 and recipe.method.model_extra["eps"] == 0.2 and recipe.optim.nesterov is True
    assert recipe.seed == 3
    with pytest.raises(KdlabError, match="unknown key 'train.epoch'"):
        load(BASE, ["train.epoch=5"])
    with pytest.raises(KdlabError, match="key=value"):
        load(BASE, ["train.epochs"])


def test_recipe_file_errors_name_the_file(tmp_path):
    with pytest.raises(KdlabError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(KdlabError, match="bad.yaml: not valid YAML"):
        load_recipe(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(KdlabError, match="mapping"):
        load_recipe(listy)


def test_relative_data_path_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load({**BASE, "data": {"source": "folder", "path": "some/data"}})
    assert recipe.data.path == str(tmp_path / "some" / "data")


def test_teacher_cache_off_survives_yaml_booleans(tmp_path):
    from kdlab.config import apply_overrides

    raw = {"data": {"source": "digits"}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1}}
    assert load_recipe(raw=apply_overrides(raw, ["runtime.teacher_cache=off"])).runtime.teacher_cache == "off"
    path = tmp_path / "r.yaml"
    path.write_text("data: {source: digits}\nmodel: {name: cnn_small8}\ntrain: {epochs: 1}\nruntime: {teacher_cache: off}\n")
    assert load_recipe(path).runtime.teacher_cache == "off"
    with pytest.raises(KdlabError, match="teacher_cache"):
        load_recipe(raw=apply_overrides(raw, ["runtime.teacher_cache=on"]))


def test_fields_added_later_stay_out_of_the_recipe_dict_at_their_neutral_value():
    """Stage keys hash Recipe.to_dict(): a schema field added after runs were recorded must not change them."""
    from kdlab.config import LATER_FIELDS, load_recipe

    raw = {"data": {"source": "digits"}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1}}
    plain = load_recipe(raw=raw).to_dict()
    for path in LATER_FIELDS:
        assert path[-1] not in (plain if len(path) == 1 else plain[path[0]])
    scaled = load_recipe(raw={**raw, "optim": {"bias_lr_scale": 64}}).to_dict()
    assert scaled["optim"]["bias_lr_scale"] == 64
    assert load_recipe(raw=plain).to_dict() == plain
